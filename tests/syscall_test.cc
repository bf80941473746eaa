// syscall_test: a managed buffer handed to read(2) and write(2) behaves as
// ordinary memory, also when it is not resident (design.md, I6).  With
// in-thread faults the kernel cannot wait for a fault inside a system call:
// the call fails with EFAULT until the application touches the buffer
// (docs/integration.md), and the tests check that instead.
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "uvm/uvm.h"

namespace uvmrt::testing {
namespace {

class TempFile {
 public:
  TempFile() {
    std::string tmpl = "/tmp/uvmrt-syscall-XXXXXX";
    fd_ = mkstemp(tmpl.data());
    path_ = tmpl;
  }
  ~TempFile() {
    close(fd_);
    unlink(path_.c_str());
  }
  int fd() const { return fd_; }

 private:
  int fd_;
  std::string path_;
};

// Touches pages [first, first + n): reads them, or writes them (keeping
// their contents) if `write`.
void touch(char* base, uint64_t first, uint64_t n, bool write) {
  for (uint64_t p = first; p < first + n; p++) {
    volatile char* c = base + p * kPage;
    const char v = *c;
    if (write) *c = v;
  }
}

// In in-thread mode: the call fails with EFAULT on the non-resident buffer
// (and changes nothing), and is to be retried once the buffer is touched.
void expect_efault_in_thread(ssize_t r) {
  ASSERT_TRUE(in_thread_mode());
  EXPECT_EQ(r, -1);
  EXPECT_EQ(errno, EFAULT);
}

TEST(Syscalls, ReadIntoAndWriteFromNonResidentMemory) {
  const RegionFixture f;
  Runtime* rt = f.rt.get();
  const uint64_t npages = f.npages;
  char* base = f.base;

  // Fill the whole region so its first pages are evicted to swap.
  for (uint64_t p = 0; p < npages; p++) fill_page(base + p * kPage, p, 1);
  const uint64_t n = 64;  // pages moved by each system call

  // write(2) from evicted pages: the kernel faults them back in.
  TempFile out;
  Stats s0 = rt->GetStats();
  if (in_thread_mode()) {
    expect_efault_in_thread(write(out.fd(), base, n * kPage));
    touch(base, 0, n, /*write=*/false);
  }
  ASSERT_EQ(write(out.fd(), base, n * kPage), static_cast<ssize_t>(n * kPage));
  Stats s1 = rt->GetStats();
  EXPECT_GT(s1.pgswapin, s0.pgswapin) << "the pages were resident; the test proves nothing";
  std::vector<char> buf(n * kPage);
  ASSERT_EQ(pread(out.fd(), buf.data(), buf.size(), 0), static_cast<ssize_t>(buf.size()));
  for (uint64_t p = 0; p < n; p++) ASSERT_EQ(check_page(buf.data() + p * kPage, p, 1), -1);

  // read(2) into evicted pages, in the middle of the region.
  TempFile in;
  for (uint64_t p = 0; p < n; p++) fill_page(buf.data() + p * kPage, 1000 + p, 9);
  ASSERT_EQ(pwrite(in.fd(), buf.data(), buf.size(), 0), static_cast<ssize_t>(buf.size()));
  const uint64_t at = npages / 4;
  s0 = rt->GetStats();
  if (in_thread_mode()) {
    expect_efault_in_thread(pread(in.fd(), base + at * kPage, n * kPage, 0));
    touch(base, at, n, /*write=*/true);
  }
  ASSERT_EQ(pread(in.fd(), base + at * kPage, n * kPage, 0), static_cast<ssize_t>(n * kPage));
  s1 = rt->GetStats();
  EXPECT_GT(s1.faults, s0.faults);
  for (uint64_t p = 0; p < n; p++) {
    ASSERT_EQ(check_page(base + (at + p) * kPage, 1000 + p, 9), -1) << "page " << p;
  }
  // The neighbours are untouched.
  ASSERT_EQ(check_page(base + (at - 1) * kPage, at - 1, 1), -1);
  ASSERT_EQ(check_page(base + (at + n) * kPage, at + n, 1), -1);
}

TEST(Syscalls, ReadIntoNeverTouchedMemory) {
  auto rt = make_runtime(test_options(test_budget()));
  char* base = static_cast<char*>(*rt->Map(1 << 20));
  TempFile in;
  std::vector<char> buf(16 * kPage);
  for (size_t p = 0; p < 16; p++) fill_page(buf.data() + p * kPage, p, 5);
  ASSERT_EQ(pwrite(in.fd(), buf.data(), buf.size(), 0), static_cast<ssize_t>(buf.size()));
  if (in_thread_mode()) {
    expect_efault_in_thread(pread(in.fd(), base, buf.size(), 0));
    touch(base, 0, 16, /*write=*/true);
  }
  ASSERT_EQ(pread(in.fd(), base, buf.size(), 0), static_cast<ssize_t>(buf.size()));
  for (size_t p = 0; p < 16; p++) ASSERT_EQ(check_page(base + p * kPage, p, 5), -1);
  const Stats s = rt->GetStats();
  // The 16 pages, and at most a fault-around run and a run filled ahead
  // past them.
  EXPECT_GE(s.flt_zfill + s.flt_around, 16);
  EXPECT_LE(s.flt_zfill + s.flt_around, static_cast<int64_t>(16 + 2 * uvm::kMaxFaultAhead));
}

}  // namespace
}  // namespace uvmrt::testing
