// faultinject_test: the runtime under swap I/O faults injected below the page
// daemon (FaultySwapDev): write errors (hard, transient, short), read errors
// (EIO, short), and slow completions.  Whatever is injected, every byte the
// application wrote must read back, or the one touching thread must get
// SIGBUS for the one page whose swap-in failed.
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io/uring_swapdev.h"
#include "tests/faulty_swapdev.h"
#include "tests/test_util.h"

namespace uvmrt::testing {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

// A mapped region with the generation of each page's pattern (0: never
// written, reads zero).
struct Mapped {
  char* base = nullptr;
  uint64_t npages = 0;
  std::vector<uint32_t> gen;

  char* page(uint64_t p) const { return base + p * kPage; }
};

Mapped MapRegion(Runtime* rt, size_t bytes) {
  Mapped m;
  auto r = rt->Map(bytes);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) std::abort();
  m.base = static_cast<char*>(*r);
  m.npages = bytes / kPage;
  m.gen.assign(m.npages, 0);
  return m;
}

// Writes a new generation to every page, in order.
void WriteAll(Mapped& m) {
  for (uint64_t p = 0; p < m.npages; p++) {
    m.gen[p]++;
    fill_page(m.page(p), p, m.gen[p]);
  }
}

// Verifies every page; returns the first bad page or -1.
int64_t VerifyAll(const Mapped& m) {
  for (uint64_t p = 0; p < m.npages; p++) {
    const bool ok =
        m.gen[p] == 0 ? page_is_zero(m.page(p)) : check_page(m.page(p), p, m.gen[p]) == -1;
    if (!ok) return static_cast<int64_t>(p);
  }
  return -1;
}

// Random read-modify-write by `nthreads` threads, each owning the pages
// p % nthreads == t.  Returns the first bad page seen or -1.
int64_t RandomRmw(Mapped& m, int nthreads, uint64_t ops_per_thread, uint64_t seed) {
  std::atomic<int64_t> bad{-1};
  std::vector<std::thread> ts;
  for (int t = 0; t < nthreads; t++) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(seed * 31 + static_cast<uint64_t>(t));
      const uint64_t mine = m.npages / static_cast<uint64_t>(nthreads);
      for (uint64_t i = 0; i < ops_per_thread; i++) {
        const uint64_t p =
            (rng() % mine) * static_cast<uint64_t>(nthreads) + static_cast<uint64_t>(t);
        if (check_page(m.page(p), p, m.gen[p]) != -1) bad.store(static_cast<int64_t>(p));
        m.gen[p]++;
        fill_page(m.page(p), p, m.gen[p]);
      }
    });
  }
  for (auto& th : ts) th.join();
  return bad.load();
}

size_t FaultBudget() {
  return small_scale() ? (size_t{4} << 20) : (size_t{8} << 20);
}

// Swap of 3 x budget for a region of 3 x budget: the slot allocator wraps
// around within a few passes, so bad slots would be reused if they could be.
Options FaultOptions() {
  return test_options(FaultBudget(), 3);
}

// The write-fault scenario: fill a region of 3 x budget (the injections
// fire during the fill), read it back twice (pages whose write failed are
// still dirty and must be written again elsewhere), then random
// read-modify-write and a last full check.
struct ScenarioResult {
  Stats after_reads{};
  Stats end{};
  size_t failed_pending_after_reads = 0;
  int64_t failed_rewritten_after_reads = 0;
};

void RunWriteScenario(Runtime* rt, FaultySwapDev* dev, ScenarioResult* out) {
  Mapped m = MapRegion(rt, 3 * FaultBudget());
  WriteAll(m);
  ASSERT_EQ(VerifyAll(m), -1) << "after the fill; device: " << dev->counters().ToString();
  ASSERT_EQ(VerifyAll(m), -1) << "second read pass";
  out->after_reads = rt->GetStats();
  out->failed_pending_after_reads = dev->failed_pages_pending();
  out->failed_rewritten_after_reads = dev->failed_pages_rewritten();
  ASSERT_EQ(RandomRmw(m, 2, m.npages, 1), -1) << "random read-modify-write";
  ASSERT_EQ(VerifyAll(m), -1) << "last pass";
  out->end = rt->GetStats();
  ASSERT_TRUE(rt->Unmap(m.base, m.npages * kPage).ok());
}

// RunWriteScenario on a new runtime whose device fails every kth write
// (`fault`, `timing`), `n` times; *dev is that device.
std::unique_ptr<Runtime> RunWriteScenarioWith(int k, WriteFault fault, FaultTiming timing, int n,
                                              FaultySwapDev** dev, ScenarioResult* out) {
  auto rt = make_faulty_runtime(FaultOptions(), dev);
  (*dev)->FailEveryKthWrite(k, fault, timing, n);
  RunWriteScenario(rt.get(), *dev, out);
  return rt;
}

// ---- hard write errors ----

class WriteEIO : public ::testing::TestWithParam<FaultTiming> {};

TEST_P(WriteEIO, SlotsMarkedBadNeverReusedPagesWrittenElsewhere) {
  constexpr int kInjections = 6;
  FaultySwapDev* dev;
  ScenarioResult r;
  auto rt = RunWriteScenarioWith(4, WriteFault::kEIO, GetParam(), kInjections, &dev, &r);
  if (HasFatalFailure()) return;
  const FaultyCounters& c = dev->counters();
  SCOPED_TRACE("device: " + c.ToString() + "\nstats: " + StatsString(r.end));

  // The injection fired, every time it was armed for.
  EXPECT_EQ(c.injected_eio_writes.load(), kInjections);
  EXPECT_EQ(dev->pending_write_faults(), 0);
  ASSERT_GT(c.hard_failed_pages.load(), 0);
  // The runtime saw the errors and marked exactly those slots bad.
  EXPECT_EQ(r.end.swpgbad, c.hard_failed_pages.load());
  EXPECT_EQ(r.end.swapouterr, c.injected_write_pages.load());
  EXPECT_EQ(static_cast<int64_t>(dev->hard_failed_slots().size()), c.hard_failed_pages.load());
  // Never written again, never read.
  EXPECT_EQ(c.bad_slot_writes.load(), 0) << dev->violations();
  EXPECT_EQ(c.bad_slot_reads.load(), 0) << dev->violations();
  // The pages stayed dirty and were paged out again elsewhere.
  EXPECT_EQ(r.failed_pending_after_reads, 0u) << "pages whose write failed were never rewritten";
  EXPECT_GT(r.failed_rewritten_after_reads, 0);
  // The slot allocator wrapped around (so reuse was possible).
  EXPECT_GT(r.end.pgswapout, r.end.swpages);

  // After unmapping, only the bad slots stay allocated.
  const Stats s = rt->GetStats();
  EXPECT_EQ(s.swpginuse, s.swpgbad);
  EXPECT_EQ(s.swpgonly, 0);
  EXPECT_EQ(s.free, s.npages);
  EXPECT_EQ(s.paging, 0);

  // Capacity lost to bad slots: a new region still works in what is left.
  Mapped m2 = MapRegion(rt.get(), 2 * FaultBudget());
  WriteAll(m2);
  EXPECT_EQ(VerifyAll(m2), -1);
  EXPECT_EQ(dev->counters().bad_slot_writes.load(), 0) << dev->violations();
  ASSERT_TRUE(rt->Unmap(m2.base).ok());
}

INSTANTIATE_TEST_SUITE_P(FaultInject, WriteEIO,
                         ::testing::Values(FaultTiming::kInsteadOfWrite, FaultTiming::kAfterWrite),
                         [](const auto& info) {
                           return info.param == FaultTiming::kInsteadOfWrite ? "InsteadOfWrite"
                                                                             : "AfterWrite";
                         });

// ---- transient write errors ----

class TransientWrite : public ::testing::TestWithParam<WriteFault> {};

TEST_P(TransientWrite, SlotsFreedPagesRetriedDataIntact) {
  constexpr int kInjections = 8;
  const WriteFault f = GetParam();
  FaultySwapDev* dev;
  ScenarioResult r;
  auto rt = RunWriteScenarioWith(3, f, FaultTiming::kInsteadOfWrite, kInjections, &dev, &r);
  if (HasFatalFailure()) return;
  const FaultyCounters& c = dev->counters();
  SCOPED_TRACE("device: " + c.ToString() + "\nstats: " + StatsString(r.end));

  EXPECT_EQ(dev->pending_write_faults(), 0);
  switch (f) {
    case WriteFault::kEAGAIN:
      EXPECT_EQ(c.injected_eagain_writes.load(), kInjections);
      break;
    case WriteFault::kENOMEM:
      EXPECT_EQ(c.injected_enomem_writes.load(), kInjections);
      break;
    default:
      EXPECT_EQ(c.injected_unavailable.load(), kInjections);
      break;
  }
  // Transient: no slot is marked bad.
  EXPECT_EQ(r.end.swpgbad, 0);
  EXPECT_EQ(c.hard_failed_pages.load(), 0);
  if (f != WriteFault::kSubmitUnavailable) {
    EXPECT_EQ(r.end.swapouterr, c.injected_write_pages.load());
  }
  // The pages were retried: each one was later written successfully.
  EXPECT_EQ(r.failed_pending_after_reads, 0u) << "pages whose write failed were never retried";
  EXPECT_GT(r.failed_rewritten_after_reads, 0);
  // Every slot came back.
  const Stats s = rt->GetStats();
  EXPECT_EQ(s.swpginuse, 0);
  EXPECT_EQ(s.swpgonly, 0);
  EXPECT_EQ(s.free, s.npages);
}

INSTANTIATE_TEST_SUITE_P(FaultInject, TransientWrite,
                         ::testing::Values(WriteFault::kEAGAIN, WriteFault::kENOMEM,
                                           WriteFault::kSubmitUnavailable),
                         [](const auto& info) { return WriteFaultName(info.param); });

// ---- short writes ----

class ShortWrite : public ::testing::TestWithParam<FaultTiming> {};

TEST_P(ShortWrite, IsAnErrorNeverSuccess) {
  constexpr int kInjections = 5;
  FaultySwapDev* dev;
  ScenarioResult r;
  auto rt = RunWriteScenarioWith(4, WriteFault::kShort, GetParam(), kInjections, &dev, &r);
  if (HasFatalFailure()) return;
  const FaultyCounters& c = dev->counters();
  SCOPED_TRACE("device: " + c.ToString() + "\nstats: " + StatsString(r.end));

  EXPECT_EQ(c.injected_short_writes.load(), kInjections);
  EXPECT_EQ(dev->pending_write_faults(), 0);
  // An error: counted, and the slots are not trusted (a short write is a
  // hard error: the slots are marked bad, and never read).
  EXPECT_EQ(r.end.swapouterr, c.injected_write_pages.load());
  EXPECT_GT(r.end.swapouterr, 0);
  EXPECT_EQ(r.end.swpgbad, c.hard_failed_pages.load());
  EXPECT_EQ(c.bad_slot_reads.load(), 0) << dev->violations();
  EXPECT_EQ(c.bad_slot_writes.load(), 0) << dev->violations();
  EXPECT_EQ(r.failed_pending_after_reads, 0u);
  const Stats s = rt->GetStats();
  EXPECT_EQ(s.swpginuse, s.swpgbad);
  EXPECT_EQ(s.free, s.npages);
}

INSTANTIATE_TEST_SUITE_P(FaultInject, ShortWrite,
                         ::testing::Values(FaultTiming::kInsteadOfWrite, FaultTiming::kAfterWrite),
                         [](const auto& info) {
                           return info.param == FaultTiming::kInsteadOfWrite ? "InsteadOfWrite"
                                                                             : "AfterWrite";
                         });

// ---- read errors: SIGBUS for the touching thread only ----

// Child exit codes.
enum ChildCode {
  kChildOk = 0,
  kChildNoSlot = 10,       // the victim page never reached swap
  kChildNoSigbus = 11,     // the touching thread got no SIGBUS
  kChildWrongAddr = 12,    // SIGBUS, but for another address
  kChildOtherBad = 13,     // another page or thread was affected
  kChildStats = 14,        // the counters disagree
  kChildNotFired = 15,     // the injection never fired
  kChildUnmap = 16,        // unmap or remap after the poison failed
  kChildStraySigbus = 17,  // SIGBUS on a thread that did not expect one
  kChildRetouch = 18,      // the poisoned page did not stay poisoned
  kChildHang = 19,         // the touching thread neither returned nor got SIGBUS
};

#define CHILD_CHECK(cond, code, ...)                      \
  do {                                                    \
    if (!(cond)) {                                        \
      fprintf(stderr, "child check failed: %s: ", #cond); \
      fprintf(stderr, __VA_ARGS__);                       \
      fprintf(stderr, "\n");                              \
      return code;                                        \
    }                                                     \
  } while (0)

// The child: fill 3 x budget, make sure page `victim` is only in swap, arm a
// read fault on its slot; thread A touches it (SIGBUS expected) while
// threads B and C verify every other page, some of them also from swap.
// With `mapped_clean_before`, the victim was read back once (swapped in
// clean, mapped write-protected) and evicted again before its failing read.
int SwapInFaultChild(ReadFault fault, bool mapped_clean_before) {
  InstallSigbusHandler(kChildStraySigbus);
  const size_t budget = size_t{4} << 20;
  FaultySwapDev* dev = nullptr;
  auto created = create_faulty_runtime(test_options(budget, 4), &dev);
  CHILD_CHECK(created.ok(), 1, "%s", created.status().ToString().c_str());
  std::unique_ptr<Runtime> rt = std::move(*created);
  const uint64_t npages = 3 * budget / kPage;
  auto mapped = rt->Map(npages * kPage);
  CHILD_CHECK(mapped.ok(), 1, "%s", mapped.status().ToString().c_str());
  char* base = static_cast<char*>(*mapped);
  for (uint64_t p = 0; p < npages; p++) fill_page(base + p * kPage, p, 1);
  const uint64_t victim = 5;
  // Read everything else twice, so the victim (clean, untouched) is evicted.
  auto read_all_but_victim = [&]() -> int {
    for (int round = 0; round < 2; round++) {
      for (uint64_t p = 0; p < npages; p++) {
        if (p == victim) continue;
        CHILD_CHECK(check_page(base + p * kPage, p, 1) == -1, kChildOtherBad, "page %lu",
                    static_cast<unsigned long>(p));
      }
    }
    return 0;
  };
  if (int rc = read_all_but_victim(); rc != 0) return rc;
  if (mapped_clean_before) {
    const int64_t swapins = rt->GetStats().pgswapin;
    CHILD_CHECK(check_page(base + victim * kPage, victim, 1) == -1, kChildOtherBad,
                "the victim before the fault");
    CHILD_CHECK(rt->GetStats().pgswapin > swapins, kChildNoSlot,
                "the victim was resident: it was not swapped in clean");
    if (int rc = read_all_but_victim(); rc != 0) return rc;
  }
  std::optional<uint64_t> slot = dev->SlotHolding(first_word(victim, 1));
  CHILD_CHECK(slot.has_value(), kChildNoSlot, "page %lu is in no slot",
              static_cast<unsigned long>(victim));
  const Stats before = rt->GetStats();
  dev->FailReadsOfSlot(*slot, fault);

  std::atomic<int64_t> other_bad{-1};
  std::atomic<int> other_sigbus{0};
  std::atomic<bool> a_done{false};
  auto verifier = [&](uint64_t start, uint64_t step) {
    for (int round = 0; round < 2 || !a_done.load(); round++) {
      const bool bus = CatchSigbus([&] {
        for (uint64_t i = 0; i < npages; i++) {
          const uint64_t p = (start + i * step) % npages;
          if (p == victim) continue;
          if (check_page(base + p * kPage, p, 1) != -1) other_bad.store(static_cast<int64_t>(p));
        }
      });
      if (bus) other_sigbus++;
    }
  };
  std::thread b(verifier, npages / 2, 1);
  std::thread c(verifier, 7, npages - 1);  // backwards
  void* addr = nullptr;
  int a_sig = 0;
  bool a_bus = false;
  int a_wrong = -2;
  std::thread a([&] {
    a_bus = CatchSigbus(
        [&] {
          touch_read(base + victim * kPage);
          a_wrong = check_page(base + victim * kPage, victim, 1);
        },
        &addr, &a_sig);
    a_done = true;
  });
  // The touching thread must be done (with its SIGBUS) in well under a
  // second; if it is stuck, say why and end here (it cannot be joined).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!a_done.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!a_done.load()) {
    const Stats s = rt->GetStats();
    fprintf(stderr,
            "the thread touching page %lu (slot %lu) is stuck after 5 s: no SIGBUS; swapinerr=%ld "
            "(each failed swap-in counts: the fault is being retried in a loop)\ndevice: %s\n"
            "stats: %s\n",
            static_cast<unsigned long>(victim), static_cast<unsigned long>(*slot),
            static_cast<long>(s.swapinerr), dev->counters().ToString().c_str(),
            StatsString(s).c_str());
    _exit(kChildHang);
  }
  a.join();
  b.join();
  c.join();
  const Stats after = rt->GetStats();
  fprintf(stderr, "device: %s\nstats: %s\n", dev->counters().ToString().c_str(),
          StatsString(after).c_str());
  const int64_t fired = fault == ReadFault::kEIO ? dev->counters().injected_eio_reads.load()
                                                 : dev->counters().injected_short_reads.load();
  CHILD_CHECK(fired >= 1, kChildNotFired, "the read fault never fired");
  CHILD_CHECK(dev->counters().async_reads.load() >= 1, kChildStats,
              "no swap-in went through the asynchronous read path");
  CHILD_CHECK(a_bus, kChildNoSigbus,
              "touching the page whose swap-in failed returned normally (check_page=%d)", a_wrong);
  CHILD_CHECK(a_sig == SIGBUS, kChildNoSigbus, "signal %d, expected SIGBUS", a_sig);
  CHILD_CHECK(addr == base + victim * kPage, kChildWrongAddr, "SIGBUS at %p, expected %p", addr,
              static_cast<void*>(base + victim * kPage));
  CHILD_CHECK(other_sigbus.load() == 0, kChildOtherBad, "%d SIGBUS on other threads",
              other_sigbus.load());
  CHILD_CHECK(other_bad.load() == -1, kChildOtherBad, "page %ld is wrong",
              static_cast<long>(other_bad.load()));
  CHILD_CHECK(after.swapinerr - before.swapinerr == 1, kChildStats,
              "swapinerr went from %ld to %ld", static_cast<long>(before.swapinerr),
              static_cast<long>(after.swapinerr));
  // Reads of fault-around runs that cover the bad slot fail too, and are
  // retried page by page: `fired` may exceed 1, but only the victim's own
  // swap-in fails (swapinerr above).
  CHILD_CHECK(after.pgswapin > before.pgswapin, kChildStats,
              "the other threads read nothing from swap: the test proves little");

  // The page stays poisoned (its data is in the slot, but the runtime does
  // not retry): another thread touching it gets SIGBUS too.
  bool again = false;
  int again_sig = 0;
  int again_check = -2;
  const Stats before_retouch = rt->GetStats();
  std::thread d([&] {
    again = CatchSigbus(
        [&] {
          touch_read(base + victim * kPage);
          again_check = check_page(base + victim * kPage, victim, 1);
        },
        nullptr, &again_sig);
  });
  d.join();
  const Stats after_retouch = rt->GetStats();
  CHILD_CHECK(!again || again_sig == SIGBUS, kChildRetouch, "signal %d on the second touch",
              again_sig);
  CHILD_CHECK(
      again, kChildRetouch,
      "the poisoned page read without SIGBUS the second time: check_page=%d (-1: its "
      "data), zero=%d; faults %ld -> %ld, swapinerr %ld -> %ld, pgswapin %ld -> %ld",
      again_check, page_is_zero(base + victim * kPage) ? 1 : 0,
      static_cast<long>(before_retouch.faults), static_cast<long>(after_retouch.faults),
      static_cast<long>(before_retouch.swapinerr), static_cast<long>(after_retouch.swapinerr),
      static_cast<long>(before_retouch.pgswapin), static_cast<long>(after_retouch.pgswapin));

  // Discarding the poisoned page clears the poison: it reads zero, as
  // private anonymous memory does after MADV_DONTNEED.
  CHILD_CHECK(madvise(base + victim * kPage, kPage, MADV_DONTNEED) == 0, kChildRetouch,
              "madvise: %s", strerror(errno));
  bool discarded_bus = false;
  bool discarded_zero = false;
  std::thread e([&] {
    discarded_bus = CatchSigbus([&] { discarded_zero = page_is_zero(base + victim * kPage); });
  });
  e.join();
  CHILD_CHECK(!discarded_bus && discarded_zero, kChildRetouch,
              "after MADV_DONTNEED the poisoned page %s",
              discarded_bus ? "still raises SIGBUS" : "does not read zero");

  // Every other page still verifies; unmapping frees everything.
  for (uint64_t p = 0; p < npages; p++) {
    if (p == victim) continue;
    CHILD_CHECK(check_page(base + p * kPage, p, 1) == -1, kChildOtherBad, "page %lu at the end",
                static_cast<unsigned long>(p));
  }
  CHILD_CHECK(rt->Unmap(base).ok(), kChildUnmap, "unmap failed");
  const Stats end = rt->GetStats();
  CHILD_CHECK(end.swpginuse == 0 && end.swpgonly == 0 && end.free == end.npages, kChildStats,
              "after unmap: %s", StatsString(end).c_str());
  // A new region reads zero.
  auto m2 = rt->Map(64 * kPage);
  CHILD_CHECK(m2.ok(), kChildUnmap, "map after poison failed");
  for (uint64_t p = 0; p < 64; p++) {
    CHILD_CHECK(page_is_zero(static_cast<char*>(*m2) + p * kPage), kChildUnmap,
                "new region page %lu not zero", static_cast<unsigned long>(p));
  }
  return kChildOk;
}

struct SwapInCase {
  ReadFault fault;
  bool mapped_clean_before;

  friend void PrintTo(const SwapInCase& c, std::ostream* os) {
    *os << (c.fault == ReadFault::kEIO ? "EIO" : "short read")
        << (c.mapped_clean_before ? ", victim mapped clean before" : "");
  }
};

class SwapInFault : public ::testing::TestWithParam<SwapInCase> {};

TEST_P(SwapInFault, OnlyTheTouchingThreadGetsSigbus) {
  const SwapInCase c = GetParam();
  ChildResult r = RunInChild([&] { return SwapInFaultChild(c.fault, c.mapped_clean_before); },
                             std::chrono::seconds(60));
  EXPECT_FALSE(r.timed_out) << "the child hung: " << r.Describe();
  EXPECT_FALSE(r.exited(kChildHang)) << "the touching thread hung (no SIGBUS): " << r.Describe();
  EXPECT_TRUE(r.exited(kChildOk)) << r.Describe();
  EXPECT_THAT(r.output, HasSubstr("swap-in of slot")) << "the runtime logged no swap-in error";
}

INSTANTIATE_TEST_SUITE_P(
    FaultInject, SwapInFault,
    ::testing::Values(SwapInCase{ReadFault::kEIO, false}, SwapInCase{ReadFault::kShort, false},
                      SwapInCase{ReadFault::kEIO, true}, SwapInCase{ReadFault::kShort, true}),
    [](const auto& info) {
      return std::string(info.param.fault == ReadFault::kEIO ? "EIO" : "ShortRead") +
             (info.param.mapped_clean_before ? "AfterCleanMapping" : "");
    });

// A thread reading pages in order across the page whose slot fails: only
// that page may raise SIGBUS.  Sequential access is what makes the runtime
// read ahead, so reads of the pages before it cover the bad slot too; their
// own slots are fine and their data must come back.
int SequentialReaderChild() {
  InstallSigbusHandler(kChildStraySigbus);
  const size_t budget = size_t{4} << 20;
  FaultySwapDev* dev = nullptr;
  auto created = create_faulty_runtime(test_options(budget, 4), &dev);
  CHILD_CHECK(created.ok(), 1, "%s", created.status().ToString().c_str());
  std::unique_ptr<Runtime> rt = std::move(*created);
  const uint64_t npages = 3 * budget / kPage;
  char* base = static_cast<char*>(*rt->Map(npages * kPage));
  for (uint64_t p = 0; p < npages; p++) fill_page(base + p * kPage, p, 1);
  constexpr uint64_t kRun = 64, kVictim = 20;
  // Pages 0..63 only in swap (written once, never mapped clean).
  for (uint64_t p = kRun; p < npages; p++) {
    CHILD_CHECK(check_page(base + p * kPage, p, 1) == -1, kChildOtherBad, "page %lu",
                static_cast<unsigned long>(p));
  }
  std::optional<uint64_t> slot = dev->SlotHolding(first_word(kVictim, 1));
  CHILD_CHECK(slot.has_value(), kChildNoSlot, "page %lu is in no slot",
              static_cast<unsigned long>(kVictim));
  const Stats before = rt->GetStats();
  dev->FailReadsOfSlot(*slot, ReadFault::kEIO);
  std::vector<uint64_t> sigbus_pages, wrong_pages;
  std::atomic<bool> done{false};
  std::thread t([&] {
    for (uint64_t p = 0; p < kRun; p++) {
      int w = -2;
      if (CatchSigbus([&] {
            touch_read(base + p * kPage);
            w = check_page(base + p * kPage, p, 1);
          })) {
        sigbus_pages.push_back(p);
      } else if (w != -1) {
        wrong_pages.push_back(p);
      }
    }
    done = true;
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!done.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!done.load()) {
    fprintf(stderr, "the reader is stuck after 5 s (swapinerr=%ld)\n",
            static_cast<long>(rt->GetStats().swapinerr));
    _exit(kChildHang);
  }
  t.join();
  const Stats after = rt->GetStats();
  std::string sb, wr;
  for (uint64_t p : sigbus_pages) sb += " " + std::to_string(p);
  for (uint64_t p : wrong_pages) wr += " " + std::to_string(p);
  fprintf(stderr,
          "bad slot %lu holds page %lu; SIGBUS on pages:%s; wrong data on pages:%s; swapinerr "
          "+%ld, failed reads %ld\nstats: %s\n",
          static_cast<unsigned long>(*slot), static_cast<unsigned long>(kVictim), sb.c_str(),
          wr.c_str(), static_cast<long>(after.swapinerr - before.swapinerr),
          static_cast<long>(dev->counters().injected_eio_reads.load()), StatsString(after).c_str());
  CHILD_CHECK(dev->counters().injected_eio_reads.load() >= 1, kChildNotFired, "never fired");
  CHILD_CHECK(wrong_pages.empty(), kChildOtherBad, "pages read back wrong:%s", wr.c_str());
  CHILD_CHECK(sigbus_pages.size() == 1 && sigbus_pages[0] == kVictim, kChildOtherBad,
              "SIGBUS on pages%s; expected on page %lu only", sb.c_str(),
              static_cast<unsigned long>(kVictim));
  CHILD_CHECK(after.swapinerr - before.swapinerr == 1, kChildStats,
              "swapinerr +%ld, expected +1 (one page failed)",
              static_cast<long>(after.swapinerr - before.swapinerr));
  return kChildOk;
}

TEST(FaultInject, SwapInErrorHitsOnlyItsPageUnderSequentialReadAhead) {
  ChildResult r = RunInChild(SequentialReaderChild, std::chrono::seconds(60));
  EXPECT_FALSE(r.timed_out) << r.Describe();
  EXPECT_TRUE(r.exited(kChildOk)) << r.Describe();
}

// A real swap device of `pages` pages, its file in `dir`; the file goes
// with the device, which the caller destroys before `dir`.
void OpenRealDevice(const TempDir& dir, uint64_t pages, std::string* path,
                    std::unique_ptr<io::UringSwapDev>* dev) {
  io::SwapFileOptions so;
  so.path = dir.path() + "/swap";
  so.bytes = pages * kPage;
  auto opened = io::UringSwapDev::Open(so);
  ASSERT_TRUE(opened.ok()) << opened.status();
  *path = so.path;
  *dev = std::move(*opened);
}

// `n` page-aligned pages, freed when they go out of scope.
std::unique_ptr<char[], void (*)(void*)> AlignedPages(size_t n) {
  return {static_cast<char*>(aligned_alloc(kPage, n * kPage)), free};
}

// Waits for the one write in flight, whose cookie is `cookie`, and checks
// that it wrote `pages` pages in full.
void ReapOneWrite(io::SwapDev* dev, const int* cookie, uint64_t pages, uint64_t slot) {
  std::vector<io::Completion> done;
  while (done.empty()) dev->Reap(&done);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].cookie, cookie);
  EXPECT_EQ(done[0].result, static_cast<int64_t>(pages * kPage)) << "slot " << slot;
}

// Writes the pages of iov to slots slot, slot + 1, ... and waits until the
// write has completed, in full.
void WriteSlots(io::SwapDev* dev, uint64_t slot, const std::vector<iovec>& iov) {
  int cookie = 0;
  ASSERT_TRUE(dev->SubmitWrite(slot, iov.data(), static_cast<int>(iov.size()), &cookie).ok());
  ReapOneWrite(dev, &cookie, iov.size(), slot);
}

// The real device turns a short read into an error: the file is cut under it.
TEST(FaultInject, RealDeviceShortReadIsDataLoss) {
  TempDir dir("shortread");
  std::string path;
  std::unique_ptr<io::UringSwapDev> dev;
  ASSERT_NO_FATAL_FAILURE(OpenRealDevice(dir, 16, &path, &dev));
  const uint64_t last = dev->nslots();
  ASSERT_EQ(last, 15u);

  auto bufp = AlignedPages(2);
  char* buf = bufp.get();
  ASSERT_NE(buf, nullptr);
  fill_page(buf, 1, 1);
  fill_page(buf + kPage, 2, 1);
  ASSERT_NO_FATAL_FAILURE(WriteSlots(dev.get(), last - 1, {{buf, kPage}, {buf + kPage, kPage}}));

  auto rbufp = AlignedPages(2);
  char* rbuf = rbufp.get();
  ASSERT_NE(rbuf, nullptr);
  iovec r[2] = {{rbuf, kPage}, {rbuf + kPage, kPage}};
  ASSERT_TRUE(dev->Read(last - 1, r, 2).ok());
  EXPECT_EQ(check_page(rbuf, 1, 1), -1);
  EXPECT_EQ(check_page(rbuf + kPage, 2, 1), -1);

  // Cut the last slot off the file: a read of it, or across it, is short.
  const int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(last * kPage)), 0);
  close(fd);
  absl::Status st = dev->Read(last - 1, r, 2);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("short swap read"));
  st = dev->Read(last, r, 1);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  // Out of range is refused before any I/O.
  EXPECT_EQ(dev->Read(last + 1, r, 1).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(dev->Read(0, r, 1).code(), absl::StatusCode::kOutOfRange);

  dev.reset();
  struct stat sb;
  EXPECT_NE(stat(path.c_str(), &sb), 0) << "the swap file was not removed";
}

// The real device with its buffer registered: I/Os of pages in a row inside
// it go as fixed-buffer I/Os, the others as vectored ones, and each moves
// the right pages to the right slots.
TEST(FaultInject, RealDeviceRegisteredBufferMovesTheRightData) {
  TempDir dir("fixedbuf");
  std::string path;
  std::unique_ptr<io::UringSwapDev> dev;
  ASSERT_NO_FATAL_FAILURE(OpenRealDevice(dir, 32, &path, &dev));
  constexpr int kBuf = 8;
  auto bufp = AlignedPages(kBuf);
  auto otherp = AlignedPages(4);
  char* buf = bufp.get();
  char* other = otherp.get();
  ASSERT_NE(buf, nullptr);
  ASSERT_NE(other, nullptr);
  dev->RegisterBuffer(buf, kBuf * kPage);
  auto page = [&](char* base, int i) { return iovec{base + i * kPage, kPage}; };

  // Slots 1-3: three pages in a row of the buffer (one fixed write).
  for (int i = 0; i < 3; i++) fill_page(buf + (2 + i) * kPage, 10 + i, 1);
  ASSERT_NO_FATAL_FAILURE(WriteSlots(dev.get(), 1, {page(buf, 2), page(buf, 3), page(buf, 4)}));
  // Slots 4-5: two pages of the buffer, not in a row.
  fill_page(buf + 6 * kPage, 20, 1);
  fill_page(buf + 0 * kPage, 21, 1);
  ASSERT_NO_FATAL_FAILURE(WriteSlots(dev.get(), 4, {page(buf, 6), page(buf, 0)}));
  // Slots 6-7: memory outside the buffer.
  fill_page(other, 30, 1);
  fill_page(other + kPage, 31, 1);
  ASSERT_NO_FATAL_FAILURE(WriteSlots(dev.get(), 6, {page(other, 0), page(other, 1)}));

  // Read them back: into the buffer in a row, and outside it.
  memset(buf, 0, kBuf * kPage);
  std::vector<iovec> r;
  for (int i = 0; i < 7; i++) r.push_back(page(buf, i + 1));
  ASSERT_TRUE(dev->Read(1, r.data(), 7).ok());
  const std::pair<int, int> want[7] = {{1, 10}, {2, 11}, {3, 12}, {4, 20},
                                       {5, 21}, {6, 30}, {7, 31}};
  for (const auto& [i, tag] : want) EXPECT_EQ(check_page(buf + i * kPage, tag, 1), -1) << i;
  memset(other, 0, 4 * kPage);
  iovec ro[2] = {page(other, 0), page(other, 1)};
  ASSERT_TRUE(dev->Read(2, ro, 2).ok());
  EXPECT_EQ(check_page(other, 11, 1), -1);
  EXPECT_EQ(check_page(other + kPage, 12, 1), -1);

  // An asynchronous read on the reader's ring, into the buffer.
  ASSERT_GE(dev->TakeReadCompletions(), 0);
  memset(buf, 0, kBuf * kPage);
  iovec ra[2] = {page(buf, 5), page(buf, 6)};
  int cookie = 0;
  ASSERT_TRUE(dev->SubmitRead(4, ra, 2, &cookie).ok());
  std::vector<io::Completion> done;
  for (int spins = 0; done.empty() && spins < 100000; spins++) dev->ReapReads(&done);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].result, static_cast<int64_t>(2 * kPage));
  EXPECT_EQ(check_page(buf + 5 * kPage, 20, 1), -1);
  EXPECT_EQ(check_page(buf + 6 * kPage, 21, 1), -1);

  // A short read into the buffer is still an error.
  const int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(3 * kPage)), 0);
  close(fd);
  absl::Status st = dev->Read(2, r.data(), 2);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;

  dev.reset();
}

// Whether slot `slot` of the real device holds page `tag` (a synchronous
// read, on a ring of its own: it reaps nothing of the writes), checked
// until it does or `wait` has passed.
bool SlotHolds(io::SwapDev* dev, uint64_t slot, uint64_t tag, absl::Duration wait) {
  auto bufp = AlignedPages(1);
  char* buf = bufp.get();
  const absl::Time deadline = absl::Now() + wait;
  bool holds = false;
  for (;;) {
    iovec v{buf, kPage};
    holds = dev->Read(slot, &v, 1).ok() && check_page(buf, tag, 1) == -1;
    if (holds || absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return holds;
}

// Plugged writes that add up to less than 64 KiB are held until a larger
// write or UnplugWrites starts them; every one lands where it should.
TEST(FaultInject, RealDevicePluggedWritesAreHeldUntilUnplugged) {
  TempDir dir("plug");
  std::string path;
  std::unique_ptr<io::UringSwapDev> dev;
  ASSERT_NO_FATAL_FAILURE(OpenRealDevice(dir, 64, &path, &dev));
  constexpr int kPages = 20;
  auto bufp = AlignedPages(kPages);
  char* buf = bufp.get();
  ASSERT_NE(buf, nullptr);
  for (int i = 0; i < kPages; i++) fill_page(buf + i * kPage, 100 + i, 1);
  int cookies[5] = {};
  // Each write's iovecs stay valid until it completes (the device's
  // contract): a held write reads them only when it is submitted.
  std::vector<iovec> iovs[5];
  auto write = [&](uint64_t slot, int first, int n, int* cookie) {
    std::vector<iovec>& v = iovs[cookie - cookies];
    for (int i = 0; i < n; i++) v.push_back({buf + (first + i) * kPage, kPage});
    return dev->SubmitWrite(slot, v.data(), n, cookie);
  };

  // Two short writes, held while plugged: nothing reaches the file.
  dev->PlugWrites();
  ASSERT_TRUE(write(1, 0, 1, &cookies[0]).ok());
  ASSERT_TRUE(write(3, 1, 2, &cookies[1]).ok());
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(SlotHolds(dev.get(), 1, 100, absl::ZeroDuration())) << "a plugged write started";
  EXPECT_FALSE(SlotHolds(dev.get(), 4, 102, absl::ZeroDuration())) << "a plugged write started";
  // Unplugging starts them.
  dev->UnplugWrites();
  ASSERT_TRUE(SlotHolds(dev.get(), 1, 100, absl::Seconds(10)));
  ASSERT_TRUE(SlotHolds(dev.get(), 3, 101, absl::Seconds(10)));
  ASSERT_TRUE(SlotHolds(dev.get(), 4, 102, absl::Seconds(10)));

  // A full 64 KiB write is not held, and starts the short one held before it.
  dev->PlugWrites();
  ASSERT_TRUE(write(10, 3, 1, &cookies[2]).ok());
  ASSERT_TRUE(write(20, 4, 16, &cookies[3]).ok());
  ASSERT_TRUE(SlotHolds(dev.get(), 10, 103, absl::Seconds(10)));
  ASSERT_TRUE(SlotHolds(dev.get(), 20, 104, absl::Seconds(10)));
  ASSERT_TRUE(SlotHolds(dev.get(), 35, 119, absl::Seconds(10)));
  // Unplugged, a short write starts at once.
  dev->UnplugWrites();
  ASSERT_TRUE(write(40, 0, 1, &cookies[4]).ok());
  ASSERT_TRUE(SlotHolds(dev.get(), 40, 100, absl::Seconds(10)));

  // Every write completes once, in full (each has landed: none is missing).
  std::vector<io::Completion> done;
  while (done.size() < 5) dev->Reap(&done);
  ASSERT_EQ(done.size(), 5u);
  const int64_t want[5] = {1, 2, 1, 16, 1};
  for (const io::Completion& c : done) {
    const int i = static_cast<int>(static_cast<int*>(c.cookie) - cookies);
    ASSERT_TRUE(i >= 0 && i < 5);
    EXPECT_EQ(c.result, want[i] * static_cast<int64_t>(kPage)) << "write " << i;
  }

  dev.reset();
}

// A submission the kernel refuses (no memory for the request) is retried,
// and one still refused after that is never given up: a write goes with
// the next submission, and a read's ring is closed, so the read never lands
// in memory its caller has moved on from, nor completes another read.
TEST(FaultInject, RealDeviceRefusedSubmissionsAreNeverLost) {
  TempDir dir("refused");
  std::string path;
  std::unique_ptr<io::UringSwapDev> dev;
  ASSERT_NO_FATAL_FAILURE(OpenRealDevice(dir, 16, &path, &dev));
  auto bufp = AlignedPages(4);
  char* buf = bufp.get();
  ASSERT_NE(buf, nullptr);
  fill_page(buf, 200, 1);
  fill_page(buf + kPage, 201, 1);

  // Refused a few times: retried, and written.
  dev->InjectSubmitFailures(3);
  ASSERT_NO_FATAL_FAILURE(WriteSlots(dev.get(), 1, {{buf, kPage}}));
  // Refused for good: queued all the same, and started by the next
  // submission.
  dev->InjectSubmitFailures(1 << 30);
  iovec w{buf + kPage, kPage};
  int cookie = 0;
  ASSERT_TRUE(dev->SubmitWrite(2, &w, 1, &cookie).ok());
  dev->InjectSubmitFailures(0);
  dev->UnplugWrites();
  ASSERT_NO_FATAL_FAILURE(ReapOneWrite(dev.get(), &cookie, 1, 2));

  // A read refused a few times is retried.
  char* r1 = buf + 2 * kPage;
  char* r2 = buf + 3 * kPage;
  iovec v1{r1, kPage}, v2{r2, kPage};
  dev->InjectSubmitFailures(3);
  ASSERT_TRUE(dev->Read(1, &v1, 1).ok());
  EXPECT_EQ(check_page(r1, 200, 1), -1);
  // A read refused for good fails; its memory is never written after that.
  memset(r1, 0x5A, kPage);
  dev->InjectSubmitFailures(1 << 30);
  absl::Status st = dev->Read(1, &v1, 1);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  dev->InjectSubmitFailures(0);
  ASSERT_TRUE(dev->Read(2, &v2, 1).ok());
  EXPECT_EQ(check_page(r2, 201, 1), -1);
  absl::SleepFor(absl::Milliseconds(50));
  for (uint64_t i = 0; i < kPage; i++) {
    ASSERT_EQ(static_cast<unsigned char>(r1[i]), 0x5A) << "the refused read landed, byte " << i;
  }

  dev.reset();
}

// An I/O refused for good is queued all the same, and goes once the kernel
// takes it though no other submission comes to carry it: SubmitQueued (the
// page daemon, at every wake) starts a write, SubmitQueuedReads (the fault
// reader, while it returns true) a read whose completion ReapReads returns.
TEST(FaultInject, RealDeviceRefusedIoIsSubmittedLater) {
  TempDir dir("queued");
  std::string path;
  std::unique_ptr<io::UringSwapDev> dev;
  ASSERT_NO_FATAL_FAILURE(OpenRealDevice(dir, 16, &path, &dev));
  const int readfd = dev->TakeReadCompletions();
  ASSERT_GE(readfd, 0);
  auto bufp = AlignedPages(3);
  char* buf = bufp.get();
  ASSERT_NE(buf, nullptr);
  fill_page(buf, 300, 1);
  ASSERT_NO_FATAL_FAILURE(WriteSlots(dev.get(), 3, {{buf, kPage}}));
  fill_page(buf + kPage, 301, 1);
  char* r = buf + 2 * kPage;
  memset(r, 0, kPage);

  dev->InjectSubmitFailures(1 << 30);
  iovec w{buf + kPage, kPage}, v{r, kPage};
  int wcookie = 0, rcookie = 0;
  ASSERT_TRUE(dev->SubmitWrite(4, &w, 1, &wcookie).ok());
  ASSERT_TRUE(dev->SubmitRead(3, &v, 1, &rcookie).ok());
  // Refused again: still queued.
  dev->SubmitQueued();
  EXPECT_TRUE(dev->SubmitQueuedReads());
  dev->InjectSubmitFailures(0);
  dev->SubmitQueued();
  EXPECT_FALSE(dev->SubmitQueuedReads());

  std::vector<io::Completion> done;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (done.empty() && absl::Now() < deadline) {
    pollfd p{readfd, POLLIN, 0};
    poll(&p, 1, 10);
    dev->ReapReads(&done);
  }
  ASSERT_EQ(done.size(), 1u) << "the refused read never started";
  EXPECT_EQ(done[0].cookie, &rcookie);
  EXPECT_EQ(done[0].result, static_cast<int64_t>(kPage));
  EXPECT_EQ(check_page(r, 300, 1), -1);
  // Read back on a ring of its own, which carries nothing queued on the
  // shared one.
  ASSERT_TRUE(SlotHolds(dev.get(), 4, 301, absl::Seconds(10))) << "the refused write never started";
  ASSERT_NO_FATAL_FAILURE(ReapOneWrite(dev.get(), &wcookie, 1, 4));

  dev.reset();
}

// A swap-in read the kernel refuses for good stays queued on the fault
// reader's ring, and the reader submits it once the kernel takes it,
// though the faulting thread, blocked on it, starts no other read that
// would carry it.  The page daemon's writes refused meanwhile go too.
TEST(FaultInject, RefusedSwapInReadStartsOnceTheKernelTakesIt) {
  io::UringSwapDev* real = nullptr;
  Options o = FaultOptions();
  o.in_thread_faults = false;  // the fault reader starts the swap-ins
  auto created = internal::CreateWithSwapDev(o, [&](std::unique_ptr<io::SwapDev> d) {
    real = dynamic_cast<io::UringSwapDev*>(d.get());
    return d;
  });
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_NE(real, nullptr);
  std::unique_ptr<Runtime> rt = std::move(*created);
  Mapped m = MapRegion(rt.get(), 3 * FaultBudget());
  WriteAll(m);
  absl::SleepFor(absl::Milliseconds(300));  // the page daemon's last pass

  real->InjectSubmitFailures(1 << 30);
  std::atomic<bool> done{false};
  std::atomic<int64_t> bad{0};
  std::thread t([&] {
    bad = check_page(m.page(0), 0, m.gen[0]);
    done = true;
  });
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(done.load()) << "page 0 was resident: no read was refused";
  real->InjectSubmitFailures(0);
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (!done.load() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_TRUE(done.load()) << "the refused swap-in read was not submitted again";
  // Otherwise the read of a page of another chunk carries it.
  if (!done.load()) (void)check_page(m.page(1031), 1031, m.gen[1031]);
  t.join();
  EXPECT_EQ(bad.load(), -1);
  EXPECT_EQ(VerifyAll(m), -1);
  ASSERT_TRUE(rt->Unmap(m.base, m.npages * kPage).ok());
}

// A buffer the kernel will not register (a shared mapping of a file on a
// disk filesystem, which cannot be pinned for long) leaves the device doing
// vectored I/O of it, with the same data.
TEST(FaultInject, RealDeviceUnregisterableBufferFallsBack) {
  TempDir dir("nofixedbuf");
  std::string path;
  std::unique_ptr<io::UringSwapDev> dev;
  ASSERT_NO_FATAL_FAILURE(OpenRealDevice(dir, 16, &path, &dev));
  const std::string bufpath = dir.path() + "/buf";
  const int mfd = open(bufpath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(mfd, 0);
  unlink(bufpath.c_str());  // kept by the descriptor and the mapping
  ASSERT_EQ(ftruncate(mfd, 4 * kPage), 0);
  void* m = mmap(nullptr, 4 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  ASSERT_NE(m, MAP_FAILED);
  char* buf = static_cast<char*>(m);
  dev->RegisterBuffer(buf, 4 * kPage);

  fill_page(buf, 40, 1);
  fill_page(buf + kPage, 41, 1);
  ASSERT_NO_FATAL_FAILURE(WriteSlots(dev.get(), 3, {{buf, kPage}, {buf + kPage, kPage}}));
  iovec r[2] = {{buf + 2 * kPage, kPage}, {buf + 3 * kPage, kPage}};
  ASSERT_TRUE(dev->Read(3, r, 2).ok());
  EXPECT_EQ(check_page(buf + 2 * kPage, 40, 1), -1);
  EXPECT_EQ(check_page(buf + 3 * kPage, 41, 1), -1);

  dev.reset();
  munmap(m, 4 * kPage);
  close(mfd);
}

// ---- slow completions ----

TEST(FaultInject, SlowCompletionsNoDeadlock) {
  const size_t budget = size_t{4} << 20;
  FaultySwapDev* dev;
  auto rt = make_faulty_runtime(test_options(budget, 4), &dev);
  dev->SetWriteLatency(milliseconds(20), milliseconds(50));
  dev->SetReadLatency(milliseconds(20), milliseconds(50));
  const auto run_for = small_scale() ? milliseconds(1500) : milliseconds(4000);
  constexpr int kThreads = 4;
  std::atomic<int64_t> bad{-1};
  std::vector<int64_t> ops(kThreads, 0);
  Runtime* prt = rt.get();

  RunWithWatchdog(
      std::chrono::seconds(small_scale() ? 240 : 60),
      [&] {
        Mapped m = MapRegion(prt, 2 * budget);
        WriteAll(m);  // half of it goes to swap through the slow device
        std::vector<std::thread> ts;
        const auto stop_at = std::chrono::steady_clock::now() + run_for;
        for (int t = 0; t < kThreads; t++) {
          ts.emplace_back([&, t] {
            std::mt19937_64 rng(77 + static_cast<uint64_t>(t));
            const uint64_t mine = m.npages / kThreads;
            while (std::chrono::steady_clock::now() < stop_at) {
              const uint64_t p = (rng() % mine) * kThreads + static_cast<uint64_t>(t);
              if (check_page(m.page(p), p, m.gen[p]) != -1) bad.store(static_cast<int64_t>(p));
              if (rng() % 2 == 0) {
                m.gen[p]++;
                fill_page(m.page(p), p, m.gen[p]);
              }
              ops[static_cast<size_t>(t)]++;
            }
          });
        }
        for (auto& th : ts) th.join();
        // The rest at full speed.
        dev->SetWriteLatency(milliseconds(0), milliseconds(0));
        dev->SetReadLatency(milliseconds(0), milliseconds(0));
        EXPECT_EQ(VerifyAll(m), -1);
        ASSERT_TRUE(prt->Unmap(m.base).ok());
      },
      [&] {
        return "stats: " + StatsString(prt->GetStats()) + " device: " + dev->counters().ToString();
      });

  EXPECT_EQ(bad.load(), -1) << "a page read back wrong under slow I/O";
  const FaultyCounters& c = dev->counters();
  const Stats s = rt->GetStats();
  SCOPED_TRACE("device: " + c.ToString() + "\nstats: " + StatsString(s));
  EXPECT_GT(c.delayed_completions.load(), 10) << "write latency was never applied";
  EXPECT_GT(c.delayed_reads.load(), 10) << "read latency was never applied";
  for (int t = 0; t < kThreads; t++) EXPECT_GT(ops[static_cast<size_t>(t)], 10) << "thread " << t;
  EXPECT_EQ(s.swapouterr, 0);
  EXPECT_EQ(s.swpginuse, 0);
  EXPECT_EQ(s.free, s.npages);
}

}  // namespace
}  // namespace uvmrt::testing
