// shutdown_test: destroying a runtime with I/O in flight is clean and
// bounded, the swap file is private (0600) while the runtime runs and gone
// afterwards, a swap directory gets an unnamed O_TMPFILE file, and repeated
// create/destroy leaks no file descriptor, thread or file.
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "tests/faulty_swapdev.h"
#include "tests/test_util.h"
#include "uvm/uvmexp_shm.h"

namespace uvmrt::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// The targets of this process's file descriptors.
std::vector<std::string> OpenFiles() {
  std::vector<std::string> out;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char buf[PATH_MAX];
    const std::string link = std::string("/proc/self/fd/") + e->d_name;
    const ssize_t n = readlink(link.c_str(), buf, sizeof(buf) - 1);
    if (n > 0) out.emplace_back(buf, static_cast<size_t>(n));
  }
  closedir(d);
  return out;
}

// Files in /dev/shm named for this process's runtimes.
std::vector<std::string> ShmFilesOfThisProcess() {
  std::vector<std::string> out;
  const std::string prefix = "uvmrt." + std::to_string(getpid()) + ".";
  DIR* d = opendir("/dev/shm");
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (std::string(e->d_name).rfind(prefix, 0) == 0) out.push_back(e->d_name);
  }
  closedir(d);
  return out;
}

int CountEntries(const char* dir) {
  int n = 0;
  DIR* d = opendir(dir);
  if (d == nullptr) return -1;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') n++;
  }
  closedir(d);
  return n;
}

TEST(Shutdown, DestroyWithWritesInFlightIsBoundedAndRemovesTheSwapFile) {
  TempDir dir("shutdown");
  const std::string path = dir.path() + "/swapfile";
  const size_t budget = size_t{4} << 20;
  Options o = test_options(budget, 4);
  o.swap_path = path;
  FaultySwapDev* dev;
  auto rt = make_faulty_runtime(o, &dev);
  // Slow completions: every write is in flight for 300-600 ms.
  dev->SetWriteLatency(milliseconds(300), milliseconds(600));
  std::shared_ptr<const FaultyCounters> counters = dev->shared_counters();
  ASSERT_TRUE(Exists(path)) << "no swap file at " << path;

  const uint64_t npages = 4 * budget / kPage;
  char* base = static_cast<char*>(*rt->Map(npages * kPage));
  constexpr int kThreads = 3;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> written{0};
  Runtime* prt = rt.get();
  Stats at_destroy{};
  double destroy_seconds = -1;

  RunWithWatchdog(
      std::chrono::seconds(120),
      [&] {
        std::vector<std::thread> ts;
        for (int t = 0; t < kThreads; t++) {
          ts.emplace_back([&, t] {
            for (uint32_t gen = 1; !stop.load(); gen++) {
              for (uint64_t p = static_cast<uint64_t>(t); p < npages && !stop.load();
                   p += kThreads) {
                fill_page(base + p * kPage, p, gen);  // the flag is checked between pages
                written++;
              }
            }
          });
        }
        // Run until pageouts are under way and some are in flight.
        const auto deadline = Clock::now() + std::chrono::seconds(30);
        while (Clock::now() < deadline) {
          const Stats s = prt->GetStats();
          if (s.pdpageouts >= 20 && s.paging > 0) break;
          std::this_thread::sleep_for(milliseconds(5));
        }
        stop = true;
        for (auto& th : ts) th.join();
        // The application no longer touches memory.  Writes are in flight
        // (each takes 300 ms or more); if the last one just completed, cause
        // another.
        for (uint64_t p = 0; p < npages && prt->GetStats().paging == 0; p++) {
          fill_page(base + p * kPage, p, 999);
        }
        at_destroy = prt->GetStats();
        const auto t0 = Clock::now();
        rt.reset();
        destroy_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      },
      [&] { return "device: " + counters->ToString(); });

  SCOPED_TRACE("at destroy: " + StatsString(at_destroy) + "\ndevice: " + counters->ToString());
  printf("destroy took %.3f s with %ld pages in flight; %ld pages written by the application\n",
         destroy_seconds, static_cast<long>(at_destroy.paging), static_cast<long>(written.load()));
  EXPECT_GT(at_destroy.pdpageouts, 0);
  EXPECT_GT(at_destroy.pgswapout, 0);
  EXPECT_GT(at_destroy.paging, 0) << "no write was in flight when destroy started";
  EXPECT_GT(counters->delayed_completions.load(), 0);
  EXPECT_LT(destroy_seconds, 10.0);
  // Destroy waited for every write: none was left in the device.
  EXPECT_EQ(counters->in_flight_at_destruction.load(), 0);
  EXPECT_EQ(counters->completions_delivered.load(), counters->completions_queued.load());
  // The swap file is gone, and nothing else was left in the directory.
  EXPECT_FALSE(Exists(path)) << "the swap file " << path << " was not removed";
  EXPECT_TRUE(dir.entries().empty());
}

TEST(Shutdown, SwapFileIsMode0600WhileRunningAndGoneAfter) {
  TempDir dir("shutdown");
  const std::string path = dir.path() + "/swap";
  const size_t budget = size_t{2} << 20;
  Options o = test_options(budget, 3);
  o.swap_path = path;
  // Not the umask's doing: with umask 0 the file must still be 0600.
  const mode_t old_mask = umask(0);
  auto rt = make_runtime(o);
  umask(old_mask);
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0) << "no swap file at " << path;
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u) << std::oct << (st.st_mode & 07777);
  EXPECT_EQ(st.st_uid, geteuid());
  EXPECT_EQ(static_cast<size_t>(st.st_size), o.swap_bytes);
  // Used for paging, it stays so.
  const uint64_t npages = 3 * budget / kPage;
  char* base = static_cast<char*>(*rt->Map(npages * kPage));
  for (uint64_t p = 0; p < npages; p++) fill_page(base + p * kPage, p, 1);
  for (uint64_t p = 0; p < npages; p++) ASSERT_EQ(check_page(base + p * kPage, p, 1), -1);
  EXPECT_GT(rt->GetStats().pgswapout, 0);
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  rt.reset();
  EXPECT_FALSE(Exists(path));
}

TEST(Shutdown, SwapDirectoryGetsAnUnnamedTmpfile) {
  TempDir dir("shutdown");
  const size_t budget = size_t{2} << 20;
  Options o = test_options(budget, 3);
  o.swap_path = dir.path();
  auto rt = make_runtime(o);
  const uint64_t npages = 3 * budget / kPage;
  char* base = static_cast<char*>(*rt->Map(npages * kPage));
  for (uint64_t p = 0; p < npages; p++) fill_page(base + p * kPage, p, 1);
  for (uint64_t p = 0; p < npages; p++) ASSERT_EQ(check_page(base + p * kPage, p, 1), -1);
  EXPECT_GT(rt->GetStats().pgswapout, 0);
  // No name in the directory while the runtime pages to it ...
  EXPECT_TRUE(dir.entries().empty())
      << "a file appeared in the swap directory: " << dir.entries()[0];
  // ... yet an open, unlinked file in it: an O_TMPFILE shows as
  // "<dir>/#<inode> (deleted)".
  int tmpfiles = 0;
  for (const std::string& f : OpenFiles()) {
    if (f.rfind(dir.path() + "/#", 0) == 0 && f.find("(deleted)") != std::string::npos) {
      tmpfiles++;
    }
  }
  EXPECT_EQ(tmpfiles, 1) << "no unnamed swap file open in " << dir.path();
  rt.reset();
  for (const std::string& f : OpenFiles()) {
    EXPECT_EQ(f.rfind(dir.path(), 0), std::string::npos) << "still open after destroy: " << f;
  }
  EXPECT_TRUE(dir.entries().empty());
}

TEST(Shutdown, RepeatedCreateDestroyLeaksNothing) {
  TempDir dir("shutdown");
  // One runtime first, so that what the process opens once and keeps (a
  // sanitizer's own files, for one) is not counted as a leak.
  { auto warm = make_runtime(test_options(size_t{1} << 20, 3)); }
  const int fds_before = CountEntries("/proc/self/fd");
  const int threads_before = CountEntries("/proc/self/task");
  const int cycles = small_scale() ? 4 : 10;
  for (int i = 0; i < cycles; i++) {
    const size_t budget = size_t{1} << 20;
    Options o = test_options(budget, 3);
    // Alternately a named file and the directory (O_TMPFILE).
    o.swap_path = i % 2 == 0 ? dir.path() + "/swap" : dir.path();
    FaultySwapDev* dev;
    auto rt = make_faulty_runtime(o, &dev);
    dev->SetWriteLatency(milliseconds(1), milliseconds(5));
    const uint64_t npages = 3 * budget / kPage;
    char* base = static_cast<char*>(*rt->Map(npages * kPage));
    for (uint64_t p = 0; p < npages; p++) fill_page(base + p * kPage, p, i + 1);
    for (uint64_t p = 0; p < npages; p += 7) {
      ASSERT_EQ(check_page(base + p * kPage, p, i + 1), -1) << "cycle " << i;
    }
    // Half the cycles leave the region mapped: destroy unmaps it.
    if (i % 4 < 2) {
      ASSERT_TRUE(rt->Unmap(base).ok());
    }
    rt.reset();
    EXPECT_TRUE(dir.entries().empty()) << "cycle " << i;
    // Nor are counters published for uvmstat (/dev/shm/uvmrt.<pid>.<n>)
    // left behind.
    EXPECT_TRUE(ShmFilesOfThisProcess().empty())
        << "cycle " << i << ": left behind: /dev/shm/" << ShmFilesOfThisProcess()[0];
  }
  EXPECT_EQ(CountEntries("/proc/self/fd"), fds_before);
  EXPECT_EQ(CountEntries("/proc/self/task"), threads_before);
}

// The counters file of a process that died without destroying its runtime
// is removed by the next runtime; a live process's file, and a file holding
// the number a runtime would take (another copy of the library in the same
// process), are left alone.
int CountersFilesChild() {
  // A process that has exited: its pid, reaped, is gone.
  const pid_t dead = fork();
  if (dead == 0) _exit(0);
  int status = 0;
  if (dead < 0 || waitpid(dead, &status, 0) != dead) return 1;
  // The number the next runtime of this process would take.
  int next = -1;
  {
    auto first = Runtime::Create(test_options(size_t{1} << 20, 3));
    if (!first.ok()) return 1;
    const std::string p = (*first)->StatsPath();
    next = atoi(p.substr(p.rfind('.') + 1).c_str()) + 1;
  }
  const std::string stale = absl::StrFormat("/dev/shm/uvmrt.%d.0", dead);
  const std::string taken = absl::StrFormat("/dev/shm/uvmrt.%d.%d", getpid(), next);
  const std::string live = absl::StrFormat("/dev/shm/uvmrt.%d.7", getppid());
  for (const std::string& f : {stale, taken, live}) {
    const int fd = open(f.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0) {
      fprintf(stderr, "cannot create %s: %s\n", f.c_str(), strerror(errno));
      return 1;
    }
    if (write(fd, "x", 1) != 1) return 1;
    close(fd);
  }
  auto cleanup = [&] {
    unlink(taken.c_str());
    unlink(live.c_str());
    unlink(stale.c_str());
  };
  auto rt = Runtime::Create(test_options(size_t{1} << 20, 3));
  if (!rt.ok()) {
    cleanup();
    return 1;
  }
  struct stat st;
  int rc = 0;
  if (stat(stale.c_str(), &st) == 0) {
    fprintf(stderr, "%s of exited process %d was not removed\n", stale.c_str(), dead);
    rc = 2;
  }
  if (stat(live.c_str(), &st) != 0) {
    fprintf(stderr, "%s of the live parent was removed\n", live.c_str());
    rc = 3;
  }
  if (stat(taken.c_str(), &st) != 0 || st.st_size != 1) {
    fprintf(stderr, "%s, which the runtime did not create, was clobbered\n", taken.c_str());
    rc = 4;
  }
  const std::string path = (*rt)->StatsPath();
  if (path == taken || stat(path.c_str(), &st) != 0 ||
      st.st_size != static_cast<off_t>(sizeof(uvm::uvmexp_shm))) {
    fprintf(stderr, "the runtime publishes at '%s'\n", path.c_str());
    rc = 5;
  }
  rt->reset();
  if (stat(path.c_str(), &st) == 0) rc = 6;
  cleanup();
  return rc;
}

TEST(Shutdown, CountersFilesOfDeadProcessesAreSweptAndNumbersNotReused) {
  ChildResult r = RunInChild(CountersFilesChild, std::chrono::seconds(30));
  EXPECT_TRUE(r.exited(0)) << r.Describe();
}

// Threads blocked inside faults when destroy starts.  The application is to
// stop touching memory first, but a thread already inside a fault cannot see
// a flag: it is blocked in the kernel.  What should happen: the faults in
// progress complete (destroy waits for them), each thread sees the stop
// flag and leaves, and destroy returns.  With more blocked threads than
// fault threads, some of the faults are still queued, unread, when destroy
// starts.  Child exit codes tell what happened.
enum BlockedCode {
  kBlockedOk = 0,
  kBlockedSetup = 1,
  kBlockedNotBlocked = 20,  // the threads were not inside faults when destroy began
  kBlockedSignal = 21,      // a thread took SIGSEGV/SIGBUS
  kBlockedWrongData = 22,   // a thread read wrong data
  kBlockedSlowDestroy = 23,
};

int BlockedInFaultChild(int nthreads) {
  InstallSigbusHandler(kBlockedSignal + 10);
  const size_t budget = size_t{2} << 20;
  FaultySwapDev* dev = nullptr;
  Options o = test_options(budget, 4);
  o.fault_threads = 2;
  auto created = create_faulty_runtime(o, &dev);
  if (!created.ok()) return kBlockedSetup;
  std::unique_ptr<Runtime> rt = std::move(*created);
  const uint64_t npages = 3 * budget / kPage;
  char* base = static_cast<char*>(*rt->Map(npages * kPage));
  for (uint64_t p = 0; p < npages; p++) fill_page(base + p * kPage, p, 1);
  for (uint64_t p = npages / 3; p < npages; p++) {
    if (check_page(base + p * kPage, p, 1) != -1) return kBlockedSetup;
  }
  // The first third is now only in swap; each swap-in takes 1.5 s.
  dev->SetReadLatency(milliseconds(1500), milliseconds(1500));
  const int64_t reads_before = dev->counters().reads.load();
  std::atomic<bool> stop{false};
  struct PerThread {
    std::atomic<int64_t> pages_done{0};
    int sig = 0;
    int wrong = -1;
    bool took_signal = false;
  };
  std::vector<PerThread> pt(static_cast<size_t>(nthreads));
  std::vector<std::thread> ts;
  const uint64_t stride = npages / 3 / static_cast<uint64_t>(nthreads);
  // Each thread starts once the one before it is inside its swap-in (a
  // read has begun), so that with two fault threads busy the third fault is
  // left queued, unread.
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  for (int i = 0; i < nthreads; i++) {
    ts.emplace_back([&, i] {
      PerThread& me = pt[static_cast<size_t>(i)];
      me.took_signal = CatchSigbus(
          [&] {
            for (uint64_t p = static_cast<uint64_t>(i) * stride;
                 p < static_cast<uint64_t>(i + 1) * stride && !stop.load(); p++) {
              if (check_page(base + p * kPage, p, 1) != -1) me.wrong = static_cast<int>(p);
              me.pages_done++;
            }
          },
          nullptr, &me.sig);
    });
    const int64_t want = reads_before + std::min(i + 1, o.fault_threads);
    while (dev->counters().reads.load() < want && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(1));
    }
  }
  std::this_thread::sleep_for(milliseconds(200));
  bool blocked = true;
  for (auto& p : pt) blocked = blocked && p.pages_done.load() == 0;
  stop = true;
  const auto t0 = Clock::now();
  rt.reset();
  const double destroy_s = std::chrono::duration<double>(Clock::now() - t0).count();
  for (auto& th : ts) th.join();
  int code = kBlockedOk;
  fprintf(stderr, "blocked=%d destroy=%.3f s\n", blocked ? 1 : 0, destroy_s);
  for (int i = 0; i < nthreads; i++) {
    const PerThread& p = pt[static_cast<size_t>(i)];
    fprintf(stderr, "thread %d: %ld pages, signal=%d (%s), wrong page=%d\n", i,
            static_cast<long>(p.pages_done.load()), p.took_signal ? p.sig : 0,
            p.took_signal ? strsignal(p.sig) : "none", p.wrong);
    if (p.took_signal && code == kBlockedOk) code = kBlockedSignal;
    if (p.wrong != -1 && code == kBlockedOk) code = kBlockedWrongData;
  }
  if (!blocked) return kBlockedNotBlocked;
  if (code != kBlockedOk) return code;
  if (destroy_s > 10) return kBlockedSlowDestroy;
  return kBlockedOk;
}

// Runs a blocked-thread child; a run whose threads were not blocked when
// destroy began (a setup race, not a finding) is tried again, up to 3 times.
ChildResult RunBlockedChild(const std::function<int()>& body) {
  ChildResult r;
  for (int attempt = 0; attempt < 3; attempt++) {
    r = RunInChild(body, std::chrono::seconds(60));
    if (!r.exited(kBlockedNotBlocked)) break;
  }
  return r;
}

// One thread, inside a fault a fault thread is serving.
TEST(Shutdown, DestroyWhileAThreadIsInsideASlowFault) {
  ChildResult r = RunBlockedChild([] { return BlockedInFaultChild(1); });
  EXPECT_FALSE(r.timed_out) << "destroy hung: " << r.Describe();
  EXPECT_TRUE(r.exited(kBlockedOk)) << r.Describe();
  printf("%s", r.output.c_str());
}

// Three threads and two fault threads: one fault is still queued.
TEST(Shutdown, DestroyWhileMoreThreadsAreInFaultsThanFaultThreads) {
  ChildResult r = RunBlockedChild([] { return BlockedInFaultChild(3); });
  EXPECT_FALSE(r.timed_out) << "destroy hung: " << r.Describe();
  EXPECT_TRUE(r.exited(kBlockedOk)) << r.Describe();
  printf("%s", r.output.c_str());
}

// The userfaultfd reader can itself be busy: when the application munmaps a
// whole region, the reader tears it down and waits for that region's pages
// in I/O.  A fault raised meanwhile on another region waits, unread, in the
// userfaultfd.  If destroy begins then, that fault must still be resolved
// (or its thread at least not killed).
int QueuedBehindBusyReaderChild() {
  InstallSigbusHandler(kBlockedSignal + 10);
  const size_t budget = size_t{2} << 20;
  FaultySwapDev* dev = nullptr;
  auto created = create_faulty_runtime(test_options(budget, 4), &dev);
  if (!created.ok()) return kBlockedSetup;
  std::unique_ptr<Runtime> rt = std::move(*created);
  // Region 1: written, then its first half read back, so that its second
  // half is only in swap and every resident page of it is clean.
  const uint64_t n1 = 2 * budget / kPage;
  char* r1 = static_cast<char*>(*rt->Map(n1 * kPage));
  for (uint64_t p = 0; p < n1; p++) fill_page(r1 + p * kPage, p, 1);
  for (uint64_t p = 0; p < n1 / 2; p++) {
    if (check_page(r1 + p * kPage, p, 1) != -1) return kBlockedSetup;
  }
  const uint64_t victim = n1 / 2;  // only in swap
  // Region 2: written until some of its pages (the only dirty ones) are in
  // slow pageout.  It is larger than the budget, so that happens before its
  // end whatever the daemon frees first.
  dev->SetWriteLatency(milliseconds(2000), milliseconds(2000));
  const uint64_t n2 = 2 * budget / kPage;
  char* r2 = static_cast<char*>(*rt->Map(n2 * kPage));
  for (uint64_t p = 0; p < n2 && rt->GetStats().paging == 0; p++) {
    fill_page(r2 + p * kPage, 100000 + p, 1);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (rt->GetStats().paging == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  if (rt->GetStats().paging == 0) {
    fprintf(stderr, "no pageout in flight\n");
    return kBlockedSetup;
  }
  // The application unmaps region 2 itself: the reader waits for its writes.
  std::thread unmapper([&] { munmap(r2, n2 * kPage); });
  std::this_thread::sleep_for(milliseconds(100));
  // Meanwhile a thread touches an evicted page of region 1.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> done{0};
  int sig = 0, wrong = -1, wrong_word = -1;
  uint64_t wrong_first = 0;
  bool took = false;
  std::thread t([&] {
    took = CatchSigbus(
        [&] {
          for (uint64_t p = victim; p < victim + 4 && !stop.load(); p++) {
            const int w = check_page(r1 + p * kPage, p, 1);
            if (w != -1 && wrong == -1) {
              wrong = static_cast<int>(p);
              wrong_word = w;
              memcpy(&wrong_first, r1 + p * kPage, sizeof(wrong_first));
            }
            done++;
          }
        },
        nullptr, &sig);
  });
  std::this_thread::sleep_for(milliseconds(200));
  const bool blocked = done.load() == 0;
  stop = true;
  unmapper.join();
  const auto t0 = Clock::now();
  rt.reset();
  const double destroy_s = std::chrono::duration<double>(Clock::now() - t0).count();
  t.join();
  fprintf(
      stderr,
      "blocked=%d destroy=%.3f s; the thread did %ld pages, signal=%d (%s), wrong page=%d "
      "(first wrong word %d; the page's first word %#lx, expected %#lx)\n",
      blocked ? 1 : 0, destroy_s, static_cast<long>(done.load()), took ? sig : 0,
      took ? strsignal(sig) : "none", wrong, wrong_word, static_cast<unsigned long>(wrong_first),
      static_cast<unsigned long>(first_word(wrong < 0 ? victim : static_cast<uint64_t>(wrong), 1)));
  if (!blocked) return kBlockedNotBlocked;
  if (took) return kBlockedSignal;
  if (wrong != -1) return kBlockedWrongData;
  if (destroy_s > 10) return kBlockedSlowDestroy;
  return kBlockedOk;
}

TEST(Shutdown, DestroyWhileAFaultWaitsBehindABusyReader) {
  if (in_thread_mode()) GTEST_SKIP() << "in-thread faults do not wait for the reader";
  ChildResult r = RunBlockedChild(QueuedBehindBusyReaderChild);
  EXPECT_FALSE(r.timed_out) << "destroy hung: " << r.Describe();
  EXPECT_TRUE(r.exited(kBlockedOk)) << r.Describe();
  printf("%s", r.output.c_str());
}

}  // namespace
}  // namespace uvmrt::testing
