// test_util.h: helpers shared by the runtime's integration tests.
#ifndef UVMRT_TESTS_TEST_UTIL_H_
#define UVMRT_TESTS_TEST_UTIL_H_

#include <dirent.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "uvmrt/runtime.h"

namespace uvmrt::testing {

// A fresh directory /tmp/uvmrt-<name>-XXXXXX (a disk filesystem here; swap
// refuses tmpfs), removed when it goes out of scope if it is empty, also
// when a failed assertion returns early.
class TempDir {
 public:
  explicit TempDir(const std::string& name) {
    std::string t = "/tmp/uvmrt-" + name + "-XXXXXX";
    if (mkdtemp(t.data()) == nullptr) std::abort();
    path_ = t;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() { rmdir(path_.c_str()); }
  const std::string& path() const { return path_; }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    DIR* d = opendir(path_.c_str());
    if (d == nullptr) return out;
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    closedir(d);
    return out;
  }

 private:
  std::string path_;
};

inline constexpr size_t kPage = 4096;

// Built with AddressSanitizer or ThreadSanitizer.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// Sanitizer builds run the same tests on smaller regions
// (UVMRT_TEST_SCALE=small).
inline bool small_scale() {
  const char* s = std::getenv("UVMRT_TEST_SCALE");
  return s != nullptr && std::string(s) == "small";
}

inline size_t test_budget() {
  return small_scale() ? (size_t{4} << 20) : (size_t{16} << 20);
}

// UVMRT_TEST_IN_THREAD=1: the test's runtimes resolve faults on the
// touching thread (Options::in_thread_faults).  The integration suites run
// both ways (tests/CMakeLists.txt).
inline bool in_thread_mode() {
  const char* s = std::getenv("UVMRT_TEST_IN_THREAD");
  return s != nullptr && std::string(s) == "1";
}

inline Options test_options(size_t budget, size_t swap_mult = 6) {
  Options o;
  o.budget_bytes = budget;
  o.swap_bytes = swap_mult * budget;
  o.fault_threads = 2;
  o.in_thread_faults = in_thread_mode();
  return o;
}

inline std::unique_ptr<Runtime> make_runtime(const Options& o) {
  auto rt = Runtime::Create(o);
  EXPECT_TRUE(rt.ok()) << rt.status();
  if (!rt.ok()) std::abort();
  return std::move(*rt);
}

// A page's pattern: every 8-byte word depends on the page, its generation
// and the word's position, so a page with another page's (or generation's)
// data never verifies.
inline uint64_t page_seed(uint64_t page, uint64_t gen) {
  uint64_t x = (page + 1) * 0x9E3779B97F4A7C15ull ^ (gen + 7) * 0xC2B2AE3D27D4EB4Full;
  x ^= x >> 31;
  return x * 0x94D049BB133111EBull;
}

inline void fill_page(void* p, uint64_t page, uint64_t gen) {
  auto* w = static_cast<uint64_t*>(p);
  const uint64_t s = page_seed(page, gen);
  for (size_t i = 0; i < kPage / 8; i++) w[i] = s + i * 0x100000001B3ull;
}

// Returns the index of the first wrong word, or -1.
inline int check_page(const void* p, uint64_t page, uint64_t gen) {
  auto* w = static_cast<const uint64_t*>(p);
  const uint64_t s = page_seed(page, gen);
  for (size_t i = 0; i < kPage / 8; i++) {
    if (w[i] != s + i * 0x100000001B3ull) return static_cast<int>(i);
  }
  return -1;
}

inline bool page_is_zero(const void* p) {
  static const char zero[kPage] = {};
  return std::memcmp(p, zero, kPage) == 0;
}

// The setup most integration tests share: a runtime with budget B (the test
// budget unless given) and a region of 4 x B, mapped at construction unless
// `map` is false (then Map() maps each one).
struct RegionFixture {
  explicit RegionFixture(size_t b = test_budget(), bool map = true)
      : budget(b), rt(make_runtime(test_options(b))), bytes(4 * b), npages(bytes / kPage) {
    if (map) base = Map();
  }
  char* Map() const {
    auto m = rt->Map(bytes);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) std::abort();
    return static_cast<char*>(*m);
  }
  void write_all(uint64_t gen) const {
    for (uint64_t p = 0; p < npages; p++) fill_page(base + p * kPage, p, gen);
  }
  // Reads every page in order: the first that does not hold generation
  // gen's pattern, or -1.
  int64_t first_bad(uint64_t gen) const {
    for (uint64_t p = 0; p < npages; p++) {
      if (check_page(base + p * kPage, p, gen) != -1) return static_cast<int64_t>(p);
    }
    return -1;
  }

  size_t budget;
  std::unique_ptr<Runtime> rt;
  size_t bytes;
  uint64_t npages;
  char* base = nullptr;
};

}  // namespace uvmrt::testing

#endif  // UVMRT_TESTS_TEST_UTIL_H_
