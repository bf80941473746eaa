// stress_test: a time-bounded stress of the whole runtime, and the
// out-of-memory-and-swap outcome under overcommit.
//
// Stress: worker threads read and write random pages of several long-lived
// regions, verifying each page's pattern before they change it, while churn
// threads map regions (each must read zero), fill them with their own
// pattern, verify them and unmap them.  A sampler checks the kernel's count
// of resident pages against the budget throughout.  A second run adds the
// application's own calls: discards, system calls on the memory, advice,
// mremap and munmap of parts.  It runs ~10 s (2.5 s at
// UVMRT_TEST_SCALE=small); UVMRT_SOAK_SECONDS=N makes it a soak of N seconds.
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/faulty_swapdev.h"
#include "tests/test_util.h"

namespace uvmrt::testing {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

std::chrono::milliseconds StressDuration() {
  if (const char* s = std::getenv("UVMRT_SOAK_SECONDS"); s != nullptr && *s != '\0') {
    return std::chrono::milliseconds(static_cast<int64_t>(std::atof(s) * 1000));
  }
  return small_scale() ? std::chrono::milliseconds(2500) : std::chrono::milliseconds(10000);
}

// The first verification failure, and how many there were.
class Failures {
 public:
  void Add(const std::string& what) {
    std::lock_guard<std::mutex> l(mu_);
    if (count_++ == 0) first_ = what;
  }
  int64_t count() const {
    std::lock_guard<std::mutex> l(mu_);
    return count_;
  }
  std::string first() const {
    std::lock_guard<std::mutex> l(mu_);
    return first_;
  }

 private:
  mutable std::mutex mu_;
  int64_t count_ = 0;
  std::string first_;
};

struct LongRegion {
  char* base = nullptr;
  uint64_t npages = 0;
  uint64_t id = 0;            // pattern namespace: page numbers id << 32 | p
  std::vector<uint32_t> gen;  // 0: the page must read zero
};

constexpr int kWorkers = 4;
constexpr int kChurners = 2;
// Pages are owned in blocks of kBlock: block b by worker b % kWorkers.
constexpr uint64_t kBlock = 8;

// What the threads do besides reading and writing their pages.
struct Mix {
  // Workers also discard runs of their pages (MADV_DONTNEED, MADV_REMOVE),
  // change their region's advice, and, with the fault threads, move pages
  // in and out through system calls (a pipe); churners move their regions
  // (mremap) and unmap parts of them.
  bool app_calls = false;
};

// Counts of what the threads did, for the report and the checks.
struct Done {
  std::atomic<int64_t> worker_ops{0}, churn_maps{0}, churn_pages{0}, max_resident{0};
  std::atomic<int64_t> discards{0}, syscalls{0}, advice{0}, moves{0}, part_unmaps{0};
};

// The page worker t's `slot`-th page of a region of `npages` pages.
uint64_t owned_page(uint64_t slot, int t) {
  return ((slot / kBlock) * kWorkers + static_cast<uint64_t>(t)) * kBlock + slot % kBlock;
}

// Verifies page p of r against what its owner last wrote.
bool page_ok(const LongRegion& r, uint64_t p) {
  const char* a = r.base + p * kPage;
  return r.gen[p] == 0 ? page_is_zero(a) : check_page(a, (r.id << 32) | p, r.gen[p]) == -1;
}

// Worker t's calls on its own pages from slot on (mix.app_calls): a discard
// of a run inside the slot's block, which must read zero at once; a read of
// the page by the kernel (write() into a pipe) and a write by it (read()
// from the pipe), with the fault threads only, since in-thread faults fail
// such calls with EFAULT; a change of the region's advice.
void worker_app_call(Runtime* rt, LongRegion& r, uint64_t slot, int t, std::mt19937_64& rng,
                     const int pipefd[2], Failures& failures, Done& done) {
  const uint64_t p = owned_page(slot, t);
  char* a = r.base + p * kPage;
  const auto where = [&](uint64_t q) {
    return "region " + std::to_string(r.id) + " page " + std::to_string(q);
  };
  switch (rng() % 8) {
    case 0:
    case 1: {
      const uint64_t n = 1 + rng() % (kBlock - slot % kBlock);
      const int advice = rng() % 2 == 0 ? MADV_DONTNEED : MADV_REMOVE;
      if (madvise(a, n * kPage, advice) != 0) {
        failures.Add("madvise " + where(p) + ": " + strerror(errno));
        return;
      }
      for (uint64_t q = p; q < p + n; q++) {
        r.gen[q] = 0;
        if (!page_is_zero(r.base + q * kPage)) failures.Add("discarded " + where(q) + " not zero");
      }
      done.discards++;
      return;
    }
    case 2:
    case 3: {
      if (in_thread_mode()) return;
      alignas(64) static thread_local char buf[kPage];
      if (write(pipefd[1], a, kPage) != static_cast<ssize_t>(kPage) ||
          read(pipefd[0], buf, kPage) != static_cast<ssize_t>(kPage)) {
        failures.Add("pipe out of " + where(p) + ": " + strerror(errno));
        return;
      }
      const bool ok =
          r.gen[p] == 0 ? page_is_zero(buf) : check_page(buf, (r.id << 32) | p, r.gen[p]) == -1;
      if (!ok) failures.Add("the kernel read " + where(p) + " wrong");
      fill_page(buf, (r.id << 32) | p, r.gen[p] + 1);
      if (write(pipefd[1], buf, kPage) != static_cast<ssize_t>(kPage) ||
          read(pipefd[0], a, kPage) != static_cast<ssize_t>(kPage)) {
        failures.Add("pipe into " + where(p) + ": " + strerror(errno));
        return;
      }
      r.gen[p]++;
      done.syscalls++;
      return;
    }
    case 4: {
      static constexpr Runtime::Advice kAdvice[] = {
          Runtime::Advice::kNormal, Runtime::Advice::kRandom, Runtime::Advice::kSequential};
      absl::Status st = rt->Advise(r.base, kAdvice[rng() % 3]);
      if (!st.ok()) failures.Add("advise: " + st.ToString());
      done.advice++;
      return;
    }
    default:
      return;
  }
}

// A churned region's whole life: it reads zero, is filled, verified in a
// random order twice (some pages come from swap), and unmapped.  With
// mix.app_calls it may also be moved (mremap) and lose a middle part
// (munmap) first, the rest verified after each.
void churn_one(Runtime* rt, uint64_t budget_pages, uint64_t id, std::mt19937_64& rng,
               const Mix& mix, Failures& failures, Done& done) {
  const uint64_t pages = 16 + rng() % (budget_pages / 2);
  const size_t bytes = pages * kPage;
  auto m = rt->Map(bytes);
  if (!m.ok()) {
    failures.Add("churn map: " + m.status().ToString());
    return;
  }
  char* base = static_cast<char*>(*m);
  const std::string name = "churn region " + std::to_string(id);
  for (uint64_t p = 0; p < pages; p++) {
    if (!page_is_zero(base + p * kPage)) {
      failures.Add("new region " + std::to_string(id) + " page " + std::to_string(p) +
                   " is not zero");
      break;
    }
  }
  for (uint64_t p = 0; p < pages; p++) fill_page(base + p * kPage, (id << 32) | p, 1);
  uint64_t gap_from = pages, gap_end = pages;  // the part unmapped, if any
  const auto verify = [&](const char* when) {
    for (int round = 0; round < 2; round++) {
      const uint64_t start = rng() % pages;
      for (uint64_t i = 0; i < pages; i++) {
        const uint64_t p = (start + i) % pages;
        if (p >= gap_from && p < gap_end) continue;
        if (check_page(base + p * kPage, (id << 32) | p, 1) != -1) {
          failures.Add(name + " page " + std::to_string(p) + " " + when);
          return;
        }
      }
    }
  };
  verify("after its fill");
  if (mix.app_calls && rng() % 2 == 0) {
    void* dst = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void* moved = dst == MAP_FAILED
                      ? MAP_FAILED
                      : mremap(base, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
    if (moved == MAP_FAILED) {
      failures.Add(name + " mremap: " + strerror(errno));
    } else {
      base = static_cast<char*>(moved);
      done.moves++;
      verify("after its move");
    }
  }
  if (mix.app_calls && rng() % 2 == 0) {
    gap_from = pages / 4;
    gap_end = gap_from + pages / 4;
    if (munmap(base + gap_from * kPage, (gap_end - gap_from) * kPage) != 0) {
      failures.Add(name + " munmap of part: " + strerror(errno));
    } else {
      done.part_unmaps++;
    }
    verify("after the munmap of a part");
  }
  absl::Status st = rt->Unmap(base, bytes);
  if (!st.ok()) failures.Add("churn unmap: " + st.ToString());
  done.churn_maps++;
  done.churn_pages += static_cast<int64_t>(pages);
}

// Workers read and write random pages of three long-lived regions (2.5 x
// the budget), each verified before it changes, while churners map,
// fill, verify and unmap regions of their own, and a sampler checks the
// kernel's count of resident pages against the budget.
void RunStress(const Mix& mix) {
  const size_t budget = test_budget();
  const uint64_t budget_pages = budget / kPage;
  auto rt = make_runtime(test_options(budget, 6));
  const auto duration = StressDuration();
  Failures failures;
  Done done;
  Runtime* prt = rt.get();

  RunWithWatchdog(
      std::chrono::duration_cast<std::chrono::seconds>(duration) + std::chrono::seconds(120),
      [&] {
        std::vector<LongRegion> regions;
        for (uint64_t pages : {budget_pages, budget_pages, budget_pages / 2}) {
          LongRegion r;
          auto m = prt->Map(pages * kPage);
          ASSERT_TRUE(m.ok()) << m.status();
          r.base = static_cast<char*>(*m);
          r.npages = pages;
          r.id = regions.size() + 1;
          r.gen.assign(pages, 0);
          regions.push_back(std::move(r));
        }

        std::atomic<bool> stop{false};
        std::thread sampler([&] {
          while (!stop.load()) {
            const int64_t b = prt->KernelResidentBytes();
            if (b > done.max_resident.load()) done.max_resident.store(b);
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          }
        });
        std::vector<std::thread> ts;
        for (int t = 0; t < kWorkers; t++) {
          ts.emplace_back([&, t] {
            std::mt19937_64 rng(1000 + static_cast<uint64_t>(t));
            int pipefd[2] = {-1, -1};
            if (mix.app_calls && pipe(pipefd) != 0) {
              failures.Add(std::string("pipe: ") + strerror(errno));
              return;
            }
            while (!stop.load()) {
              LongRegion& r = regions[rng() % regions.size()];
              const uint64_t mine = r.npages / kWorkers;
              if (mix.app_calls && rng() % 16 == 0) {
                worker_app_call(prt, r, rng() % mine, t, rng, pipefd, failures, done);
                continue;
              }
              // A short sequential run, or a single random page.
              const uint64_t run = rng() % 4 == 0 ? 1 + rng() % 32 : 1;
              uint64_t slot = rng() % mine;
              for (uint64_t i = 0; i < run; i++, slot = (slot + 1) % mine) {
                const uint64_t p = owned_page(slot, t);
                if (!page_ok(r, p)) {
                  failures.Add("region " + std::to_string(r.id) + " page " + std::to_string(p) +
                               " gen " + std::to_string(r.gen[p]));
                }
                if (rng() % 3 != 0) {  // two writes in three
                  r.gen[p]++;
                  fill_page(r.base + p * kPage, (r.id << 32) | p, r.gen[p]);
                }
                done.worker_ops++;
              }
            }
            if (pipefd[0] >= 0) {
              close(pipefd[0]);
              close(pipefd[1]);
            }
          });
        }
        std::atomic<uint64_t> next_id{100};
        for (int t = 0; t < kChurners; t++) {
          ts.emplace_back([&, t] {
            std::mt19937_64 rng(2000 + static_cast<uint64_t>(t));
            while (!stop.load() && failures.count() == 0) {
              churn_one(prt, budget_pages, next_id++, rng, mix, failures, done);
            }
          });
        }
        std::this_thread::sleep_for(duration);
        stop = true;
        for (auto& th : ts) th.join();
        sampler.join();

        // Everything verifies at the end, then everything is unmapped.
        for (const LongRegion& r : regions) {
          for (uint64_t p = 0; p < r.npages; p++) {
            if (!page_ok(r, p))
              failures.Add("final: region " + std::to_string(r.id) + " page " + std::to_string(p));
          }
          EXPECT_TRUE(prt->Unmap(r.base, r.npages * kPage).ok());
        }
      },
      [&] { return "stats: " + StatsString(prt->GetStats()); });

  const Stats s = rt->GetStats();
  SCOPED_TRACE("stats: " + StatsString(s));
  printf(
      "stress: %.1f s, %ld worker ops, %ld regions mapped and unmapped (%ld pages), "
      "%ld swap-outs, %ld swap-ins, max resident %ld of %zu bytes\n",
      duration.count() / 1000.0, static_cast<long>(done.worker_ops.load()),
      static_cast<long>(done.churn_maps.load()), static_cast<long>(done.churn_pages.load()),
      static_cast<long>(s.pgswapout), static_cast<long>(s.pgswapin),
      static_cast<long>(done.max_resident.load()), budget);
  if (mix.app_calls) {
    printf(
        "application calls: %ld discards, %ld pipe round trips, %ld advice changes, "
        "%ld regions moved, %ld parts unmapped\n",
        static_cast<long>(done.discards.load()), static_cast<long>(done.syscalls.load()),
        static_cast<long>(done.advice.load()), static_cast<long>(done.moves.load()),
        static_cast<long>(done.part_unmaps.load()));
  }
  EXPECT_EQ(failures.count(), 0) << "first failure: " << failures.first();
  EXPECT_GT(done.worker_ops.load(), 1000);
  EXPECT_GT(done.churn_maps.load(), 2);
  EXPECT_GT(s.pgswapout, 0) << "nothing was paged out: the stress proves little";
  EXPECT_GT(s.pgswapin, 0);
  if (mix.app_calls) {
    EXPECT_GT(done.discards.load(), 10);
    EXPECT_GT(done.moves.load(), 0);
    EXPECT_GT(done.part_unmaps.load(), 0);
    if (!in_thread_mode()) {
      EXPECT_GT(done.syscalls.load(), 10);
    }
  }
  EXPECT_LE(done.max_resident.load(), static_cast<int64_t>(budget));
  EXPECT_EQ(s.swapouterr, 0);
  EXPECT_EQ(s.swapinerr, 0);
  // Nothing is left once everything is unmapped.
  EXPECT_EQ(s.regions, 0);
  EXPECT_EQ(s.mapped_bytes, 0);
  EXPECT_EQ(s.swpginuse, 0);
  EXPECT_EQ(s.swpgonly, 0);
  EXPECT_EQ(s.paging, 0);
  EXPECT_EQ(s.free, s.npages);
  EXPECT_EQ(rt->KernelResidentBytes(), 0);
}

TEST(Stress, RandomAccessWithMapUnmapChurn) {
  RunStress(Mix{});
}

// The same, with the application's own calls on the memory under paging:
// discards among pages the daemon is deactivating, system calls that read
// and write non-resident pages, advice changes, moves and partial unmaps.
TEST(Stress, RandomAccessWithApplicationCalls) {
  RunStress(Mix{.app_calls = true});
}

// ---- out of memory and swap ----

// CPU seconds used by this process so far.
double ProcessCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// CPU seconds by thread name, from /proc (for the report).
std::string ThreadCpu() {
  std::string out;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return out;
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string dir = std::string("/proc/self/task/") + e->d_name;
    FILE* f = fopen((dir + "/stat").c_str(), "r");
    if (f == nullptr) continue;
    char buf[1024] = {};
    const size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    const std::string st(buf, n);
    const size_t open = st.find('('), close = st.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    const std::string name = st.substr(open + 1, close - open - 1);
    // The fields after the name: state is field 3, utime 14, stime 15.
    std::vector<std::string> fields;
    size_t pos = close + 2;
    while (pos < st.size()) {
      const size_t sp = st.find(' ', pos);
      fields.push_back(st.substr(pos, sp == std::string::npos ? std::string::npos : sp - pos));
      if (sp == std::string::npos) break;
      pos = sp + 1;
    }
    if (fields.size() < 13) continue;
    const double cpu = (std::atof(fields[11].c_str()) + std::atof(fields[12].c_str())) / hz;
    out += absl::StrFormat("  thread %s: %.2f s cpu\n", name, cpu);
  }
  closedir(d);
  return out;
}

constexpr int kSigbusExit = 42;  // the child took the documented SIGBUS
constexpr int kNoSigbusExit = 43;

// Runtime::Create, or null with its status on stderr (in a child).
std::unique_ptr<Runtime> create_or_report(const Options& o) {
  auto created = Runtime::Create(o);
  if (created.ok()) return std::move(*created);
  fprintf(stderr, "create: %s\n", created.status().ToString().c_str());
  return nullptr;
}

// The child: overcommit, a 4 MiB budget and 8 MiB of swap, and a 32 MiB
// region written front to back.  The write that finds every frame dirty and
// swap full must get SIGBUS after the 5 s grace, not hang.  A monitor thread
// notes when the writer stalls, and how much CPU the process uses from then
// on: nothing can make progress, so the runtime should be asleep.
int OutOfSwapChild() {
  InstallSigbusHandler(/*exit_code=*/kSigbusExit + 10);  // SIGBUS on another thread
  Options o = test_options(size_t{4} << 20, 2);          // 4 MiB budget, 8 MiB swap
  o.overcommit = true;
  std::unique_ptr<Runtime> rt = create_or_report(o);
  if (rt == nullptr) return 1;
  const uint64_t npages = (size_t{32} << 20) / kPage;
  auto m = rt->Map(npages * kPage);
  if (!m.ok()) {
    fprintf(stderr, "map: %s\n", m.status().ToString().c_str());
    return 1;
  }
  char* base = static_cast<char*>(*m);
  std::atomic<uint64_t> written{0};
  std::atomic<bool> done{false};
  // When the writer stalled (no page for 500 ms): time and process CPU.
  std::atomic<double> stall_at{-1}, stall_cpu{-1};
  const auto start = Clock::now();
  auto now_s = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  std::thread monitor([&] {
    uint64_t last = ~uint64_t{0};
    double since = 0;
    while (!done.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const uint64_t w = written.load();
      if (w != last) {
        last = w;
        since = now_s();
      } else if (stall_at.load() < 0 && now_s() - since > 0.5) {
        stall_cpu = ProcessCpuSeconds();
        stall_at = now_s();
      }
    }
  });
  void* addr = nullptr;
  int sig = 0;
  const bool bus = CatchSigbus(
      [&] {
        for (uint64_t p = 0; p < npages; p++) {
          fill_page(base + p * kPage, p, 1);
          written = p + 1;
        }
      },
      &addr, &sig);
  const double secs = now_s();
  const double cpu = ProcessCpuSeconds();
  done = true;
  monitor.join();
  const Stats s = rt->GetStats();
  if (!bus) {
    fprintf(stderr, "wrote all %lu pages without SIGBUS in %.1f s; stats: %s\n",
            static_cast<unsigned long>(npages), secs, StatsString(s).c_str());
    return kNoSigbusExit;
  }
  if (sig != SIGBUS) {
    fprintf(stderr, "signal %d at %p, expected SIGBUS\n", sig, addr);
    return 4;
  }
  const uint64_t page = static_cast<uint64_t>(static_cast<char*>(addr) - base) / kPage;
  fprintf(stderr, "SIGBUS at page %lu, %.1f s after the start; stats: %s\n",
          static_cast<unsigned long>(page), secs, StatsString(s).c_str());
  if (stall_at.load() >= 0) {
    fprintf(stderr, "stalled_wait_seconds=%.3f stalled_wait_cpu_seconds=%.3f\n",
            secs - stall_at.load(), cpu - stall_cpu.load());
  }
  fprintf(stderr, "%s", ThreadCpu().c_str());
  if (page != written.load()) {
    fprintf(stderr, "SIGBUS for page %lu, but the thread was writing page %lu\n",
            static_cast<unsigned long>(page), static_cast<unsigned long>(written.load()));
    return 2;
  }
  // The runtime gave up only once memory and swap were really used up.
  if (static_cast<int64_t>(written.load()) < s.swpages) {
    fprintf(stderr, "gave up after %lu pages, with %ld swap slots\n",
            static_cast<unsigned long>(written.load()), static_cast<long>(s.swpages));
    return 3;
  }
  // Destroying the runtime with every frame dirty and swap full must not
  // hang either (the parent's deadline covers it).
  rt.reset();
  fprintf(stderr, "runtime destroyed\n");
  return kSigbusExit;
}

// One child run, shared by the tests below.
class OutOfSwap : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    result_ = new ChildResult(RunInChild(OutOfSwapChild, std::chrono::seconds(60)));
  }
  static void TearDownTestSuite() {
    delete result_;
    result_ = nullptr;
  }
  static ChildResult* result_;
};
ChildResult* OutOfSwap::result_ = nullptr;

TEST_F(OutOfSwap, FaultingThreadGetsSigbusAndTheLogLineNotAHang) {
  const ChildResult& r = *result_;
  EXPECT_FALSE(r.timed_out) << "the faulting thread hung: " << r.Describe();
  EXPECT_TRUE(r.exited(kSigbusExit) || r.signaled(SIGBUS)) << r.Describe();
  EXPECT_THAT(r.output, HasSubstr("uvmrt: out of memory and swap")) << r.Describe();
  EXPECT_THAT(r.output, HasSubstr("runtime destroyed")) << r.Describe();
  printf("child: %.1f s\n%s", r.seconds, r.output.c_str());
}

// While the faulting thread waits out the grace period nothing can make
// progress (every frame is dirty, swap is full): the runtime should sleep,
// not spin.  Allowed: a quarter of one CPU on average.
TEST_F(OutOfSwap, RuntimeDoesNotSpinWhileTheFaultWaits) {
  const ChildResult& r = *result_;
  ASSERT_TRUE(r.exited(kSigbusExit)) << r.Describe();
  const size_t at = r.output.find("stalled_wait_seconds=");
  ASSERT_NE(at, std::string::npos) << "the writer never stalled: " << r.Describe();
  double wait = 0, cpu = 0;
  ASSERT_EQ(sscanf(r.output.c_str() + at, "stalled_wait_seconds=%lf stalled_wait_cpu_seconds=%lf",
                   &wait, &cpu),
            2);
  ASSERT_GT(wait, 2.0) << r.Describe();
  EXPECT_LT(cpu, 0.25 * wait) << "the runtime used " << cpu << " s of CPU in the " << wait
                              << " s that the fault waited with no progress possible: it spins.\n"
                              << r.Describe();
}

// ---- a map larger than memory allows ----

// Sanitizers keep their own shadow memory, which an address-space limit
// breaks; the test below needs one (kSanitized).

// With overcommit, Map accepts regions up to 2^32 pages (16 TiB).  Whether
// the runtime can keep the bookkeeping for one is a matter of memory; when
// it cannot, Map must say so with a status, not take the process down.  The
// child limits its address space to 2 GiB beyond what it uses, so nothing
// here presses on the machine's memory.
int HugeMapChild() {
  Options o = test_options(size_t{4} << 20, 2);
  o.overcommit = true;
  std::unique_ptr<Runtime> rt = create_or_report(o);
  if (rt == nullptr) return 1;
  FILE* f = fopen("/proc/self/statm", "r");
  unsigned long pages = 0;
  if (f == nullptr || fscanf(f, "%lu", &pages) != 1) return 1;
  fclose(f);
  rlimit r{pages * 4096 + (size_t{2} << 30), RLIM_INFINITY};
  if (setrlimit(RLIMIT_AS, &r) != 0) return 1;
  for (size_t tib : {1, 4, 15}) {
    auto m = rt->Map(tib << 40);
    fprintf(stderr, "Map(%zu TiB): %s\n", tib, m.status().ToString().c_str());
    if (m.ok()) {
      // Usable: a page at each end.
      char* base = static_cast<char*>(*m);
      fill_page(base, 0, 1);
      fill_page(base + (tib << 40) - kPage, 1, 1);
      if (check_page(base, 0, 1) != -1) return 2;
      if (!rt->Unmap(base).ok()) return 2;
    }
  }
  return 0;
}

TEST(Stress, HugeOvercommitMapFailsWithAStatusNotACrash) {
  if (kSanitized) GTEST_SKIP() << "needs an address-space limit, which sanitizers do not allow";
  ChildResult r = RunInChild(HugeMapChild, std::chrono::seconds(30));
  EXPECT_TRUE(r.exited(0)) << r.Describe();
}

}  // namespace
}  // namespace uvmrt::testing
