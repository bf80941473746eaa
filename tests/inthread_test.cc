// inthread_test: in-thread fault handling (Options::in_thread_faults) beside
// the rest of the process: SIGBUS that is not a runtime's fault reaches the
// handler installed before (or kills, by default), runtimes of both kinds
// work side by side, and the number of in-thread runtimes is bounded with a
// clear error.  The data-integrity, region-event, fault-injection, stress and
// shutdown suites also run whole in this mode (their .inthread tests).
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/faulty_swapdev.h"
#include "tests/test_util.h"

namespace uvmrt::testing {
namespace {

Options in_thread_options(size_t budget) {
  Options o = test_options(budget, 4);
  o.in_thread_faults = true;
  return o;
}

// Writes generation `gen` over every page of [base, base + npages) with
// `threads` threads (page p by thread p % threads), then checks it all.
// Returns the first bad page, or -1.
int64_t write_and_check(char* base, uint64_t npages, uint64_t gen, int threads) {
  std::atomic<int64_t> bad{-1};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; t++) {
    ts.emplace_back([&, t] {
      for (uint64_t p = t; p < npages; p += threads) fill_page(base + p * kPage, p, gen);
      for (uint64_t p = t; p < npages; p += threads) {
        if (check_page(base + p * kPage, p, gen) != -1) bad.store(static_cast<int64_t>(p));
      }
    });
  }
  for (auto& th : ts) th.join();
  return bad.load();
}

// A page of a file mapping past the file's end: touching it is a SIGBUS
// (BUS_ADRERR, as a userfaultfd fault) that belongs to no runtime.
struct PastEof {
  PastEof() {
    fd = memfd_create("uvmrt-inthread-test", MFD_CLOEXEC);
    p = static_cast<char*>(mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  }
  ~PastEof() {
    munmap(p, kPage);
    close(fd);
  }
  int fd;
  char* p;
};

enum : int {
  kOk = 0,
  kNoRuntime = 10,
  kNoSigbus = 11,
  kWrongAddr = 12,
  kBadData = 13,
  kStray = 14,  // a SIGBUS where none was expected
};

// A SIGBUS outside every region goes to the handler the application
// installed before the runtime, with its address; the runtime goes on
// serving its own faults around it.
TEST(InThread, ForeignSigbusGoesToTheEarlierHandler) {
  const ChildResult r = RunInChild(
      [] {
        InstallSigbusHandler(kStray);
        auto rt = Runtime::Create(in_thread_options(test_budget()));
        if (!rt.ok()) return kNoRuntime;
        const size_t bytes = 4 * test_budget();
        char* base = static_cast<char*>(*(*rt)->Map(bytes));
        const uint64_t npages = bytes / kPage;
        if (write_and_check(base, npages, 1, 2) != -1) return kBadData;
        PastEof eof;
        void* addr = nullptr;
        int sig = 0;
        const bool took =
            CatchSigbus([&] { *static_cast<volatile char*>(eof.p) = 1; }, &addr, &sig);
        if (!took || sig != SIGBUS) return kNoSigbus;
        if (addr != eof.p) return kWrongAddr;
        // The region is still served, and still holds its data.
        for (uint64_t p = 0; p < npages; p++) {
          if (check_page(base + p * kPage, p, 1) != -1) return kBadData;
        }
        if (write_and_check(base, npages, 2, 2) != -1) return kBadData;
        return kOk;
      },
      std::chrono::seconds(120));
  EXPECT_TRUE(r.exited(kOk)) << r.Describe();
}

// Died of SIGBUS; under a sanitizer, which reports deadly signals itself
// and exits, a report of it.
bool died_of_sigbus(const ChildResult& r) {
  if (!kSanitized) return r.signaled(SIGBUS);
  return !r.timed_out && !r.exited(0) && !r.exited(kNoSigbus) &&
         r.output.find("BUS") != std::string::npos;
}

// With no earlier handler, a SIGBUS that is not a runtime's fault kills, as
// it would without the runtime: a fault, and a signal sent with kill.
TEST(InThread, ForeignSigbusStillKillsByDefault) {
  const ChildResult fault = RunInChild(
      [] {
        auto rt = Runtime::Create(in_thread_options(test_budget()));
        if (!rt.ok()) return kNoRuntime;
        char* base = static_cast<char*>(*(*rt)->Map(kPage * 64));
        fill_page(base, 0, 1);
        PastEof eof;
        *static_cast<volatile char*>(eof.p) = 1;
        return kNoSigbus;
      },
      std::chrono::seconds(60));
  EXPECT_TRUE(died_of_sigbus(fault)) << fault.Describe();
  const ChildResult sent = RunInChild(
      [] {
        auto rt = Runtime::Create(in_thread_options(test_budget()));
        if (!rt.ok()) return kNoRuntime;
        kill(getpid(), SIGBUS);
        std::this_thread::sleep_for(std::chrono::seconds(5));
        return kNoSigbus;
      },
      std::chrono::seconds(60));
  EXPECT_TRUE(died_of_sigbus(sent)) << sent.Describe();
}

// An in-thread runtime and one with fault threads, in one process, each
// paging a region of four times its budget with two threads.
TEST(InThread, BesideARuntimeWithFaultThreads) {
  const size_t budget = test_budget();
  auto a = make_runtime(in_thread_options(budget));
  Options ob = test_options(budget, 4);
  ob.in_thread_faults = false;
  auto b = make_runtime(ob);
  const size_t bytes = 4 * budget;
  char* ra = static_cast<char*>(*a->Map(bytes));
  char* rb = static_cast<char*>(*b->Map(bytes));
  for (uint64_t gen = 1; gen <= 2; gen++) {
    int64_t bad_a = -1, bad_b = -1;
    std::thread ta([&] { bad_a = write_and_check(ra, bytes / kPage, gen, 2); });
    std::thread tb([&] { bad_b = write_and_check(rb, bytes / kPage, gen + 10, 2); });
    ta.join();
    tb.join();
    ASSERT_EQ(bad_a, -1) << "in-thread runtime, generation " << gen;
    ASSERT_EQ(bad_b, -1) << "runtime with fault threads, generation " << gen;
  }
  EXPECT_GT(a->GetStats().pgswapin, 0);
  EXPECT_GT(b->GetStats().pgswapin, 0);
  EXPECT_LE(a->KernelResidentBytes(), static_cast<int64_t>(budget));
  EXPECT_LE(b->KernelResidentBytes(), static_cast<int64_t>(budget));
}

// At most eight in-thread runtimes live at once; the ninth is refused with a
// status that says what to do, and a slot freed by destroy is reused.
TEST(InThread, NinthRuntimeIsRefusedClearly) {
  const size_t budget = size_t{1} << 20;
  std::vector<std::unique_ptr<Runtime>> rts;
  for (int i = 0; i < 8; i++) {
    auto rt = Runtime::Create(in_thread_options(budget));
    ASSERT_TRUE(rt.ok()) << "runtime " << i << ": " << rt.status();
    rts.push_back(std::move(*rt));
  }
  auto ninth = Runtime::Create(in_thread_options(budget));
  ASSERT_FALSE(ninth.ok());
  EXPECT_EQ(ninth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(ninth.status().message().find("in_thread_faults"), absl::string_view::npos)
      << ninth.status();
  // Each one serves its own region.
  for (size_t i = 0; i < rts.size(); i++) {
    char* base = static_cast<char*>(*rts[i]->Map(2 * budget));
    ASSERT_EQ(write_and_check(base, 2 * budget / kPage, i, 1), -1) << "runtime " << i;
  }
  rts.pop_back();
  auto again = Runtime::Create(in_thread_options(budget));
  EXPECT_TRUE(again.ok()) << again.status();
}

}  // namespace
}  // namespace uvmrt::testing
