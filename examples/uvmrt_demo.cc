// uvmrt_demo: maps a region four times the resident budget, writes it
// sequentially, verifies it, rewrites random pages from several threads,
// verifies everything again, and prints the uvmexp counters.
//
//   uvmrt_demo [--budget-mib N] [--mult M] [--threads T] [--swap PATH]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "uvmrt/runtime.h"

namespace {

constexpr size_t kPage = 4096;

uint64_t pattern(uint64_t page, uint64_t gen) {
  return (page * 0x9E3779B97F4A7C15ull) ^ (gen * 0xD1B54A32D192ED03ull) ^ 0x5555;
}

void fill(char* p, uint64_t page, uint64_t gen) {
  auto* w = reinterpret_cast<uint64_t*>(p);
  const uint64_t v = pattern(page, gen);
  for (size_t i = 0; i < kPage / 8; i += 64) w[i] = v + i;
  w[kPage / 8 - 1] = v;
}

bool check(const char* p, uint64_t page, uint64_t gen) {
  auto* w = reinterpret_cast<const uint64_t*>(p);
  const uint64_t v = pattern(page, gen);
  for (size_t i = 0; i < kPage / 8; i += 64) {
    if (w[i] != v + i) return false;
  }
  return w[kPage / 8 - 1] == v;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  size_t budget_mib = 64, mult = 4;
  int threads = 2;
  std::string swap;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "uvmrt_demo: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--budget-mib") {
      budget_mib = std::strtoull(next(), nullptr, 10);
    } else if (a == "--mult") {
      mult = std::strtoull(next(), nullptr, 10);
    } else if (a == "--threads") {
      threads = std::atoi(next());
    } else if (a == "--swap") {
      swap = next();
    } else {
      std::fprintf(stderr,
                   "usage: uvmrt_demo [--budget-mib N] [--mult M] [--threads T] "
                   "[--swap PATH]\n");
      return 2;
    }
  }
  if (budget_mib == 0 || mult == 0 || threads < 1) {
    std::fprintf(stderr, "uvmrt_demo: sizes and thread counts must be positive\n");
    return 2;
  }

  uvmrt::Options o;
  o.budget_bytes = budget_mib << 20;
  o.swap_path = swap;
  o.swap_bytes = (mult + 1) * o.budget_bytes;
  auto rt = uvmrt::Runtime::Create(o);
  if (!rt.ok()) {
    std::fprintf(stderr, "%s\n", std::string(rt.status().message()).c_str());
    return 1;
  }
  const size_t bytes = mult * o.budget_bytes;
  const uint64_t npages = bytes / kPage;
  auto m = (*rt)->Map(bytes);
  if (!m.ok()) {
    std::fprintf(stderr, "%s\n", std::string(m.status().message()).c_str());
    return 1;
  }
  char* base = static_cast<char*>(*m);
  std::printf("uvmrt_demo: budget %zu MiB, region %zu MiB (%zux), swap %s\n", budget_mib,
              bytes >> 20, mult, swap.empty() ? "$TMPDIR" : swap.c_str());

  // Generation of each page's pattern; every thread owns pages i % threads.
  std::vector<uint32_t> gen(npages, 0);
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t p = 0; p < npages; p++) {
    fill(base + p * kPage, p, 0);
    if ((p + 1) % (npages / 4) == 0) {
      std::printf("  sequential write: %3.0f%%\n", 100.0 * (p + 1) / npages);
      std::fflush(stdout);
    }
  }
  std::printf("sequential write: %.2f s\n", seconds_since(t0));

  auto verify = [&](const char* what) {
    auto t = std::chrono::steady_clock::now();
    for (uint64_t p = 0; p < npages; p++) {
      if (!check(base + p * kPage, p, gen[p])) {
        std::fprintf(stderr, "uvmrt_demo: %s: page %llu holds wrong data\n", what,
                     static_cast<unsigned long long>(p));
        std::exit(1);
      }
    }
    std::printf("%s: every page verified in %.2f s\n", what, seconds_since(t));
  };
  verify("verify after sequential write");

  t0 = std::chrono::steady_clock::now();
  const uint64_t ops = npages;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; t++) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      for (uint64_t i = 0; i < ops / threads; i++) {
        uint64_t p = rng() % npages;
        p -= p % threads;
        p += t;
        if (p >= npages) continue;
        if (!check(base + p * kPage, p, gen[p])) {
          std::fprintf(stderr, "uvmrt_demo: random pass: page %llu holds wrong data\n",
                       static_cast<unsigned long long>(p));
          std::exit(1);
        }
        gen[p]++;
        fill(base + p * kPage, p, gen[p]);
      }
    });
  }
  for (auto& t : ts) t.join();
  std::printf("random read-modify-write (%d threads, %llu ops): %.2f s\n", threads,
              static_cast<unsigned long long>(ops), seconds_since(t0));
  verify("verify after random pass");

  uvmrt::Stats s = (*rt)->GetStats();
  std::printf("\nuvmexp:\n");
  std::printf("  npages %lld  free %lld  active %lld  inactive %lld  paging %lld\n",
              (long long)s.npages, (long long)s.free, (long long)s.active, (long long)s.inactive,
              (long long)s.paging);
  std::printf("  freemin %lld  freetarg %lld  inactarg %lld\n", (long long)s.freemin,
              (long long)s.freetarg, (long long)s.inactarg);
  std::printf("  swpages %lld  swpginuse %lld  swpgonly %lld  swpgbad %lld\n", (long long)s.swpages,
              (long long)s.swpginuse, (long long)s.swpgonly, (long long)s.swpgbad);
  std::printf(
      "  faults %lld: zero-fill %lld, swap-in %lld, reactivate %lld, first-write %lld, "
      "busy-wait %lld, uvm_wait %lld\n",
      (long long)s.faults, (long long)s.flt_zfill, (long long)s.flt_swapin, (long long)s.flt_react,
      (long long)s.flt_wp, (long long)s.flt_busywait, (long long)s.flt_uvmwait);
  std::printf("  pdwoke %lld  pdrevs %lld  pdscans %lld  pdfreed %lld  pdreact %lld  pdbusy %lld\n",
              (long long)s.pdwoke, (long long)s.pdrevs, (long long)s.pdscans, (long long)s.pdfreed,
              (long long)s.pdreact, (long long)s.pdbusy);
  std::printf("  pdpageouts %lld  pdpending %lld  pddeact %lld  pgswapout %lld  pgswapin %lld\n",
              (long long)s.pdpageouts, (long long)s.pdpending, (long long)s.pddeact,
              (long long)s.pgswapout, (long long)s.pgswapin);
  std::printf("  kernel-reported resident: %lld KiB of a %zu KiB budget\n",
              (long long)(*rt)->KernelResidentBytes() >> 10, o.budget_bytes >> 10);
  if (absl::Status st = (*rt)->Unmap(base); !st.ok()) {
    std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
