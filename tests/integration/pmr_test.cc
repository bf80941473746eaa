// pmr_test: uvmrt::RegionResource (uvmrt/memory_resource.h) and
// uvmrt::Allocator (uvmrt/allocator.h) under standard and abseil containers.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory_resource>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "uvmrt/allocator.h"
#include "uvmrt/memory_resource.h"
#include "uvmrt/runtime.h"

namespace uvmrt {
namespace {

using testing::kPage;
using testing::make_runtime;
using testing::test_budget;
using testing::test_options;

// Waits (up to 5 s) for pred(stats) to hold.
template <class Pred>
bool WaitFor(const Runtime& rt, Pred pred) {
  for (int i = 0; i < 500; i++) {
    if (pred(rt.GetStats())) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred(rt.GetStats());
}

TEST(RegionResourceTest, SizesAndAlignments) {
  auto rt = make_runtime(test_options(test_budget()));
  RegionResource res(rt.get());
  struct Block {
    unsigned char* p;
    size_t n, align;
  };
  std::vector<Block> blocks;
  const size_t sizes[] = {1, 7, 64, 1000, 4096, 5000, 65536, 300000, size_t{2} << 20};
  const size_t aligns[] = {1, 8, 16, 64, 4096, 65536};
  for (size_t n : sizes) {
    for (size_t a : aligns) {
      auto* p = static_cast<unsigned char*>(res.allocate(n, a));
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % a, 0u) << n << " " << a;
      for (size_t i = 0; i < n; i++) p[i] = static_cast<unsigned char>(i * 31 + n + a);
      blocks.push_back({p, n, a});
    }
  }
  for (const Block& b : blocks) {
    for (size_t i = 0; i < b.n; i++) {
      ASSERT_EQ(b.p[i], static_cast<unsigned char>(i * 31 + b.n + b.align)) << b.n << " " << i;
    }
  }
  EXPECT_GT(rt->GetStats().regions, 0);
  for (const Block& b : blocks) res.deallocate(b.p, b.n, b.align);
  // The big and page-aligned blocks had regions of their own; the small ones
  // shared regions, now all empty: only the current shared region remains.
  EXPECT_LE(res.regions(), 1u);
  res.release();
  EXPECT_EQ(res.regions(), 0u);
  EXPECT_EQ(rt->GetStats().regions, 0);
  EXPECT_EQ(rt->GetStats().mapped_bytes, 0);
}

TEST(RegionResourceTest, DeallocatingReturnsFramesAndSlots) {
  const size_t budget = test_budget();
  auto rt = make_runtime(test_options(budget));
  RegionResource res(rt.get());
  // Twice the budget in 1 MiB blocks, so that half of it goes to swap.
  std::vector<void*> blocks;
  const size_t n = 2 * budget / (size_t{1} << 20);
  for (size_t i = 0; i < n; i++) {
    void* p = res.allocate(size_t{1} << 20, 64);
    std::memset(p, static_cast<int>(i + 1), size_t{1} << 20);
    blocks.push_back(p);
  }
  Stats s = rt->GetStats();
  EXPECT_GT(s.pgswapout, 0);
  for (void* p : blocks) res.deallocate(p, size_t{1} << 20, 64);
  EXPECT_TRUE(WaitFor(*rt,
                      [](const Stats& st) {
                        return st.swpginuse == 0 && st.active + st.inactive + st.paging == 0;
                      }))
      << "swpginuse " << rt->GetStats().swpginuse << " free " << rt->GetStats().free;
  EXPECT_EQ(rt->GetStats().mapped_bytes, 0);
}

TEST(RegionResourceTest, SmallBlocksDiscardTheirPages) {
  auto rt = make_runtime(test_options(test_budget()));
  RegionResource::Config c;
  c.discard_bytes = kPage;
  RegionResource res(rt.get(), c);
  void* keep = res.allocate(100, 8);  // keeps the shared region alive
  // Half the budget in 256 KiB blocks carved from one shared region.
  const int nblocks = static_cast<int>(test_budget() / (2 * 64 * kPage));
  std::vector<void*> blocks;
  for (int i = 0; i < nblocks; i++) {
    void* p = res.allocate(64 * kPage, kPage);
    std::memset(p, 0x5a, 64 * kPage);
    blocks.push_back(p);
  }
  const int64_t resident = [&] {
    Stats s = rt->GetStats();
    return s.active + s.inactive;
  }();
  EXPECT_GE(resident, nblocks * 60);
  for (void* p : blocks) res.deallocate(p, 64 * kPage, kPage);
  // Left resident: the page of `keep`, and the pages that fault-around and
  // zero-fill ahead filled past the last block (at most a run of 127 pages,
  // and the 127 of the run ahead).
  EXPECT_TRUE(WaitFor(*rt, [](const Stats& st) { return st.active + st.inactive <= 255; }))
      << "resident pages " << rt->GetStats().active + rt->GetStats().inactive;
  // The region holding `keep`, and the current one (kept, emptied).
  EXPECT_LE(res.regions(), 2u);
  res.deallocate(keep, 100, 8);
}

TEST(RegionResourceTest, SmallBlocksFillMostOfBudgetPlusSwap) {
  const size_t budget = test_budget();
  auto rt = make_runtime(test_options(budget, 2));  // capacity: 3 x budget
  RegionResource res(rt.get());
  // 2.5 x budget in 64 KiB blocks: the shared regions grow by doubling, and
  // shrink again where budget + swap has no room for the next size.
  const size_t block = 64 << 10, n = 5 * budget / 2 / block;
  std::vector<unsigned char*> blocks;
  for (size_t i = 0; i < n; i++) {
    auto* p = static_cast<unsigned char*>(res.allocate(block, 16));
    p[0] = static_cast<unsigned char>(i);
    p[block - 1] = static_cast<unsigned char>(i >> 8);
    blocks.push_back(p);
  }
  for (size_t i = 0; i < n; i++) {
    ASSERT_EQ(blocks[i][0], static_cast<unsigned char>(i));
    ASSERT_EQ(blocks[i][block - 1], static_cast<unsigned char>(i >> 8));
  }
  EXPECT_LE(res.mapped_bytes(), 3 * budget);
}

TEST(AllocatorTest, VectorFourTimesTheBudget) {
  const size_t budget = test_budget();
  auto rt = make_runtime(test_options(budget));
  {
    RegionResource res(rt.get());
    std::vector<uint64_t, Allocator<uint64_t>> v{Allocator<uint64_t>(&res)};
    const size_t n = 4 * budget / sizeof(uint64_t);
    for (size_t i = 0; i < n; i++) v.push_back(i * 0x9E3779B97F4A7C15ull);
    for (size_t i = 0; i < n; i++) ASSERT_EQ(v[i], i * 0x9E3779B97F4A7C15ull) << i;
    const Stats s = rt->GetStats();
    EXPECT_GT(s.pgswapout, 0);
    EXPECT_GT(s.flt_swapin, 0);
    EXPECT_EQ(v.get_allocator().resource(), &res);
    // A copy stays in uvmrt memory.
    std::vector<uint64_t, Allocator<uint64_t>> small(v.begin(), v.begin() + 1000,
                                                     Allocator<uint64_t>(&res));
    auto copy = small;
    EXPECT_EQ(copy.get_allocator().resource(), &res);
    EXPECT_EQ(copy[999], v[999]);
  }
  EXPECT_EQ(rt->GetStats().regions, 0);
}

TEST(AllocatorTest, PoolOverRegions) {
  auto rt = make_runtime(test_options(test_budget()));
  RegionResource regions(rt.get());
  {
    std::pmr::synchronized_pool_resource pool(&regions);
    std::pmr::vector<std::pmr::string> strings(&pool);
    const int n = testing::small_scale() ? 20000 : 100000;
    for (int i = 0; i < n; i++) {
      strings.emplace_back(
          std::string(static_cast<size_t>(20 + i % 100), static_cast<char>('a' + i % 26)));
    }
    for (int i = 0; i < n; i++) {
      ASSERT_EQ(strings[i].size(), static_cast<size_t>(20 + i % 100));
      ASSERT_EQ(strings[i][0], static_cast<char>('a' + i % 26));
    }
    EXPECT_GT(regions.mapped_bytes(), 0u);
  }
  regions.release();
  EXPECT_EQ(rt->GetStats().regions, 0);
}

TEST(AllocatorTest, AbslFlatHashMap) {
  auto rt = make_runtime(test_options(test_budget()));
  RegionResource res(rt.get());
  using Map = absl::flat_hash_map<uint64_t, uint64_t, absl::Hash<uint64_t>, std::equal_to<uint64_t>,
                                  Allocator<std::pair<const uint64_t, uint64_t>>>;
  {
    Map m(0, Map::hasher(), Map::key_equal(), &res);
    const uint64_t n = testing::small_scale() ? 50000 : 300000;
    for (uint64_t k = 0; k < n; k++) m[k * 7919] = k ^ 0xABCDEF;
    ASSERT_EQ(m.size(), n);
    for (uint64_t k = 0; k < n; k++) {
      auto it = m.find(k * 7919);
      ASSERT_NE(it, m.end());
      ASSERT_EQ(it->second, k ^ 0xABCDEF);
    }
    EXPECT_EQ(m.get_allocator().resource(), &res);
    EXPECT_GT(res.mapped_bytes(), n * 16);
    Map copy(m);
    EXPECT_EQ(copy.get_allocator().resource(), &res);
    EXPECT_EQ(copy.size(), n);
    // Nested: records in a map, all in uvmrt memory.
    using Rec = std::vector<uint32_t, Allocator<uint32_t>>;
    using Nested = absl::flat_hash_map<int, Rec, absl::Hash<int>, std::equal_to<int>,
                                       Allocator<std::pair<const int, Rec>>>;
    Nested nested(0, Nested::hasher(), Nested::key_equal(), &res);
    for (int i = 0; i < 1000; i++)
      nested.try_emplace(i, 100, static_cast<uint32_t>(i), Allocator<uint32_t>(&res));
    for (int i = 0; i < 1000; i++) ASSERT_EQ(nested.at(i)[99], static_cast<uint32_t>(i));
  }
  res.release();
  EXPECT_EQ(rt->GetStats().regions, 0);
}

TEST(AllocatorTest, ExhaustionThrowsBadAlloc) {
  const size_t budget = test_budget();
  auto rt = make_runtime(test_options(budget, 2));  // capacity: 3 x budget
  RegionResource res(rt.get());
  EXPECT_THROW((void)res.allocate(4 * budget, 8), std::bad_alloc);
  Allocator<char> a(&res);
  EXPECT_THROW((void)a.allocate(4 * budget), std::bad_alloc);
}

}  // namespace
}  // namespace uvmrt
