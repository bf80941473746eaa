// regions10k_test: ten thousand live regions at once: mapped, every page
// touched and verified, and unmapped, with the counters back to zero.
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "uvmrt/runtime.h"

namespace uvmrt {
namespace {

using testing::check_page;
using testing::fill_page;
using testing::kPage;

constexpr int kRegions = 10000;

TEST(Regions10kTest, MapTouchVerifyUnmap) {
  // 16 KiB regions (one page each under sanitizers): 160 MiB in all, more
  // than the budget, so part of it is paged out and back in.
  const size_t pages = testing::small_scale() ? 1 : 4;
  const size_t budget = testing::small_scale() ? (size_t{8} << 20) : (size_t{64} << 20);
  Options o = testing::test_options(budget, 4);
  auto rt = testing::make_runtime(o);

  std::vector<char*> regions;
  regions.reserve(kRegions);
  for (int i = 0; i < kRegions; i++) {
    absl::StatusOr<void*> m = rt->Map(pages * kPage);
    ASSERT_TRUE(m.ok()) << "Map of region " << i + 1 << " of " << kRegions
                        << " failed: " << m.status();
    regions.push_back(static_cast<char*>(*m));
  }
  Stats s = rt->GetStats();
  EXPECT_EQ(s.regions, kRegions);
  EXPECT_EQ(s.mapped_bytes, static_cast<int64_t>(kRegions * pages * kPage));

  for (int i = 0; i < kRegions; i++) {
    for (size_t p = 0; p < pages; p++) fill_page(regions[i] + p * kPage, i * pages + p, 1);
  }
  for (int i = 0; i < kRegions; i++) {
    for (size_t p = 0; p < pages; p++) {
      ASSERT_EQ(check_page(regions[i] + p * kPage, i * pages + p, 1), -1)
          << "region " << i << " page " << p;
    }
  }
  s = rt->GetStats();
  // At least one fault per region: fault-around stays within a region.
  EXPECT_GE(s.flt_zfill, kRegions);
  if (!testing::small_scale()) {
    EXPECT_GT(s.pgswapout, 0);  // 160 MiB through a 64 MiB budget
  }

  // Unmap in an interleaved order, so that the address-space bookkeeping
  // sees holes.
  for (int pass = 0; pass < 2; pass++) {
    for (int i = pass; i < kRegions; i += 2) {
      absl::Status st = rt->Unmap(regions[i], pages * kPage);
      ASSERT_TRUE(st.ok()) << "Unmap of region " << i << ": " << st;
    }
  }
  s = rt->GetStats();
  EXPECT_EQ(s.regions, 0);
  EXPECT_EQ(s.mapped_bytes, 0);
  for (int i = 0;
       i < 500 && (rt->GetStats().swpginuse != 0 || rt->GetStats().free != rt->GetStats().npages);
       i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  s = rt->GetStats();
  EXPECT_EQ(s.swpginuse, 0);
  EXPECT_EQ(s.swpgonly, 0);
  EXPECT_EQ(s.free, s.npages);
}

}  // namespace
}  // namespace uvmrt
