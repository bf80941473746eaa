// uvm_swap_test.cc: the swap slot allocator (uvm_swap_alloc, uvm_swap_free,
// uvm_swap_markbad) and its uvmexp accounting, on a Uvm built over the fakes.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "tests/fake_pmap.h"
#include "tests/fake_swapdev.h"
#include "tests/uvm_test_peer.h"
#include "uvm/uvm.h"

namespace uvmrt::uvm {

namespace {

using ::uvmrt::testing::FakePmap;
using ::uvmrt::testing::FakeSwapDev;

class SwapTest : public ::testing::Test {
 protected:
  void Init(uint64_t nslots) {
    nslots_ = nslots;
    uvm_.reset();
    dev_ = std::make_unique<FakeSwapDev>(nslots);
    uvm_ = std::make_unique<Uvm>(uvm_params{16, 8, false}, &pmap_, dev_.get());
  }

  // Allocates exactly n contiguous slots or fails the test.
  int AllocExact(int n) {
    int got = n;
    const int slot = uvm_->uvm_swap_alloc(&got, false);
    EXPECT_NE(slot, 0) << "no run of " << n << " free slots";
    EXPECT_EQ(got, n);
    return slot;
  }

  // Checks the run [slot, slot + n) is a valid allocation: inside 1..nslots
  // and marked allocated.
  void ExpectValidRun(int slot, int n) {
    ASSERT_GE(slot, 1);
    ASSERT_LE(static_cast<uint64_t>(slot) + static_cast<uint64_t>(n) - 1, nslots_);
    for (int i = 0; i < n; i++) {
      EXPECT_TRUE(UvmTestPeer::Allocated(*uvm_, static_cast<uint64_t>(slot + i)));
    }
  }

  void ExpectAccounting() {
    EXPECT_EQ(UvmTestPeer::CountAllocated(*uvm_, nslots_), uvm_->exp().swpginuse.load());
    EXPECT_TRUE(UvmTestPeer::GroupSummaryConsistent(*uvm_));
  }

  uint64_t nslots_ = 0;
  FakePmap pmap_;
  std::unique_ptr<FakeSwapDev> dev_;
  std::unique_ptr<Uvm> uvm_;
};

TEST_F(SwapTest, StartsEmptyWithSlotZeroReserved) {
  Init(64);
  EXPECT_EQ(uvm_->exp().swpages.load(), 64);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 0);
  EXPECT_EQ(uvm_->exp().swpgbad.load(), 0);
  EXPECT_TRUE(UvmTestPeer::Allocated(*uvm_, 0)) << "slot 0 means 'no slot'";
  EXPECT_FALSE(uvm_->uvm_swapisfilled());
  EXPECT_FALSE(uvm_->uvm_swapisfull());
  ExpectAccounting();
}

TEST_F(SwapTest, AllocReturnsContiguousRuns) {
  Init(64);
  const int a = AllocExact(8);
  const int b = AllocExact(8);
  const int c = AllocExact(3);
  EXPECT_EQ(a, 1);  // the first free slot: slot 0 is never handed out
  ExpectValidRun(a, 8);
  ExpectValidRun(b, 8);
  ExpectValidRun(c, 3);
  // The runs do not overlap.
  std::set<int> slots;
  for (auto [s, n] : {std::pair{a, 8}, std::pair{b, 8}, std::pair{c, 3}}) {
    for (int i = 0; i < n; i++) EXPECT_TRUE(slots.insert(s + i).second) << "slot " << s + i;
  }
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 19);
  ExpectAccounting();
}

TEST_F(SwapTest, SlotZeroIsNeverReturned) {
  Init(40);
  std::set<int> got;
  for (;;) {
    int n = 1;
    const int s = uvm_->uvm_swap_alloc(&n, false);
    if (s == 0) break;
    EXPECT_EQ(n, 1);
    EXPECT_TRUE(got.insert(s).second) << "slot " << s << " returned twice";
  }
  ASSERT_EQ(got.size(), 40u);
  EXPECT_EQ(*got.begin(), 1);
  EXPECT_EQ(*got.rbegin(), 40);
  // Free everything and allocate it again in runs that end at the last slot
  // and start at the first: still never slot 0.
  for (int s : got) uvm_->uvm_swap_free(s, 1);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 0);
  for (int i = 0; i < 5; i++) {
    const int s = AllocExact(8);
    EXPECT_GE(s, 1);
    ExpectValidRun(s, 8);
  }
  EXPECT_TRUE(uvm_->uvm_swapisfilled());
  ExpectAccounting();
}

TEST_F(SwapTest, ExhaustionReturnsZero) {
  Init(32);
  ExpectValidRun(AllocExact(32), 32);
  EXPECT_TRUE(uvm_->uvm_swapisfilled());
  int n = 1;
  EXPECT_EQ(uvm_->uvm_swap_alloc(&n, false), 0);
  n = 8;
  EXPECT_EQ(uvm_->uvm_swap_alloc(&n, true), 0);
  n = 1;
  EXPECT_EQ(uvm_->uvm_swap_alloc(&n, true), 0);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 32) << "a failed allocation takes nothing";
  ExpectAccounting();
}

TEST_F(SwapTest, RunLongerThanSwapFails) {
  Init(16);
  int n = 17;
  EXPECT_EQ(uvm_->uvm_swap_alloc(&n, false), 0);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 0);
  n = 17;
  const int s = uvm_->uvm_swap_alloc(&n, true);  // lessok: all there is
  EXPECT_EQ(s, 1);
  EXPECT_EQ(n, 16);
  ExpectAccounting();
}

TEST_F(SwapTest, LessOkReturnsShorterRunWhenFragmented) {
  Init(32);
  AllocExact(32);
  // Holes of 3 (5..7) and 2 (20..21) slots.
  uvm_->uvm_swap_free(5, 3);
  uvm_->uvm_swap_free(20, 2);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 27);

  int n = 8;
  EXPECT_EQ(uvm_->uvm_swap_alloc(&n, false), 0) << "no run of 8 is free";

  n = 8;
  int s = uvm_->uvm_swap_alloc(&n, true);
  EXPECT_EQ(s, 5) << "lessok returns the longest free run";
  EXPECT_EQ(n, 3);
  ExpectValidRun(s, n);

  n = 8;
  s = uvm_->uvm_swap_alloc(&n, true);
  EXPECT_EQ(s, 20);
  EXPECT_EQ(n, 2);
  ExpectValidRun(s, n);

  n = 8;
  EXPECT_EQ(uvm_->uvm_swap_alloc(&n, true), 0);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 32);
  ExpectAccounting();
}

// With no run of the whole request, lessok takes the longest run there is,
// not the first run of half the request (UVM's halving would take 10..14).
TEST_F(SwapTest, LessOkTakesTheLongestRunWhenNoneIsLongEnough) {
  Init(128);
  AllocExact(128);
  uvm_->uvm_swap_free(10, 5);   // 10..14
  uvm_->uvm_swap_free(40, 7);   // 40..46: the longest
  uvm_->uvm_swap_free(100, 6);  // 100..105
  int n = 8;
  const int s = uvm_->uvm_swap_alloc(&n, true);
  EXPECT_EQ(s, 40);
  EXPECT_EQ(n, 7);
  ExpectValidRun(s, n);
  ExpectAccounting();
}

// Against a plain scan of the map, under random churn: lessok gets the
// whole request when a run that long is free, and otherwise a run as long
// as the longest free one, across word boundaries and beyond 64 slots.
TEST_F(SwapTest, LessOkMatchesABruteForceLongestRun) {
  const uint64_t kSlots = 4096;
  Init(kSlots);
  AllocExact(static_cast<int>(kSlots));
  auto longest_free = [&] {
    uint64_t best = 0, run = 0;
    for (uint64_t s = 1; s <= kSlots; s++) {
      run = UvmTestPeer::Allocated(*uvm_, s) ? 0 : run + 1;
      best = std::max(best, run);
    }
    return best;
  };
  uint64_t x = 42;
  auto rnd = [&](uint64_t n) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return (x >> 33) % n;
  };
  for (int i = 0; i < 3000; i++) {
    // Free a random run of allocated slots, then allocate.
    const uint64_t at = 1 + rnd(kSlots);
    const uint64_t len = 1 + rnd(i % 2 ? 8 : 150);
    for (uint64_t s = at; s < at + len && s <= kSlots; s++) {
      if (UvmTestPeer::Allocated(*uvm_, s)) uvm_->uvm_swap_free(static_cast<int>(s), 1);
    }
    const uint64_t longest = longest_free();
    const int want = 1 + static_cast<int>(rnd(100));
    int n = want;
    const int got = uvm_->uvm_swap_alloc(&n, true);
    ASSERT_NE(got, 0) << "iteration " << i;
    ASSERT_EQ(static_cast<uint64_t>(n), std::min<uint64_t>(longest, want)) << "iteration " << i;
    ExpectValidRun(got, n);
  }
  ExpectAccounting();
}

TEST_F(SwapTest, LessOkPrefersAFullRunOverAShorterOne) {
  Init(64);
  AllocExact(64);
  uvm_->uvm_swap_free(3, 2);    // a short hole first
  uvm_->uvm_swap_free(30, 10);  // then a long one
  int n = 8;
  const int s = uvm_->uvm_swap_alloc(&n, true);
  EXPECT_EQ(n, 8) << "a run of 8 is free: lessok must not settle for less";
  EXPECT_GE(s, 30);
  EXPECT_LE(s, 32);
  ExpectValidRun(s, n);
  ExpectAccounting();
}

TEST_F(SwapTest, FreeReturnsSlotsForReuse) {
  Init(16);
  const int a = AllocExact(8);
  const int b = AllocExact(8);
  EXPECT_TRUE(uvm_->uvm_swapisfilled());
  uvm_->uvm_swap_free(a, 8);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 8);
  EXPECT_FALSE(uvm_->uvm_swapisfilled());
  for (int i = 0; i < 8; i++) EXPECT_FALSE(UvmTestPeer::Allocated(*uvm_, a + i));
  const int c = AllocExact(8);
  EXPECT_EQ(c, a) << "the freed run is the only one left";
  uvm_->uvm_swap_free(b + 2, 3);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 13);
  int n = 3;
  EXPECT_EQ(uvm_->uvm_swap_alloc(&n, false), b + 2);
  // Freeing "no slot" is a no-op.
  uvm_->uvm_swap_free(0, 1);
  uvm_->uvm_swap_free(c, 0);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 16);
  ExpectAccounting();
}

TEST_F(SwapTest, BadSlotsAreNeverReturned) {
  Init(48);
  const int bad = AllocExact(8);
  uvm_->uvm_swap_markbad(bad, 8);
  EXPECT_EQ(uvm_->exp().swpgbad.load(), 8);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 8) << "bad slots stay allocated";
  for (int i = 0; i < 8; i++) EXPECT_TRUE(UvmTestPeer::Bad(*uvm_, bad + i));
  // Freeing a bad slot leaves it allocated.
  uvm_->uvm_swap_free(bad, 8);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), 8);
  for (int i = 0; i < 8; i++) EXPECT_TRUE(UvmTestPeer::Allocated(*uvm_, bad + i));
  EXPECT_EQ(uvm_->capacity_pages(), 16u + 48u - 8u);

  // Allocate, free and reallocate all of swap a few times, in singles and in
  // runs: no bad slot ever comes back.
  for (int round = 0; round < 3; round++) {
    std::vector<std::pair<int, int>> runs;
    for (;;) {
      int n = round == 1 ? 1 : 8;
      const int s = uvm_->uvm_swap_alloc(&n, true);
      if (s == 0) break;
      for (int i = 0; i < n; i++) {
        EXPECT_FALSE(s + i >= bad && s + i < bad + 8) << "bad slot " << s + i << " returned";
      }
      runs.push_back({s, n});
    }
    int total = 0;
    for (auto [s, n] : runs) total += n;
    EXPECT_EQ(total, 40) << "round " << round;
    EXPECT_TRUE(uvm_->uvm_swapisfilled());
    for (auto [s, n] : runs) uvm_->uvm_swap_free(s, n);
    EXPECT_EQ(uvm_->exp().swpginuse.load(), 8);
  }
  ExpectAccounting();
}

TEST_F(SwapTest, FullCountsBadSlots) {
  Init(16);
  AllocExact(16);
  EXPECT_TRUE(uvm_->uvm_swapisfilled());
  EXPECT_FALSE(uvm_->uvm_swapisfull()) << "filled, but no page lives only in swap";
  uvm_->uvm_swap_markbad(1, 10);
  EXPECT_FALSE(uvm_->uvm_swapisfull());
  uvm_->exp().swpgonly.store(6);
  EXPECT_TRUE(uvm_->uvm_swapisfull()) << "swpgonly + swpgbad >= swpages";
  uvm_->exp().swpgonly.store(0);
}

// Allocation stays correct when swap is nearly full: the group summaries must
// never hide a free slot.  Correctness only; no timing is asserted.
TEST_F(SwapTest, NearlyFullAllocationsStillSucceed) {
  const uint64_t kSlots = 1 << 16;
  Init(kSlots);
  // Fill swap in big runs.
  int64_t total = 0;
  for (;;) {
    int n = 4096;
    const int s = uvm_->uvm_swap_alloc(&n, true);
    if (s == 0) break;
    total += n;
  }
  ASSERT_EQ(total, static_cast<int64_t>(kSlots));
  ExpectAccounting();

  // Free a few scattered slots: the first and the last two, slots at the
  // end and the start of a group of 256, and a run of 3 inside one group.
  const std::vector<int> holes = {1, 255, 512, 4097, 40000, 40001, 40002, 65535, 65536};
  for (int s : holes) uvm_->uvm_swap_free(s, 1);
  EXPECT_EQ(uvm_->exp().swpginuse.load(), static_cast<int64_t>(kSlots - holes.size()));

  int n = 4;
  EXPECT_EQ(uvm_->uvm_swap_alloc(&n, false), 0) << "no run of 4 is free";
  n = 8;
  int s = uvm_->uvm_swap_alloc(&n, true);
  EXPECT_EQ(s, 40000) << "the longest run";
  EXPECT_EQ(n, 3);

  std::set<int> got;
  for (;;) {
    n = 1;
    s = uvm_->uvm_swap_alloc(&n, false);
    if (s == 0) break;
    EXPECT_TRUE(got.insert(s).second);
  }
  EXPECT_EQ(got, (std::set<int>{1, 255, 512, 4097, 65535, 65536}));
  EXPECT_TRUE(uvm_->uvm_swapisfilled());

  // Churn: free one slot anywhere, the next allocation finds exactly it.
  uint64_t x = 12345;
  for (int i = 0; i < 2000; i++) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    const int hole = static_cast<int>((x >> 33) % kSlots) + 1;
    uvm_->uvm_swap_free(hole, 1);
    n = 1;
    ASSERT_EQ(uvm_->uvm_swap_alloc(&n, false), hole) << "iteration " << i;
  }
  ExpectAccounting();
}

// Random churn against a model: every allocation is a run that was free,
// a full-length request fails only if no free run that long exists anywhere,
// and a lessok run is shorter than asked only if no full run existed.
class SwapChurnTest : public SwapTest, public ::testing::WithParamInterface<uint64_t> {};

TEST_P(SwapChurnTest, ChurnAgreesWithAModel) {
  const uint64_t kSlots = GetParam();
  Init(kSlots);
  std::vector<bool> used(kSlots + 1, false);
  used[0] = true;
  auto longest_free = [&] {
    uint64_t best = 0, run = 0;
    for (uint64_t s = 1; s <= kSlots; s++) {
      run = used[s] ? 0 : run + 1;
      best = std::max(best, run);
    }
    return best;
  };
  std::vector<std::pair<int, int>> live;
  uint64_t x = 42;
  auto rnd = [&](uint64_t m) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return (x >> 33) % m;
  };
  for (int i = 0; i < 20000; i++) {
    if (!live.empty() && rnd(100) < 48) {
      const size_t k = rnd(live.size());
      const auto [s, n] = live[k];
      // Free part or all of the run.
      const int cut = static_cast<int>(rnd(static_cast<uint64_t>(n))) + 1;
      uvm_->uvm_swap_free(s, cut);
      for (int j = 0; j < cut; j++) used[static_cast<size_t>(s + j)] = false;
      if (cut == n) {
        live.erase(live.begin() + static_cast<long>(k));
      } else {
        live[k] = {s + cut, n - cut};
      }
      continue;
    }
    const int want = static_cast<int>(rnd(100) < 80 ? 1 + rnd(16) : 1 + rnd(200));
    const bool lessok = rnd(2) == 0;
    const uint64_t longest = longest_free();
    int n = want;
    const int s = uvm_->uvm_swap_alloc(&n, lessok);
    if (s == 0) {
      ASSERT_TRUE(lessok ? longest == 0 : longest < static_cast<uint64_t>(want))
          << "iteration " << i << ": want " << want << ", a run of " << longest << " was free";
      continue;
    }
    ASSERT_GE(n, 1);
    ASSERT_LE(n, want);
    if (n < want) {
      ASSERT_TRUE(lessok) << "iteration " << i;
      ASSERT_LT(longest, static_cast<uint64_t>(want))
          << "iteration " << i << ": a full run was free";
    }
    for (int j = 0; j < n; j++) {
      ASSERT_GE(s + j, 1);
      ASSERT_LE(static_cast<uint64_t>(s + j), kSlots);
      ASSERT_FALSE(used[static_cast<size_t>(s + j)]) << "iteration " << i << ": slot " << s + j;
      used[static_cast<size_t>(s + j)] = true;
    }
    live.emplace_back(s, n);
  }
  ExpectAccounting();
}

// 5000 slots leave a partial last word; with 4095 (and slot 0) the bitmap
// ends exactly at a word and a group, with no spare bits after the last slot.
INSTANTIATE_TEST_SUITE_P(Sizes, SwapChurnTest, ::testing::Values(5000, 4095, 1023));

// A free run that straddles the next-fit cursor is found whole.  (Found
// broken while these tests were written: a request for all of a free swap
// failed after one allocation and free; fixed in 4eb8be0.)
TEST_F(SwapTest, FreeRunStraddlingTheCursorIsFound) {
  Init(16);
  const int s1 = AllocExact(1);
  ASSERT_EQ(s1, 1);
  uvm_->uvm_swap_free(s1, 1);  // swap is completely free again; the cursor is at 2
  ASSERT_EQ(uvm_->exp().swpginuse.load(), 0);
  int n = 16;
  const int s = uvm_->uvm_swap_alloc(&n, false);
  EXPECT_EQ(s, 1) << "all 16 slots are free and contiguous";
  EXPECT_EQ(n, 16);

  // The lessok form the page daemon uses: 8 free slots in a row (1..8) but
  // the cursor sits at 3.
  Init(16);
  AllocExact(2);              // 1..2, cursor 3
  AllocExact(14);             // 3..16
  uvm_->uvm_swap_free(1, 8);  // 1..8 free, cursor at 17
  AllocExact(2);              // 1..2 again, cursor 3
  uvm_->uvm_swap_free(1, 2);  // 1..8 free, cursor 3
  n = 8;
  const int t = uvm_->uvm_swap_alloc(&n, true);
  EXPECT_EQ(t, 1);
  EXPECT_EQ(n, 8) << "a run of 8 is free; lessok must not return a shorter one";
}

}  // namespace
}  // namespace uvmrt::uvm
