// malloc_cxx_test: a C++ program linked with nothing but uvmrt-malloc.  Every
// form of new and delete, standard containers and threads allocate several
// times the budget (UVMRT_BUDGET) from uvmrt memory, verified byte by byte.
//
//   malloc_cxx_test           the whole test
//   malloc_cxx_test --quick   the forms of new and delete only
#include <malloc.h>
#include <stdint.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "uvmrt/uvmrt_malloc.h"

namespace {

std::atomic<int> failures{0};

#define CHECK(cond, ...)                                                            \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                            \
      std::fprintf(stderr, "\n");                                                   \
      if (++failures > 20) std::exit(1);                                            \
    }                                                                               \
  } while (0)

uint64_t Word(uint64_t tag, size_t i) {
  uint64_t x = (tag + 1) * 0x9E3779B97F4A7C15ull + i * 0xC2B2AE3D27D4EB4Full;
  return x ^ (x >> 31);
}

size_t Budget() {
  const char* v = std::getenv("UVMRT_BUDGET");
  if (v == nullptr) return size_t{256} << 20;
  char* end;
  size_t n = std::strtoull(v, &end, 10);
  if (*end == 'K' || *end == 'k') n <<= 10;
  if (*end == 'M' || *end == 'm') n <<= 20;
  if (*end == 'G' || *end == 'g') n <<= 30;
  return n;
}

struct alignas(64) Line {
  uint64_t w[8];
};
struct alignas(4096) PageObj {
  unsigned char b[4096];
};
struct alignas(1 << 20) MegAligned {
  unsigned char b[100];
};

void TestNewForms() {
  int* i = new int(42);
  CHECK(uvmrt_malloc_owns(i) && *i == 42, "new int");
  delete i;
  int* a = new int[1000]();
  CHECK(uvmrt_malloc_owns(a) && a[999] == 0, "new int[]");
  delete[] a;
  auto* n = new (std::nothrow) double[10];
  CHECK(n != nullptr && uvmrt_malloc_owns(n), "nothrow new[]");
  delete[] n;
  // Aligned new (C++17): operator new(size_t, align_val_t), and the sized,
  // aligned delete.
  auto* l = new Line[100];
  CHECK(reinterpret_cast<uintptr_t>(l) % 64 == 0 && uvmrt_malloc_owns(l), "new Line[]");
  for (int k = 0; k < 100; k++) l[k].w[7] = k;
  delete[] l;
  auto* p = new PageObj;
  CHECK(reinterpret_cast<uintptr_t>(p) % 4096 == 0 && uvmrt_malloc_owns(p), "new PageObj");
  std::memset(p->b, 1, sizeof(p->b));
  delete p;
  auto* m = new MegAligned;
  CHECK(reinterpret_cast<uintptr_t>(m) % (1 << 20) == 0 && uvmrt_malloc_owns(m), "new MegAligned");
  delete m;
  auto* q = new (std::nothrow) PageObj[3];
  CHECK(q != nullptr && reinterpret_cast<uintptr_t>(q) % 4096 == 0, "nothrow aligned new[]");
  delete[] q;
  // The operators called directly, with sizes.
  void* r = ::operator new(1000);
  ::operator delete(r, 1000);
  r = ::operator new(1000, std::align_val_t(256));
  CHECK(reinterpret_cast<uintptr_t>(r) % 256 == 0 && uvmrt_malloc_owns(r), "aligned operator new");
  ::operator delete(r, 1000, std::align_val_t(256));
  r = ::operator new[](5000, std::align_val_t(8192), std::nothrow);
  CHECK(r != nullptr && reinterpret_cast<uintptr_t>(r) % 8192 == 0, "aligned nothrow new[]");
  ::operator delete[](r, std::align_val_t(8192), std::nothrow);
  // Exhaustion throws.
  bool threw = false;
  try {
    volatile size_t huge = SIZE_MAX / 4;
    void* x = ::operator new(huge);
    ::operator delete(x);
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  CHECK(threw, "operator new(huge) must throw bad_alloc");
  CHECK(::operator new(SIZE_MAX / 4, std::nothrow) == nullptr, "nothrow new(huge)");
}

// Four times the budget in vectors of words, verified after all is written.
void TestContainers(size_t budget) {
  const size_t per = (256 << 10) / sizeof(uint64_t);
  const size_t nvec = 4 * budget / (per * sizeof(uint64_t));
  std::vector<std::vector<uint64_t>> vs(nvec);
  for (size_t v = 0; v < nvec; v++) {
    vs[v].reserve(per);
    for (size_t i = 0; i < per; i++) vs[v].push_back(Word(v, i));
    CHECK(uvmrt_malloc_owns(vs[v].data()), "vector %zu storage", v);
  }
  for (size_t v = 0; v < nvec; v++) {
    for (size_t i = 0; i < per; i++) {
      if (vs[v][i] != Word(v, i)) {
        CHECK(false, "vector %zu word %zu", v, i);
        break;
      }
    }
  }
  uvmrt_stats s;
  CHECK(uvmrt_malloc_get_stats(&s) == 0 && s.pgswapout > 0, "containers were not paged out");
  vs.clear();
  vs.shrink_to_fit();

  // Strings of every length that grow, in maps.
  std::map<int, std::string> m;
  std::unordered_map<std::string, int> u;
  for (int i = 0; i < 20000; i++) {
    std::string str;
    for (int k = 0; k < i % 300; k++) str.push_back(static_cast<char>('a' + (i + k) % 26));
    u.emplace(str + std::to_string(i), i);
    m.emplace(i, std::move(str));
  }
  for (int i = 0; i < 20000; i++) {
    const std::string& str = m.at(i);
    CHECK(static_cast<int>(str.size()) == i % 300, "string %d size", i);
    for (int k = 0; k < i % 300; k++) {
      if (str[k] != static_cast<char>('a' + (i + k) % 26)) {
        CHECK(false, "string %d byte %d", i, k);
        break;
      }
    }
    CHECK(u.at(str + std::to_string(i)) == i, "unordered_map %d", i);
  }
  auto sp = std::make_shared<std::vector<int>>(1000, 7);
  CHECK(uvmrt_malloc_owns(sp.get()), "make_shared");
}

// Threads allocate, and some blocks are freed by other threads or after
// their allocating thread has exited.
void TestThreads(size_t budget) {
  const int nthreads = 4;
  const size_t per_thread = budget;  // 4 x budget in all
  std::vector<std::vector<std::unique_ptr<uint64_t[]>>> out(nthreads);
  std::vector<std::thread> ts;
  for (int t = 0; t < nthreads; t++) {
    ts.emplace_back([&, t] {
      const size_t words = (64 << 10) / sizeof(uint64_t);
      for (size_t done = 0; done < per_thread; done += words * sizeof(uint64_t)) {
        std::unique_ptr<uint64_t[]> b(new uint64_t[words]);
        CHECK(uvmrt_malloc_owns(b.get()), "thread %d block", t);
        for (size_t i = 0; i < words; i++) b[i] = Word(t * 1000000 + done, i);
        out[t].push_back(std::move(b));
      }
    });
  }
  for (auto& th : ts) th.join();
  for (int t = 0; t < nthreads; t++) {
    const size_t words = (64 << 10) / sizeof(uint64_t);
    size_t done = 0;
    for (const auto& b : out[t]) {
      for (size_t i = 0; i < words; i++) {
        if (b[i] != Word(t * 1000000 + done, i)) {
          CHECK(false, "thread %d block at %zu word %zu", t, done, i);
          break;
        }
      }
      done += words * sizeof(uint64_t);
    }
  }
  out.clear();  // freed by this thread, after their threads exited
  // A thread that frees what main allocated.
  std::vector<char*> blocks;
  for (int i = 0; i < 1000; i++) blocks.push_back(new char[1000 + i]);
  std::thread([&] {
    for (char* b : blocks) delete[] b;
  }).join();
}

}  // namespace

int main(int argc, char** argv) {
  const size_t budget = Budget();
  CHECK(uvmrt_malloc_active() == 1, "uvmrt-malloc is not active");
  TestNewForms();
  if (argc > 1 && std::strcmp(argv[1], "--quick") == 0) return failures == 0 ? 0 : 1;
  TestContainers(budget);
  TestThreads(budget);
  uvmrt_stats s;
  uvmrt_malloc_get_stats(&s);
  std::printf("faults %lld (zfill %lld, swapin %lld), pages out %lld, in %lld\n",
              static_cast<long long>(s.faults), static_cast<long long>(s.flt_zfill),
              static_cast<long long>(s.flt_swapin), static_cast<long long>(s.pgswapout),
              static_cast<long long>(s.pgswapin));
  if (failures != 0) {
    std::printf("malloc_cxx_test: %d failures\n", failures.load());
    return 1;
  }
  std::printf("malloc_cxx_test: passed\n");
  return 0;
}
