// hashmap_demo: an absl::flat_hash_map four times the size of its resident
// budget, kept in uvmrt memory through uvmrt::Allocator.
//
// The map takes ids to records (std::vector<uint64_t> of --record-bytes).
// The table and every record come from a uvmrt::RegionResource, so the whole
// working set is paged by uvmrt.  The demo fills the map, verifies every
// record, rewrites a quarter of them at random, verifies again, erases half,
// and prints the uvmexp counters after each step.
//
//   hashmap_demo [--budget-mib N] [--mult M] [--record-bytes B]
//
// Runtime options come from the environment too (UVMRT_BUDGET,
// UVMRT_SWAP_PATH, ...; see docs/integration.md); flags win.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "uvmrt/allocator.h"
#include "uvmrt/env.h"
#include "uvmrt/memory_resource.h"
#include "uvmrt/runtime.h"

namespace {

using Record = std::vector<uint64_t, uvmrt::Allocator<uint64_t>>;
using Map = absl::flat_hash_map<uint64_t, Record, absl::Hash<uint64_t>, std::equal_to<uint64_t>,
                                uvmrt::Allocator<std::pair<const uint64_t, Record>>>;

uint64_t Word(uint64_t key, uint64_t gen, size_t i) {
  uint64_t x = (key + 1) * 0x9E3779B97F4A7C15ull ^ (gen + 3) * 0xC2B2AE3D27D4EB4Full;
  x ^= x >> 29;
  return x + i * 0x100000001B3ull;
}

void Fill(Record& r, uint64_t key, uint64_t gen) {
  for (size_t i = 0; i < r.size(); i++) r[i] = Word(key, gen, i);
}

bool Check(const Record& r, uint64_t key, uint64_t gen) {
  for (size_t i = 0; i < r.size(); i++) {
    if (r[i] != Word(key, gen, i)) return false;
  }
  return true;
}

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void PrintStats(const char* step, const uvmrt::Runtime& rt, double secs) {
  const uvmrt::Stats s = rt.GetStats();
  const double mib = static_cast<double>(s.pagesize) / (1 << 20);
  std::printf(
      "%-8s %6.2fs  faults %8lld (zfill %lld, swapin %lld, react %lld)  pageouts %6lld  "
      "resident %6.1f MiB  swap %6.1f MiB  regions %lld\n",
      step, secs, static_cast<long long>(s.faults), static_cast<long long>(s.flt_zfill),
      static_cast<long long>(s.flt_swapin), static_cast<long long>(s.flt_react),
      static_cast<long long>(s.pdpageouts),
      static_cast<double>(s.active + s.inactive + s.paging) * mib,
      static_cast<double>(s.swpginuse) * mib, static_cast<long long>(s.regions));
}

[[noreturn]] void Usage() {
  std::fprintf(stderr, "usage: hashmap_demo [--budget-mib N] [--mult M] [--record-bytes B]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  size_t budget_mib = 0, mult = 4, record_bytes = 4096;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (i + 1 >= argc) Usage();
    size_t v = 0;
    if (!absl::SimpleAtoi(argv[++i], &v) || v == 0) Usage();
    if (a == "--budget-mib") {
      budget_mib = v;
    } else if (a == "--mult") {
      mult = v;
    } else if (a == "--record-bytes") {
      record_bytes = v;
    } else {
      Usage();
    }
  }

  uvmrt::Options base;
  base.budget_bytes = size_t{64} << 20;
  absl::StatusOr<uvmrt::Options> env = uvmrt::OptionsFromEnv(base);
  if (!env.ok()) {
    std::fprintf(stderr, "%s\n", std::string(env.status().message()).c_str());
    return 1;
  }
  uvmrt::Options o = *env;
  if (budget_mib != 0) o.budget_bytes = budget_mib << 20;
  // Room in swap for the data beyond the budget, and for the table's growth.
  if (o.swap_bytes == 0) o.swap_bytes = (mult + 2) * o.budget_bytes;
  auto rt = uvmrt::Runtime::Create(o);
  if (!rt.ok()) {
    std::fprintf(stderr, "%s\n", std::string(rt.status().message()).c_str());
    return 1;
  }

  const size_t words = (record_bytes + 7) / 8;
  const uint64_t n = mult * o.budget_bytes / (words * 8);
  std::printf("hashmap_demo: budget %zu MiB, %llu records of %zu bytes (%zu MiB, %zux budget)\n",
              o.budget_bytes >> 20, static_cast<unsigned long long>(n), words * 8,
              static_cast<size_t>(n * words * 8) >> 20, mult);

  uvmrt::RegionResource::Config rc;
  rc.discard_bytes = 4096;  // an erased record gives its pages back at once
  uvmrt::RegionResource regions(rt->get(), rc);
  // The generation each record holds (kErased once erased), in ordinary memory.
  constexpr uint16_t kErased = 0xffff;
  std::vector<uint16_t> gen(n, 0);
  bool ok = true;
  {
    Map map(0, Map::hasher(), Map::key_equal(), &regions);
    uvmrt::Allocator<uint64_t> alloc(&regions);

    auto t0 = std::chrono::steady_clock::now();
    for (uint64_t k = 0; k < n; k++) {
      Record& r = map.try_emplace(k, words, 0, alloc).first->second;
      Fill(r, k, 0);
    }
    PrintStats("fill", **rt, Since(t0));

    auto verify = [&](const char* step) {
      auto t = std::chrono::steady_clock::now();
      uint64_t bad = 0;
      for (uint64_t k = 0; k < n; k++) {
        auto it = map.find(k);
        if (gen[k] == kErased) {
          if (it != map.end()) bad++;
        } else if (it == map.end() || !Check(it->second, k, gen[k])) {
          bad++;
        }
      }
      PrintStats(step, **rt, Since(t));
      if (bad != 0) {
        std::printf("hashmap_demo: %llu records wrong after %s\n",
                    static_cast<unsigned long long>(bad), step);
        ok = false;
      }
    };
    verify("verify");

    t0 = std::chrono::steady_clock::now();
    std::mt19937_64 rng(42);
    for (uint64_t i = 0; i < n / 4; i++) {
      const uint64_t k = rng() % n;
      gen[k] = static_cast<uint16_t>(gen[k] + 1);
      Fill(map.find(k)->second, k, gen[k]);
    }
    PrintStats("rewrite", **rt, Since(t0));
    verify("verify");

    t0 = std::chrono::steady_clock::now();
    for (uint64_t k = 0; k < n; k += 2) {
      map.erase(k);
      gen[k] = kErased;
    }
    PrintStats("erase", **rt, Since(t0));
    verify("verify");
  }
  regions.release();
  PrintStats("freed", **rt, 0);
  std::printf(ok ? "hashmap_demo: all records verified\n" : "hashmap_demo: FAILED\n");
  return ok ? 0 : 1;
}
