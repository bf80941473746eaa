// regionevent_test: a region behaves as private anonymous memory under what
// the application can do to it: MADV_DONTNEED, MADV_REMOVE, munmap,
// mprotect, mremap and fork.  Frames and slots are released, and nothing
// stale is read back.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace uvmrt::testing {
namespace {

constexpr int kChildGotSegv = 77;

using Fixture = RegionFixture;

void discard_and_check(int advice) {
  Fixture f;
  f.write_all(1);  // the first pages are in swap now, the last ones resident
  const Stats before = f.rt->GetStats();
  ASSERT_GT(before.swpginuse, 0);
  // Discard a run in swap and a run that is resident.
  const uint64_t swapped = 8, resident = f.npages - 40, n = 16;
  ASSERT_EQ(madvise(f.base + swapped * kPage, n * kPage, advice), 0);
  ASSERT_EQ(madvise(f.base + resident * kPage, n * kPage, advice), 0);
  // Read the discarded pages at once (the stale-MINOR-fault pitfall).
  for (uint64_t p = 0; p < n; p++) {
    ASSERT_TRUE(page_is_zero(f.base + (resident + p) * kPage)) << "resident page " << p;
    ASSERT_TRUE(page_is_zero(f.base + (swapped + p) * kPage)) << "swapped page " << p;
  }
  // Neighbours keep their data, through another round of eviction.
  for (int round = 0; round < 2; round++) {
    for (uint64_t p = 0; p < f.npages; p++) {
      const bool gone = (p >= swapped && p < swapped + n) || (p >= resident && p < resident + n);
      if (gone) {
        ASSERT_TRUE(page_is_zero(f.base + p * kPage)) << "page " << p << " round " << round;
      } else {
        ASSERT_EQ(check_page(f.base + p * kPage, p, 1), -1) << "page " << p << " round " << round;
      }
    }
  }
  ASSERT_TRUE(f.rt->Unmap(f.base).ok());
  const Stats after = f.rt->GetStats();
  EXPECT_EQ(after.swpginuse, 0);
  EXPECT_EQ(after.swpgonly, 0);
  EXPECT_EQ(after.free, after.npages);
  EXPECT_EQ(f.rt->KernelResidentBytes(), 0);
}

TEST(RegionEvents, DontneedReadsZeroNeighboursKeepData) {
  discard_and_check(MADV_DONTNEED);
}

TEST(RegionEvents, RemoveReadsZeroNeighboursKeepData) {
  discard_and_check(MADV_REMOVE);
}

TEST(RegionEvents, DontneedReleasesSlotsAndFrames) {
  Fixture f;
  f.write_all(1);
  const Stats before = f.rt->GetStats();
  ASSERT_EQ(madvise(f.base, f.bytes, MADV_DONTNEED), 0);
  for (uint64_t p = 0; p < f.npages; p += 97) ASSERT_TRUE(page_is_zero(f.base + p * kPage));
  // Pages in a pageout write at the discard are freed when it completes.
  for (int i = 0; i < 5000 && f.rt->GetStats().paging != 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const Stats after = f.rt->GetStats();
  EXPECT_LT(after.swpginuse, before.swpginuse / 4);
  EXPECT_EQ(after.swpgonly, 0);
  EXPECT_LE(f.rt->KernelResidentBytes(), static_cast<int64_t>(f.npages / 97 + 1) * 4096);
}

// What allocators do: free (MADV_DONTNEED) and reuse, over and over, with
// eviction between; every reuse must read zeros, never an old generation.
TEST(RegionEvents, RepeatedDiscardAndReuse) {
  Fixture f;
  const uint64_t run = 256;
  for (int gen = 1; gen <= 4; gen++) {
    for (uint64_t start = 0; start + run <= f.npages; start += run) {
      for (uint64_t p = start; p < start + run; p++) {
        ASSERT_TRUE(page_is_zero(f.base + p * kPage)) << "gen " << gen << " page " << p;
        fill_page(f.base + p * kPage, p, gen);
      }
    }
    for (uint64_t p = 0; p < (f.npages / run) * run; p++) {
      ASSERT_EQ(check_page(f.base + p * kPage, p, gen), -1) << "gen " << gen << " page " << p;
    }
    ASSERT_EQ(madvise(f.base, f.bytes, MADV_DONTNEED), 0);
  }
}

// The first word of a page the threads race on by design, read and written
// plainly and not instrumented by ThreadSanitizer: an atomic access would
// fault inside the sanitizer's runtime, where an in-thread fault handler
// cannot run.
__attribute__((no_sanitize("thread"))) uint64_t load_word(const void* p) {
  return *static_cast<const volatile uint64_t*>(p);
}
__attribute__((no_sanitize("thread"))) void store_word(void* p, uint64_t v) {
  *static_cast<volatile uint64_t*>(p) = v;
}

// Whether the page at p is mapped in this process's page table (pagemap's
// present bit).
bool page_present(int pagemap, const void* p) {
  uint64_t e = 0;
  const off_t off = static_cast<off_t>(reinterpret_cast<uintptr_t>(p) / kPage * 8);
  if (pread(pagemap, &e, sizeof(e), off) != static_cast<ssize_t>(sizeof(e))) return true;
  return (e >> 63) != 0;
}

// A page discarded while other threads touch it reads zero once madvise
// returns, never the old data.  The race: the page daemon unmaps the page
// (deactivation), a touching thread faults on it, and the discard's event
// is read with that fault, or before it is handled.  madvise returns once
// the event is read; a mapping of the old frame then, before the runtime
// has discarded it, would show the old data.  A thread writing the rest of
// the region keeps the daemon busy; the discarding thread waits until the
// page is unmapped (pagemap) before each madvise.
TEST(RegionEvents, DiscardRacingTouchesReadsZero) {
  Fixture f(size_t{2} << 20);
  const int pagemap = open("/proc/self/pagemap", O_RDONLY);
  ASSERT_GE(pagemap, 0) << "open /proc/self/pagemap: " << strerror(errno);
  char* page = f.base;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; t++) {
    threads.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) (void)load_word(page);
    });
  }
  threads.emplace_back([&] {
    for (char gen = 1; !stop.load(std::memory_order_relaxed); gen++) {
      for (uint64_t p = 1; p < f.npages && !stop.load(std::memory_order_relaxed); p++) {
        f.base[p * kPage] = gen;
      }
    }
  });
  int races = 0, stale = 0;
  uint64_t first_stale = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(4);
  for (uint64_t i = 1; races < 200 && std::chrono::steady_clock::now() < deadline; i++) {
    store_word(page, i);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
    bool unmapped = false;
    while (!unmapped && std::chrono::steady_clock::now() < give_up) {
      unmapped = !page_present(pagemap, page);
    }
    if (!unmapped) continue;
    races++;
    if (madvise(page, kPage, MADV_DONTNEED) != 0) {
      ADD_FAILURE() << "madvise: " << strerror(errno);
      break;
    }
    const uint64_t v = load_word(page);
    if (v != 0 && stale++ == 0) first_stale = v;
  }
  stop.store(true);
  for (std::thread& t : threads) t.join();
  close(pagemap);
  EXPECT_EQ(stale, 0) << stale << " of " << races
                      << " discards read old data (first: " << first_stale << ")";
  // Sanitized builds run too slowly to be held to a number.
  if (!kSanitized) {
    EXPECT_GE(races, 5) << "the page daemon unmapped the page too seldom for the test to mean much";
  }
}

// Two threads write the pages `mine(t, p)` gives each thread t, generation
// after generation, and verify them through eviction; any page found
// without its data is counted, and the first one remembered.
struct Lost {
  int pages = 0;
  int64_t first = -1;
};
Lost write_and_verify(const Fixture& f, uint64_t gens,
                      const std::function<bool(uint64_t t, uint64_t p)>& mine) {
  std::atomic<int> bad{0};
  std::atomic<int64_t> first_bad{-1};
  auto writer = [&](uint64_t t) {
    for (uint64_t gen = 1; gen <= gens; gen++) {
      for (int verify = 0; verify < 2; verify++) {
        for (uint64_t p = 0; p < f.npages; p++) {
          if (!mine(t, p)) continue;
          if (verify == 0) {
            fill_page(f.base + p * kPage, p, gen);
          } else if (check_page(f.base + p * kPage, p, gen) != -1 && bad++ == 0) {
            first_bad = static_cast<int64_t>(p);
          }
        }
      }
    }
  };
  std::thread w0(writer, 0), w1(writer, 1);
  w0.join();
  w1.join();
  return Lost{bad.load(), first_bad.load()};
}

// The application discards pages while the page daemon deactivates their
// neighbours, with one MADV_DONTNEED call per window of pages that spans
// them: the runtime must tell the two calls' events apart, or one of them
// takes the other's pages (an application discard taken for the daemon's
// leaves the daemon's own event to discard its whole window).  Odd 64 KiB
// blocks are discarded over and over while two threads write the even
// ones, twice the budget, twice, and verify them through eviction.
TEST(RegionEvents, DiscardsAmongDeactivatedPagesKeepNeighbours) {
  Fixture f;
  constexpr uint64_t kBlock = 16;  // pages
  const uint64_t nblocks = f.npages / kBlock;
  std::atomic<bool> stop{false};
  std::thread discarder([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      for (uint64_t b = 1; b < nblocks; b += 2) {
        if (madvise(f.base + b * kBlock * kPage, kBlock * kPage, MADV_DONTNEED) != 0) return;
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    }
  });
  // Thread t writes blocks 2t, 2t + 4, ...
  const Lost lost =
      write_and_verify(f, 2, [&](uint64_t t, uint64_t p) { return (p / kBlock) % 4 == 2 * t; });
  stop.store(true);
  discarder.join();
  EXPECT_EQ(lost.pages, 0) << lost.pages << " pages lost their data, the first page " << lost.first;
  EXPECT_GT(f.rt->GetStats().pgswapout, 0) << "nothing was evicted";
}

// The application unmaps part of a region (one page in each 64-page
// window, a window at a time) while the page daemon deactivates pages
// around it.  A deactivation call that waits for its event to be read
// while the munmap shortens its mapping makes the kernel go on from the
// next mapping, with an event inside the range of the one before: that
// event is the daemon's, and taken for an application discard it would
// discard live pages.  Two threads write every other page twice the budget,
// twice, and verify them through eviction.
TEST(RegionEvents, MunmapOfPartsUnderDeactivationsKeepsData) {
  Fixture f;
  constexpr uint64_t kWindow = 64;  // pages
  const uint64_t nwindows = f.npages / kWindow;
  auto hole = [&](uint64_t p) { return p % kWindow == kWindow / 2; };
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> unmapped{0};
  std::thread unmapper([&] {
    for (uint64_t w = 0; w < nwindows && !stop.load(std::memory_order_relaxed); w++) {
      if (munmap(f.base + (w * kWindow + kWindow / 2) * kPage, kPage) != 0) return;
      unmapped++;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  const Lost lost =
      write_and_verify(f, 3, [&](uint64_t t, uint64_t p) { return p % 2 == t && !hole(p); });
  stop.store(true);
  unmapper.join();
  EXPECT_EQ(lost.pages, 0) << lost.pages << " pages lost their data, the first page " << lost.first;
  EXPECT_GT(unmapped.load(), nwindows / 4) << "few parts were unmapped while the threads ran";
  EXPECT_GT(f.rt->GetStats().pgswapout, 0) << "nothing was evicted";
}

// A part of a region made read-only reads back its data through eviction
// (swap-ins into a read-only mapping), and takes writes again once it is
// writable.
TEST(RegionEvents, MprotectedPartReadsBack) {
  Fixture f;
  f.write_all(1);
  const uint64_t first = f.npages / 4, n = f.npages / 2;
  ASSERT_EQ(mprotect(f.base + first * kPage, n * kPage, PROT_READ), 0);
  EXPECT_EQ(f.first_bad(1), -1) << "read back through a read-only part";
  ASSERT_EQ(mprotect(f.base + first * kPage, n * kPage, PROT_READ | PROT_WRITE), 0);
  f.write_all(2);
  EXPECT_EQ(f.first_bad(2), -1);
  EXPECT_GT(f.rt->GetStats().pgswapin, 0) << "nothing was read back from swap";
}

// A first pass over a region with a read-only part that was never touched:
// the zero-fill runs of the sequential writes before it stop at the part,
// whose mapping is another one now (a mapping call spans one mapping), and
// the part reads zero.  A run that crossed into it failed whole, and every
// page up to the part took a fault of its own.
TEST(RegionEvents, FirstPassUpToAReadOnlyPart) {
  Fixture f;
  const uint64_t first = 100, n = 10;
  ASSERT_EQ(mprotect(f.base + first * kPage, n * kPage, PROT_READ), 0);
  const Stats before = f.rt->GetStats();
  for (uint64_t p = 0; p < first; p++) fill_page(f.base + p * kPage, p, 1);
  EXPECT_LE(f.rt->GetStats().faults - before.faults, 4) << "for " << first << " pages in a row";
  for (uint64_t p = first; p < first + n; p++) {
    ASSERT_TRUE(page_is_zero(f.base + p * kPage)) << "page " << p;
  }
  for (uint64_t p = first + n; p < f.npages; p++) fill_page(f.base + p * kPage, p, 1);
  for (uint64_t p = 0; p < f.npages; p++) {
    if (p >= first && p < first + n) continue;
    ASSERT_EQ(check_page(f.base + p * kPage, p, 1), -1) << "page " << p;
  }
}

// The same with mprotect: one page in each window goes read-only and back,
// a window at a time, splitting and merging the region's mapping while the
// page daemon unmaps around it.  (A page flipped back within tens of
// microseconds, faster than the reader reads, is left to chance:
// SelfRemoves.)
TEST(RegionEvents, MprotectOfPartsUnderDeactivationsKeepsData) {
  Fixture f;
  constexpr uint64_t kWindow = 64;  // pages
  const uint64_t nwindows = f.npages / kWindow;
  auto guard = [&](uint64_t p) { return p % kWindow == kWindow / 2; };
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> changes{0};
  std::thread protector([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      for (int prot : {PROT_READ, PROT_READ | PROT_WRITE}) {
        for (uint64_t w = 0; w < nwindows; w++) {
          if (mprotect(f.base + (w * kWindow + kWindow / 2) * kPage, kPage, prot) != 0) return;
          changes++;
          std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
      }
    }
  });
  const Lost lost =
      write_and_verify(f, 2, [&](uint64_t t, uint64_t p) { return p % 2 == t && !guard(p); });
  stop.store(true);
  protector.join();
  EXPECT_EQ(lost.pages, 0) << lost.pages << " pages lost their data, the first page " << lost.first;
  EXPECT_GT(changes.load(), nwindows / 4) << "few mappings changed while the threads ran";
  EXPECT_GT(f.rt->GetStats().pgswapout, 0) << "nothing was evicted";
}

TEST(RegionEvents, MunmapOfPartReleasesIt) {
  Fixture f;
  f.write_all(2);
  const Stats before = f.rt->GetStats();
  const uint64_t first = f.npages / 4, n = f.npages / 2;
  ASSERT_EQ(munmap(f.base + first * kPage, n * kPage), 0);
  // munmap returns once the runtime has read the event, not handled it.
  Stats mid = f.rt->GetStats();
  for (int i = 0; i < 500 && mid.swpginuse >= before.swpginuse; i++) {
    usleep(10000);
    mid = f.rt->GetStats();
  }
  EXPECT_LT(mid.swpginuse, before.swpginuse);
  for (uint64_t p = 0; p < f.npages; p++) {
    if (p >= first && p < first + n) continue;
    ASSERT_EQ(check_page(f.base + p * kPage, p, 2), -1) << "page " << p;
  }
  // A new mapping may take the freed addresses; it must not be disturbed.
  char* other = static_cast<char*>(*f.rt->Map(n * kPage));
  for (uint64_t p = 0; p < n; p++) fill_page(other + p * kPage, 900000 + p, 1);
  ASSERT_TRUE(f.rt->Unmap(f.base).ok());
  for (uint64_t p = 0; p < n; p++) {
    ASSERT_EQ(check_page(other + p * kPage, 900000 + p, 1), -1) << "page " << p;
  }
  ASSERT_TRUE(f.rt->Unmap(other).ok());
  const Stats after = f.rt->GetStats();
  EXPECT_EQ(after.swpginuse, 0);
  EXPECT_EQ(after.regions, 0);
  EXPECT_EQ(after.free, after.npages);
}

// The userfaultfd reader reaps the swap-in reads it starts.  An munmap of a
// whole region whose read-ahead is still in flight has that same thread tear
// the region down, which waits for the region's busy pages: it must finish
// those reads itself meanwhile, or it would wait for ever.
TEST(RegionEvents, MunmapWhileReadAheadIsInFlight) {
  const Fixture f(test_budget(), /*map=*/false);
  Runtime* rt = f.rt.get();
  const size_t bytes = f.bytes;
  const uint64_t npages = f.npages;
  for (uint64_t gen = 1; gen <= 10; gen++) {
    char* base = f.Map();
    ASSERT_TRUE(rt->Advise(base, Runtime::Advice::kSequential).ok());
    for (uint64_t p = 0; p < npages; p++) fill_page(base + p * kPage, p, gen);
    // Page 0 is in swap: its fault reads a 128-page run and starts reading
    // the runs after it; the munmap follows as soon as the first is mapped.
    ASSERT_EQ(check_page(base, 0, gen), -1);
    ASSERT_EQ(munmap(base, bytes), 0);
    Stats s = rt->GetStats();
    for (int i = 0; i < 1000 && s.regions != 0; i++) {
      usleep(10000);
      s = rt->GetStats();
    }
    if (s.regions != 0) {
      ADD_FAILURE() << "generation " << gen << ": the region's teardown did not end in 10 s";
      fflush(stdout);
      _exit(1);  // the reader is stuck, and destroying the runtime would wait for it
    }
  }
  const Stats s = rt->GetStats();
  EXPECT_EQ(s.swpginuse, 0);
  EXPECT_EQ(s.swpgonly, 0);
  EXPECT_EQ(s.free, s.npages);
  EXPECT_EQ(rt->KernelResidentBytes(), 0);
}

TEST(RegionEvents, MunmapOfWholeRegionDetachesIt) {
  Fixture f;
  f.write_all(3);
  ASSERT_EQ(munmap(f.base, f.bytes), 0);
  // munmap returns once the runtime has read the event, not handled it.
  Stats s = f.rt->GetStats();
  for (int i = 0; i < 500 && s.regions != 0; i++) {
    usleep(10000);
    s = f.rt->GetStats();
  }
  EXPECT_EQ(s.regions, 0);
  EXPECT_EQ(s.swpginuse, 0);
  EXPECT_EQ(s.free, s.npages);
  EXPECT_EQ(s.mapped_bytes, 0);
  EXPECT_FALSE(f.rt->Unmap(f.base).ok());  // already gone
}

// munmap and mremap return once the runtime has read their event, not
// applied it, and the kernel may give the freed addresses to the next Map at
// once.  A region mapped there is the new region's alone: the old region's
// event must not release it, and the old region's pages outside the freed
// part keep working.
TEST(RegionEvents, MapReusingAddressesFreedByMunmapOrMremap) {
  const Fixture f(test_budget(), /*map=*/false);
  Runtime* rt = f.rt.get();
  const uint64_t npages = 64;
  const size_t bytes = npages * kPage;
  int reused = 0;
  for (uint64_t round = 0; round < 60; round++) {
    auto m = rt->Map(bytes);
    ASSERT_TRUE(m.ok()) << m.status();
    char* a = static_cast<char*>(*m);
    for (uint64_t p = 0; p < npages; p++) fill_page(a + p * kPage, p, round + 1);
    // Free all of it, a middle part, or move it away.
    const int how = static_cast<int>(round % 3);
    uint64_t first = 0, n = npages;
    if (how == 1) {
      first = npages / 4;
      n = npages / 2;
    }
    char* moved = nullptr;
    if (how == 2) {
      void* dst = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      ASSERT_NE(dst, MAP_FAILED);
      moved = static_cast<char*>(mremap(a, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, dst));
      ASSERT_EQ(moved, dst);
    } else {
      ASSERT_EQ(munmap(a + first * kPage, n * kPage), 0);
    }
    // The next region, of the freed size, at once.
    auto m2 = rt->Map(n * kPage);
    ASSERT_TRUE(m2.ok()) << m2.status();
    char* b = static_cast<char*>(*m2);
    if (b == a + first * kPage) reused++;
    for (uint64_t p = 0; p < n; p++) {
      ASSERT_TRUE(page_is_zero(b + p * kPage)) << "round " << round << " new page " << p;
      fill_page(b + p * kPage, 1000 + p, round + 1);
    }
    usleep(2000);  // the old region's event is applied by now
    for (uint64_t p = 0; p < n; p++) {
      ASSERT_EQ(check_page(b + p * kPage, 1000 + p, round + 1), -1)
          << "round " << round << " new page " << p;
    }
    if (how == 1) {
      for (uint64_t p = 0; p < npages; p++) {
        if (p >= first && p < first + n) continue;
        ASSERT_EQ(check_page(a + p * kPage, p, round + 1), -1)
            << "round " << round << " old page " << p;
      }
      ASSERT_TRUE(rt->Unmap(a).ok());
    } else if (how == 2) {
      for (uint64_t p = 0; p < npages; p++) {
        ASSERT_EQ(check_page(moved + p * kPage, p, round + 1), -1)
            << "round " << round << " moved page " << p;
      }
      ASSERT_TRUE(rt->Unmap(moved).ok());
    }
    ASSERT_TRUE(rt->Unmap(b).ok()) << "round " << round;
  }
  printf("the new region took the freed addresses in %d of 60 rounds\n", reused);
  EXPECT_GT(reused, 0) << "the kernel never reused the freed addresses: the test proves nothing";
  const Stats s = rt->GetStats();
  EXPECT_EQ(s.regions, 0);
  EXPECT_EQ(s.mapped_bytes, 0);
  EXPECT_EQ(s.free, s.npages);
  EXPECT_EQ(s.swpginuse, 0);
}

TEST(RegionEvents, MremapMovesWholeRegion) {
  Fixture f;
  f.write_all(4);
  // Reserve a destination, then move the region there.
  void* dst = mmap(nullptr, f.bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(dst, MAP_FAILED);
  void* moved = mremap(f.base, f.bytes, f.bytes, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
  ASSERT_EQ(moved, dst);
  char* nb = static_cast<char*>(moved);
  for (int round = 0; round < 2; round++) {
    for (uint64_t p = 0; p < f.npages; p++) {
      ASSERT_EQ(check_page(nb + p * kPage, p, 4 + round), -1) << "page " << p;
      fill_page(nb + p * kPage, p, 5 + round);
    }
  }
  EXPECT_FALSE(f.rt->Unmap(f.base).ok());
  ASSERT_TRUE(f.rt->Unmap(nb).ok());
  EXPECT_EQ(f.rt->GetStats().swpginuse, 0);
}

TEST(RegionEvents, ForkedChildFailsLoudly) {
  Fixture f;
  f.write_all(6);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The region is not inherited: touching it must fault (SIGSEGV, seen by
    // this handler), never read zeros.
    struct sigaction sa = {};
    sa.sa_handler = [](int) { _exit(kChildGotSegv); };
    sigaction(SIGSEGV, &sa, nullptr);
    volatile char c = f.base[f.bytes - 1];
    (void)c;
    _exit(0);  // reached only if the child could read the region
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), kChildGotSegv) << "the child read the region";
  // The parent is unaffected.
  for (uint64_t p = 0; p < f.npages; p++) ASSERT_EQ(check_page(f.base + p * kPage, p, 6), -1);
}

}  // namespace
}  // namespace uvmrt::testing
