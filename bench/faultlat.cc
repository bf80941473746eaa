// faultlat: fault service latency, p50 and p99, one JSON line per case.
//
// Each sample is the wall time of one single-word access to one page, read
// with the steady clock around the access.  Which kind of fault (if any) the
// access took is decided from counters read outside the timed window: the
// runtime's uvmexp counters for uvmrt, this thread's getrusage() fault counts
// for the kernel.  Only accesses that took exactly one fault of the case's
// kind count as samples, so every number below is the service time of that
// kind of fault as the application sees it (trap, handler, return).
//
//   native          first write to a page of plain anonymous mmap memory
//                   (MADV_NOHUGEPAGE, so one 4 KiB page per fault).
//   zero-fill       uvmrt: first write to a never-touched page while free
//                   frames are plentiful (pages of the first B/2 of the
//                   region, in random order).  Counts when faults and
//                   flt_zfill each rose by one and flt_around did not move.
//   swap-in         uvmrt: read of a page that is not resident and is read
//                   back from the swap file.  The region (region-mult x B)
//                   is written in full first, then read in random order (see
//                   Sampler).  Counts when faults and flt_swapin rose by one
//                   and flt_around did not move (no neighbours read along).
//   reactivation    uvmrt: read of a page that is resident but that the page
//                   daemon had unmapped (deactivated), mostly from stage 2 of
//                   Sampler.  Counts when faults and flt_react rose by one.
//   kernel-swap-in  plain, run in a memory cgroup limited to B with swap on:
//                   the same write-all then random reads; counts reads that
//                   took one major fault (getrusage ru_majflt).
//   kernel-minor    the same reads: those that took one minor fault and no
//                   major one (page found in the swap cache, or unmapped by
//                   reclaim but still resident).
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <memory>

#include "bench_util.h"

#ifdef UVMBENCH_HAVE_UVMRT
#include "uvmrt/runtime.h"
#endif

namespace uvmbench {
namespace {

constexpr char kUsage[] = R"(usage: faultlat --system=uvmrt|plain [flags]

  --system=NAME        uvmrt: cases native, zero-fill, swap-in, reactivation;
                       plain: cases kernel-swap-in, kernel-minor (run it in a
                       memory cgroup limited to B with swap enabled) and native
  --cases=LIST         subset of the cases above (default: all of the system's)
  --budget=SIZE        resident budget B (default 64M)
  --region-mult=X      region for the swap cases = X * B (default 4)
  --samples=N          samples wanted per case (default 20000)
  --seed=N             random seed (default 1)
  uvmrt only:
  --swap-dir=PATH      swap file or directory (default: $TMPDIR)
  --cluster-pages=N    pages per swap cluster (default 16)
  --fault-threads=N    userfaultfd handler threads (default 2)
  --in-thread-faults   resolve faults on the touching thread (SIGBUS); the
                       uvmrt cases are then named zero-fill-it, swap-in-it,
                       reactivation-it
  --allow-buffered-swap
)";

constexpr size_t kPage = 4096;
constexpr size_t kWords = kPage / sizeof(uint64_t);

inline void Barrier() {
  asm volatile("" ::: "memory");
}

// Times one write of `v` to *p, in nanoseconds.
inline int64_t TimedWrite(uint64_t* p, uint64_t v) {
  Barrier();
  int64_t t0 = NowNanos();
  Barrier();
  *reinterpret_cast<volatile uint64_t*>(p) = v;
  Barrier();
  int64_t t1 = NowNanos();
  Barrier();
  return t1 - t0;
}

// Times one read of *p, in nanoseconds; the value goes to *out.
inline int64_t TimedRead(const uint64_t* p, uint64_t* out) {
  Barrier();
  int64_t t0 = NowNanos();
  Barrier();
  *out = *reinterpret_cast<const volatile uint64_t*>(p);
  Barrier();
  int64_t t1 = NowNanos();
  Barrier();
  return t1 - t0;
}

// Appended to the uvmrt case names with --in-thread-faults: "-it".
std::string g_case_suffix;

void PrintCase(const std::string& system, const std::string& name, std::vector<double>& us,
               const std::string& extra_json) {
  Percentiles p = Summarize(us);
  JsonLine j;
  j.Add("type", "latency")
      .Add("system", system)
      .Add("case", system == "uvmrt" && name != "native" ? name + g_case_suffix : name)
      .Add("samples", static_cast<uint64_t>(p.n))
      .Add("p50_us", p.p50)
      .Add("p90_us", p.p90)
      .Add("p99_us", p.p99)
      .Add("max_us", p.max)
      .Add("mean_us", p.mean);
  if (!extra_json.empty()) j.AddRaw("touches", extra_json);
  j.Print();
}

[[noreturn]] void Mismatch(const char* what, uint64_t idx, const uint64_t* page, uint32_t gen) {
  int64_t w = CheckPage(page, kWords, idx, gen);
  Die(kExitVerify,
      "faultlat: DATA MISMATCH in %s: page=%" PRIu64 " addr=%p gen=%u word=%" PRId64
      " expected=0x%016" PRIx64 " got=0x%016" PRIx64,
      what, idx, static_cast<const void*>(page), gen, w,
      w >= 0 ? ExpectedWord(idx, gen, static_cast<size_t>(w)) : 0, w >= 0 ? page[w] : 0);
}

// native: first write to each page of fresh anonymous memory.
void Native(uint64_t samples) {
  size_t bytes = samples * kPage;
  void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) Die(kExitSetup, "mmap: %s", std::strerror(errno));
  madvise(m, bytes, MADV_NOHUGEPAGE);
  auto* base = static_cast<char*>(m);
  std::vector<double> us;
  us.reserve(samples);
  int64_t faults = 0;
  for (uint64_t i = 0; i < samples; ++i) {
    auto* p = reinterpret_cast<uint64_t*>(base + i * kPage);
    struct rusage r0, r1;
    getrusage(RUSAGE_THREAD, &r0);
    int64_t ns = TimedWrite(p, ExpectedWord(i, 1, 0));
    getrusage(RUSAGE_THREAD, &r1);
    faults += r1.ru_minflt - r0.ru_minflt;
    if (r1.ru_minflt - r0.ru_minflt == 1 && r1.ru_majflt == r0.ru_majflt) {
      us.push_back(static_cast<double>(ns) / 1000.0);
    }
    for (size_t w = 1; w < kWords; ++w) {
      if (p[w] != 0) Die(kExitVerify, "faultlat: native page %" PRIu64 " is not zero-filled", i);
    }
  }
  munmap(m, bytes);
  JsonLine t;
  t.Add("accesses", samples).Add("minflt", faults);
  PrintCase("plain", "native", us, t.Str());
}

// Timed reads for the swap cases, after the whole region was written once.
// Stage 1 reads every page once in random order: pages written long ago have
// only their swap copy.  Stage 2 reads uniformly at random, with repeats,
// from a window of 1.5 x B pages: there pages are often still resident, and
// some of them have been unmapped by the pager.  `classify` runs after each
// timed read and names the case the read belongs to ("nofault", a case, or ""
// for none).  Stage 1 ends when `stage1_done` says so, stage 2 when
// `stage2_done` does; each stage reads at most one page per page of region.
struct Sampler {
  char* base;
  uint64_t npages;
  uint64_t window;
  uint64_t seed;
  std::map<std::string, std::vector<double>> out;
  std::map<std::string, uint64_t> counts;

  template <class Before, class Classify>
  void Read(uint64_t idx, Before& before, Classify& classify) {
    auto* p = reinterpret_cast<uint64_t*>(base + idx * kPage);
    before();
    uint64_t v;
    int64_t ns = TimedRead(p, &v);
    std::string c = classify();
    counts[c.empty() ? "other" : c]++;
    counts["total"]++;
    if (!c.empty()) out[c].push_back(static_cast<double>(ns) / 1000.0);
    if (CheckPage(p, kWords, idx, 1) != -1) Mismatch("random read", idx, p, 1);
  }

  template <class Before, class Classify, class Done1, class Done2>
  void Run(Before before, Classify classify, Done1 stage1_done, Done2 stage2_done) {
    Rng rng(seed);
    std::vector<uint64_t> order(npages);
    for (uint64_t i = 0; i < npages; ++i) order[i] = i;
    for (uint64_t i = npages; i > 1; --i) std::swap(order[i - 1], order[rng.Below(i)]);
    for (uint64_t k = 0; k < npages && !stage1_done(); ++k) Read(order[k], before, classify);
    for (uint64_t k = 0; k < npages && !stage2_done(); ++k)
      Read(rng.Below(window), before, classify);
  }
};

std::string CountsJson(const std::map<std::string, uint64_t>& m) {
  JsonLine j;
  for (const auto& [k, v] : m) j.Add(k, v);
  return j.Str();
}

bool Wants(const std::vector<std::string>& cases, const std::string& c) {
  return std::find(cases.begin(), cases.end(), c) != cases.end();
}

// kernel-swap-in / kernel-minor: plain memory; the cgroup does the paging.
void PlainSwap(const std::vector<std::string>& cases, uint64_t budget, double mult,
               uint64_t samples, uint64_t seed) {
  uint64_t npages = static_cast<uint64_t>(mult * static_cast<double>(budget / kPage));
  size_t bytes = npages * kPage;
  void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) Die(kExitSetup, "mmap: %s", std::strerror(errno));
  auto* base = static_cast<char*>(m);
  for (uint64_t i = 0; i < npages; ++i)
    FillPage(reinterpret_cast<uint64_t*>(base + i * kPage), kWords, i, 1);

  Sampler sm{base, npages, std::min<uint64_t>(npages, budget / kPage * 3 / 2), seed, {}, {}};
  struct rusage r0;
  auto before = [&] { getrusage(RUSAGE_THREAD, &r0); };
  auto classify = [&]() -> std::string {
    struct rusage r1;
    getrusage(RUSAGE_THREAD, &r1);
    long maj = r1.ru_majflt - r0.ru_majflt, min = r1.ru_minflt - r0.ru_minflt;
    if (maj == 0 && min == 0) return "nofault";
    if (maj == 1) return "kernel-swap-in";
    if (maj == 0 && min == 1) return "kernel-minor";
    return "";
  };
  sm.Run(
      before, classify, [&] { return sm.out["kernel-swap-in"].size() >= samples; },
      [&] { return sm.out["kernel-minor"].size() >= samples; });
  std::string cj = CountsJson(sm.counts);
  for (const char* c : {"kernel-swap-in", "kernel-minor"}) {
    if (Wants(cases, c)) PrintCase("plain", c, sm.out[c], cj);
  }
  munmap(m, bytes);
}

#ifdef UVMBENCH_HAVE_UVMRT
void Uvmrt(const std::vector<std::string>& cases, const uvmrt::Options& o, double mult,
           uint64_t samples, uint64_t seed) {
  auto rt = uvmrt::Runtime::Create(o);
  if (!rt.ok()) Die(kExitSetup, "uvmrt: Runtime::Create: %s", rt.status().ToString().c_str());
  uint64_t npages = static_cast<uint64_t>(mult * static_cast<double>(o.budget_bytes / kPage));
  size_t bytes = npages * kPage;
  auto region = (*rt)->Map(bytes);
  if (!region.ok()) Die(kExitSetup, "uvmrt: Map: %s", region.status().ToString().c_str());
  auto* base = static_cast<char*>(*region);
  uvmrt::Runtime& r = **rt;

  // zero-fill: first writes, in random order (so that no fault-around
  // brings in neighbours), to pages of the first half of a budget's worth of
  // the region: free frames are plentiful.
  const uint64_t half = std::min<uint64_t>(o.budget_bytes / kPage / 2, npages);
  const uint64_t zf = std::min<uint64_t>(samples, half);
  std::vector<uint64_t> order(half);
  for (uint64_t i = 0; i < half; ++i) order[i] = i;
  Rng rng(seed ^ 0x2F111ull);
  for (uint64_t i = 0; i < zf; ++i) std::swap(order[i], order[i + rng.Below(half - i)]);
  std::vector<bool> written(npages, false);
  std::vector<double> zus;
  std::map<std::string, uint64_t> zcounts;
  for (uint64_t k = 0; k < zf; ++k) {
    const uint64_t i = order[k];
    auto* p = reinterpret_cast<uint64_t*>(base + i * kPage);
    uvmrt::Stats s0 = r.GetStats();
    int64_t ns = TimedWrite(p, ExpectedWord(i, 1, 0));
    uvmrt::Stats s1 = r.GetStats();
    if (s1.faults - s0.faults == 1 && s1.flt_zfill - s0.flt_zfill == 1 &&
        s1.flt_around == s0.flt_around) {
      zus.push_back(static_cast<double>(ns) / 1000.0);
      zcounts["zero-fill"]++;
    } else {
      zcounts[s1.faults == s0.faults ? "nofault" : "other"]++;
    }
    for (size_t w = 1; w < kWords; ++w) {
      if (p[w] != 0)
        Die(kExitVerify, "faultlat: uvmrt page %" PRIu64 " is not zero-filled (word %zu)", i, w);
    }
    FillPage(p, kWords, i, 1);
    written[i] = true;
  }
  zcounts["total"] = zf;
  if (Wants(cases, "zero-fill")) PrintCase("uvmrt", "zero-fill", zus, CountsJson(zcounts));

  if (Wants(cases, "swap-in") || Wants(cases, "reactivation")) {
    // Write the rest: the region is region-mult x B, so most of it goes to swap.
    for (uint64_t i = 0; i < npages; ++i) {
      if (!written[i]) FillPage(reinterpret_cast<uint64_t*>(base + i * kPage), kWords, i, 1);
    }
    usleep(200 * 1000);  // let the page daemon finish its pass
    Sampler sm{base, npages, std::min<uint64_t>(npages, o.budget_bytes / kPage * 3 / 2),
               seed, {},     {}};
    uvmrt::Stats s0{};
    auto before = [&] { s0 = r.GetStats(); };
    auto classify = [&]() -> std::string {
      uvmrt::Stats s1 = r.GetStats();
      int64_t f = s1.faults - s0.faults;
      if (f == 0) return "nofault";
      if (f != 1) return "";
      if (s1.flt_around != s0.flt_around) return "";  // brought in neighbours too
      if (s1.flt_swapin - s0.flt_swapin == 1) return "swap-in";
      if (s1.flt_react - s0.flt_react == 1) return "reactivation";
      return "";
    };
    sm.Run(
        before, classify, [&] { return sm.out["swap-in"].size() >= samples; },
        [&] { return sm.out["reactivation"].size() >= samples; });
    std::string cj = CountsJson(sm.counts);
    for (const char* c : {"swap-in", "reactivation"}) {
      if (Wants(cases, c)) PrintCase("uvmrt", c, sm.out[c], cj);
    }
  }
  absl::Status st = r.Unmap(base, bytes);
  if (!st.ok()) Die(kExitSetup, "uvmrt: Unmap: %s", st.ToString().c_str());
}
#endif

int Main(int argc, char** argv) {
  Flags f(argc, argv, kUsage);
  std::string system = f.Str("system", "");
  std::vector<std::string> cases = f.StrList("cases", "");
  uint64_t budget = f.Size("budget", 64ull << 20);
  double mult = f.Double("region-mult", 4);
  uint64_t samples = static_cast<uint64_t>(f.Int("samples", 20000));
  uint64_t seed = static_cast<uint64_t>(f.Int("seed", 1));
  std::string swap_dir = f.Str("swap-dir", "");
  int cluster_pages = static_cast<int>(f.Int("cluster-pages", 16));
  int fault_threads = static_cast<int>(f.Int("fault-threads", 2));
  bool in_thread = f.Bool("in-thread-faults");
  bool buffered = f.Bool("allow-buffered-swap");
  f.CheckAllUsed();
  if (sysconf(_SC_PAGESIZE) != static_cast<long>(kPage))
    Die(kExitSetup, "faultlat assumes 4 KiB pages");
  if (samples == 0 || !(mult > 1))
    Die(kExitUsage, "--samples must be positive and --region-mult above 1");

  std::vector<std::string> all;
  if (system == "uvmrt") {
    all = {"native", "zero-fill", "swap-in", "reactivation"};
  } else if (system == "plain") {
    all = {"native", "kernel-swap-in", "kernel-minor"};
  } else {
    Die(kExitUsage, "--system must be uvmrt or plain\n%s", kUsage);
  }
  if (cases.empty()) cases = all;
  for (const auto& c : cases) {
    if (!Wants(all, c))
      Die(kExitUsage, "case '%s' does not exist for --system=%s", c.c_str(), system.c_str());
  }

  if (Wants(cases, "native")) Native(samples);
  if (system == "plain") {
    if (Wants(cases, "kernel-swap-in") || Wants(cases, "kernel-minor")) {
      PlainSwap(cases, budget, mult, samples, seed);
    }
    return kExitOk;
  }
#ifdef UVMBENCH_HAVE_UVMRT
  if (cases.size() > 1 || cases[0] != "native") {
    uvmrt::Options o;
    o.budget_bytes = budget;
    o.swap_path = swap_dir;
    o.swap_bytes = static_cast<size_t>(mult * static_cast<double>(budget));
    o.cluster_pages = cluster_pages;
    o.fault_threads = fault_threads;
    o.in_thread_faults = in_thread;
    o.allow_buffered_swap = buffered;
    if (in_thread) g_case_suffix = "-it";
    Uvmrt(cases, o, mult, samples, seed);
  }
  return kExitOk;
#else
  (void)swap_dir;
  (void)cluster_pages;
  (void)fault_threads;
  (void)in_thread;
  (void)buffered;
  if (cases.size() > 1 || cases[0] != "native") {
    Die(kExitSetup, "faultlat was built without the uvmrt runtime; only --cases=native works");
  }
  return kExitOk;
#endif
}

}  // namespace
}  // namespace uvmbench

int main(int argc, char** argv) {
  return uvmbench::Main(argc, argv);
}
