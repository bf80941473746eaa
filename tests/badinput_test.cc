// badinput_test: every bad argument gets a clear absl::Status, never a crash.
#include <errno.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace uvmrt::testing {
namespace {

using ::testing::HasSubstr;

Options small() {
  return test_options(size_t{4} << 20, 2);
}

TEST(BadInput, ZeroSizeIsRefused) {
  auto rt = make_runtime(small());
  auto m = rt->Map(0);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("zero bytes"));
}

TEST(BadInput, UnalignedSizeIsRoundedUp) {
  auto rt = make_runtime(small());
  auto m = rt->Map(5000);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(*m) % kPage, 0u);
  char* p = static_cast<char*>(*m);
  p[8191] = 1;  // the rounded-up second page is usable
  EXPECT_EQ(rt->GetStats().mapped_bytes, 8192);
  EXPECT_EQ(rt->Unmap(p, 4096).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(rt->Unmap(p, 5000).ok());
}

TEST(BadInput, UnmapOfUnmappedAddress) {
  auto rt = make_runtime(small());
  int on_stack = 0;
  absl::Status st = rt->Unmap(&on_stack);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("not the start of a mapped region"));
  char* p = static_cast<char*>(*rt->Map(1 << 20));
  EXPECT_EQ(rt->Unmap(p + kPage).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(rt->Unmap(p).ok());
  EXPECT_EQ(rt->Unmap(p).code(), absl::StatusCode::kInvalidArgument);  // twice
}

TEST(BadInput, AdviseNeedsARegionStart) {
  auto rt = make_runtime(small());
  char* p = static_cast<char*>(*rt->Map(1 << 20));
  EXPECT_TRUE(rt->Advise(p, Runtime::Advice::kSequential).ok());
  EXPECT_EQ(rt->Advise(p + kPage, Runtime::Advice::kRandom).code(),
            absl::StatusCode::kInvalidArgument);
  int x;
  EXPECT_EQ(rt->Advise(&x, Runtime::Advice::kRandom).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Stats, PublishedForUvmstat) {
  auto rt = make_runtime(small());
  const std::string path = rt->StatsPath();
  ASSERT_FALSE(path.empty());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0) << path;
  rt.reset();
  EXPECT_NE(stat(path.c_str(), &st), 0) << "the counters file outlived the runtime";
}

TEST(BadInput, BudgetBelowMinimum) {
  Options o = small();
  o.budget_bytes = 64 * 1024;
  auto rt = Runtime::Create(o);
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(rt.status().message()), HasSubstr("below the minimum"));
}

TEST(BadInput, UnwritableSwapPath) {
  Options o = small();
  o.swap_path = "/nonexistent-dir/uvmrt.swap";
  auto rt = Runtime::Create(o);
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), absl::StatusCode::kNotFound) << rt.status();
  EXPECT_THAT(std::string(rt.status().message()), HasSubstr("cannot create swap file"));
  EXPECT_THAT(std::string(rt.status().message()), HasSubstr("create the directory"));
  o.swap_path = "/proc/uvmrt.swap";
  rt = Runtime::Create(o);
  ASSERT_FALSE(rt.ok());
  EXPECT_THAT(std::string(rt.status().message()), HasSubstr("swap"));
}

TEST(BadInput, ExistingSwapFileIsNotClobbered) {
  char path[] = "/tmp/uvmrt-existing-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "keep", 4), 4);
  close(fd);
  Options o = small();
  o.swap_path = path;
  auto rt = Runtime::Create(o);
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), absl::StatusCode::kAlreadyExists);
  struct stat st;
  ASSERT_EQ(stat(path, &st), 0);
  EXPECT_EQ(st.st_size, 4);
  unlink(path);
}

TEST(BadInput, SwapOnTmpfsIsRefused) {
  struct statfs fs;
  if (statfs("/dev/shm", &fs) != 0) GTEST_SKIP() << "no /dev/shm";
  Options o = small();
  o.swap_path = "/dev/shm";
  auto rt = Runtime::Create(o);
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(rt.status().message()), HasSubstr("tmpfs"));
}

// ramfs has no O_DIRECT at all.  Mounting one needs root; elsewhere the
// test is skipped.
TEST(BadInput, SwapOnFilesystemWithoutODirect) {
  char dir[] = "/tmp/uvmrt-ramfs-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  if (mount("uvmrt-test", dir, "ramfs", 0, nullptr) != 0) {
    rmdir(dir);
    GTEST_SKIP() << "cannot mount ramfs here (not root?)";
  }
  Options o = small();
  o.swap_path = dir;
  auto rt = Runtime::Create(o);
  EXPECT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(rt.status().message()), HasSubstr("does not support O_DIRECT"));
  o.allow_buffered_swap = true;  // the documented way out
  {
    auto rt2 = Runtime::Create(o);
    EXPECT_TRUE(rt2.ok()) << rt2.status();
  }
  // The io_uring ring drops its registered swap file only after ring exit
  // work that runs after close(), so a plain umount can still find the
  // mount busy here; detach it instead.
  EXPECT_EQ(umount2(dir, MNT_DETACH), 0) << strerror(errno);
  EXPECT_EQ(rmdir(dir), 0) << strerror(errno);
}

TEST(BadInput, SwapSmallerThanOneCluster) {
  Options o = small();
  o.cluster_pages = 16;
  o.swap_bytes = 16 * kPage;  // the header page leaves room for 15
  auto rt = Runtime::Create(o);
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(rt.status().message()), HasSubstr("smaller than one cluster"));
}

TEST(BadInput, OutOfRangeClusterAndThreads) {
  Options o = small();
  o.cluster_pages = 0;
  EXPECT_EQ(Runtime::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.cluster_pages = 100000;
  EXPECT_EQ(Runtime::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = small();
  o.fault_threads = 0;
  EXPECT_EQ(Runtime::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BadInput, MapBeyondCapacity) {
  Options o = small();  // 4 MiB budget + 8 MiB swap
  auto rt = make_runtime(o);
  auto big = rt->Map(13 << 20);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("exceed budget + swap"));
  auto a = rt->Map(8 << 20);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(rt->Map(8 << 20).status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(rt->Unmap(*a).ok());
  EXPECT_TRUE(rt->Map(8 << 20).ok());  // capacity comes back
  o.overcommit = true;
  auto rt2 = make_runtime(o);
  EXPECT_TRUE(rt2->Map(64 << 20).ok());
}

TEST(BadInput, HugeMappingIsRefused) {
  Options o = small();
  o.overcommit = true;
  auto rt = make_runtime(o);
  auto m = rt->Map(size_t{1} << 60);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("too large"));
  EXPECT_FALSE(rt->Map(SIZE_MAX).ok());
}

}  // namespace
}  // namespace uvmrt::testing
