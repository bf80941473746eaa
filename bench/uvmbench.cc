// uvmbench: runs the benchmark workloads on one memory system and prints one
// JSON line per phase.  bench/harness.py runs it on every system (uvmrt,
// kernel swap, RAM) and compares; see bench/README.md.
//
//   --system=plain   ordinary anonymous mmap memory.  Run in a memory cgroup
//                    with swap on, it measures the kernel's swap; run with no
//                    limit, it measures RAM.
//   --system=uvmrt   a region mapped by uvmrt with a resident budget.
//
// Every phase verifies the data it reads against a per-page pattern and a
// per-page generation number; any mismatch prints the page, address and word
// and exits with status 3.
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "bench_util.h"

#ifdef UVMBENCH_HAVE_UVMRT
#include "uvmrt/runtime.h"
#endif

namespace uvmbench {
namespace {

constexpr char kUsage[] = R"(usage: uvmbench --system=uvmrt|plain [flags]

  --system=NAME          uvmrt, or plain (anonymous mmap; the kernel's memory)
  --workload=LIST        comma list of seq-write, seq-read, rand-rmw, hotcold,
                         or all (default: all).  Phases run in the given order
                         on one region; if the first phase is not seq-write, an
                         untimed fill writes the region first.  none: only
                         build the region's page tables, writing one page in
                         512 (the process's memory use outside the region's
                         data).
  --budget=SIZE          resident budget B, e.g. 64M (default 64M).  uvmrt gets
                         it as budget_bytes; for plain it only sizes the region
                         (the memory cgroup around the process enforces it).
  --region-mult=X        region size = X * B (default 4)
  --threads=LIST         thread counts for rand-rmw, e.g. 1,2 (default 1)
  --hotcold-threads=N    threads for hotcold (default 1)
  --ops=N                operations per rand-rmw / hotcold phase
                         (default: one per page of the region)
  --hot-fraction=X       hotcold: hot set size as a fraction of B (default 0.5)
  --hot-prob=X           hotcold: share of accesses to the hot set (default 0.9)
  --write-frac=X         hotcold: share of accesses that also write (default 0.3)
  --seed=N               random seed (default 1)
  --progress             progress on stderr during long phases
  uvmrt only:
  --swap-dir=PATH        swap file or directory (default: $TMPDIR)
  --swap-bytes=SIZE      swap file size (default: the region size)
  --cluster-pages=N      pages per swap cluster (default 16)
  --fault-threads=N      userfaultfd handler threads (default 2)
  --in-thread-faults     resolve faults on the touching thread (SIGBUS)
  --allow-buffered-swap  fall back to buffered I/O where O_DIRECT is refused
  --features             print {"uvmrt": true|false}: was it built with uvmrt?
  testing:
  --inject-error         corrupt one word after the first phase, to prove that
                         verification catches it (must exit with status 3)
)";

constexpr size_t kPage = 4096;
constexpr size_t kWords = kPage / sizeof(uint64_t);

struct Config {
  std::string system;
  std::vector<std::string> workloads;
  uint64_t budget = 0;
  double region_mult = 4;
  uint64_t region_bytes = 0;
  uint64_t npages = 0;
  std::vector<int> threads;
  int hotcold_threads = 1;
  uint64_t ops = 0;
  double hot_fraction = 0.5;
  double hot_prob = 0.9;
  double write_frac = 0.3;
  uint64_t seed = 1;
  bool progress = false;
  std::string swap_dir;
  uint64_t swap_bytes = 0;
  int cluster_pages = 16;
  int fault_threads = 2;
  bool in_thread_faults = false;
  bool allow_buffered_swap = false;
  bool inject_error = false;
};

// ---------------------------------------------------------------------------
// Progress on stderr: a reporter thread sums per-thread counters.

class Progress {
 public:
  Progress(const Config& cfg, std::string label, uint64_t total, int nthreads)
      : enabled_(cfg.progress), label_(std::move(label)), total_(total), counters_(nthreads) {
    if (!enabled_) return;
    tty_ = isatty(STDERR_FILENO);
    start_ = NowSeconds();
    reporter_ = std::thread([this] { Report(); });
  }
  ~Progress() {
    if (!enabled_) return;
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    reporter_.join();
    if (printed_ && tty_) std::fprintf(stderr, "\r\033[K");
  }
  // Called by worker `t` after each operation.
  void Tick(int t) {
    auto& c = counters_[t].v;
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

 private:
  struct alignas(64) Counter {
    std::atomic<uint64_t> v{0};
  };
  void Report() {
    std::unique_lock<std::mutex> l(mu_);
    const auto period = std::chrono::milliseconds(tty_ ? 500 : 10000);
    while (!cv_.wait_for(l, period, [this] { return stop_; })) {
      uint64_t done = 0;
      for (auto& c : counters_) done += c.v.load(std::memory_order_relaxed);
      double el = NowSeconds() - start_;
      double pct = total_ ? 100.0 * static_cast<double>(done) / static_cast<double>(total_) : 0;
      std::fprintf(stderr, "%s  %s: %5.1f%%  %.0f ops/s  %.0fs%s", tty_ ? "\r\033[K" : "",
                   label_.c_str(), pct, static_cast<double>(done) / el, el, tty_ ? "" : "\n");
      std::fflush(stderr);
      printed_ = true;
    }
  }

  bool enabled_;
  bool tty_ = false;
  bool printed_ = false;
  std::string label_;
  uint64_t total_;
  double start_ = 0;
  std::vector<Counter> counters_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread reporter_;
};

// ---------------------------------------------------------------------------
// The benchmark.

class Bench {
 public:
  Bench(const Config& cfg, char* base)
      : cfg_(cfg), base_(base), gen_(cfg.npages, 0), start_(KernelCounters::Now()) {}

#ifdef UVMBENCH_HAVE_UVMRT
  void set_runtime(uvmrt::Runtime* rt) {
    rt_ = rt;
  }
#endif

  int Run() {
    BuildHotSet();  // always, so that --workload=none shows its memory too
    bool written = false;
    for (const std::string& w : cfg_.workloads) {
      if (!written && w != "seq-write") {
        Phase("prepare", "fill", 1, cfg_.npages, [&] { SeqWrite(nullptr); });
      }
      if (written) MaybeInjectError();
      written = true;
      if (w == "seq-write") {
        Phase("phase", w, 1, cfg_.npages, [&] {
          Progress p(cfg_, Label(w, 1), cfg_.npages, 1);
          SeqWrite(&p);
        });
      } else if (w == "seq-read") {
        Phase("phase", w, 1, cfg_.npages, [&] {
          Progress p(cfg_, Label(w, 1), cfg_.npages, 1);
          SeqRead(&p);
        });
      } else if (w == "rand-rmw") {
        for (int t : cfg_.threads) {
          Phase("phase", w, t, cfg_.ops, [&] {
            Progress p(cfg_, Label(w, t), cfg_.ops, t);
            RunThreads(t, [&](int id) { RandRmw(id, t, &p); });
          });
        }
      } else if (w == "hotcold") {
        int t = cfg_.hotcold_threads;
        Phase("phase", w, t, cfg_.ops, [&] {
          Progress p(cfg_, Label(w, t), cfg_.ops, t);
          RunThreads(t, [&](int id) { HotCold(id, t, &p); });
        });
      }
    }
    if (cfg_.workloads.empty()) {
      TouchPageTables();
      return kExitOk;
    }
    MaybeInjectError();
    // A last full check: every page must hold its latest generation.
    Phase("verify", "final-check", 1, cfg_.npages, [&] { SeqRead(nullptr, "final-check"); });
    return kExitOk;
  }

  // --workload=none: builds the page tables of the whole region, as every
  // other run has them, with a write to one page in 512 (one page table's
  // span), so that the process holds what it needs besides the region's data
  // and a 512th of that data.  Reading every page would build them with no
  // data where the kernel maps its shared zero page, but not on a kernel
  // without one (some virtual machines' guests): there each read allocates.
  void TouchPageTables() {
    for (uint64_t p = 0; p < cfg_.npages; p += 512) {
      base_[p * kPage] = 1;
    }
  }

  // Prints the final JSON line.
  void Done(double total_s) {
    JsonLine j;
    j.Add("type", "done").Add("system", cfg_.system).Add("total_s", total_s);
    j.AddRaw("kernel", KernelCounters::Now().DeltaJson(start_));
#ifdef UVMBENCH_HAVE_UVMRT
    if (rt_) {
      j.AddRaw("uvmrt", StatsDeltaJson(uvmrt::Stats{}, rt_->GetStats()));
      j.Add("kernel_resident_bytes", static_cast<int64_t>(rt_->KernelResidentBytes()));
    }
#endif
    j.Print();
  }

 private:
  std::string Label(const std::string& w, int t) const {
    return "[" + cfg_.system + "] " + w +
           (t > 1 || w == "rand-rmw" ? " T=" + std::to_string(t) : "");
  }

  void MaybeInjectError() {
    if (!cfg_.inject_error || injected_) return;
    injected_ = true;
    uint64_t idx = cfg_.npages / 2;
    PageAt(idx)[kWords / 3] ^= 1;
    std::fprintf(stderr, "uvmbench: --inject-error: flipped a bit in page %" PRIu64 "\n", idx);
  }

  uint64_t* PageAt(uint64_t idx) const {
    return reinterpret_cast<uint64_t*>(base_ + idx * kPage);
  }

  template <class F>
  void Phase(const char* type, const std::string& name, int threads, uint64_t ops, F body) {
    KernelCounters k0 = KernelCounters::Now();
#ifdef UVMBENCH_HAVE_UVMRT
    uvmrt::Stats s0{};
    if (rt_) s0 = rt_->GetStats();
#endif
    double t0 = NowSeconds();
    body();
    double el = NowSeconds() - t0;
    KernelCounters k1 = KernelCounters::Now();
    JsonLine j;
    j.Add("type", type)
        .Add("system", cfg_.system)
        .Add("workload", name)
        .Add("threads", threads)
        .Add("pages", cfg_.npages)
        .Add("ops", ops)
        .Add("elapsed_s", el)
        .Add("ops_per_s", el > 0 ? static_cast<double>(ops) / el : 0.0);
    if (name == "hotcold") {
      j.Add("hot_pages", static_cast<uint64_t>(hot_.size()))
          .Add("hot_prob", cfg_.hot_prob)
          .Add("write_frac", cfg_.write_frac);
    }
    j.AddRaw("kernel", k1.DeltaJson(k0));
#ifdef UVMBENCH_HAVE_UVMRT
    if (rt_) {
      j.AddRaw("uvmrt", StatsDeltaJson(s0, rt_->GetStats()));
      j.Add("kernel_resident_bytes", static_cast<int64_t>(rt_->KernelResidentBytes()));
    }
#endif
    j.Print();
  }

  template <class F>
  void RunThreads(int n, F fn) {
    if (n == 1) {
      fn(0);
      return;
    }
    std::vector<std::thread> ts;
    for (int i = 0; i < n; ++i) ts.emplace_back([&fn, i] { fn(i); });
    for (auto& t : ts) t.join();
  }

  // Verifies page `idx` against its current generation; fails loudly.
  void Verify(const char* phase, uint64_t idx) {
    const uint64_t* p = PageAt(idx);
    int64_t w = CheckPage(p, kWords, idx, gen_[idx]);
    if (w != -1) Mismatch(phase, idx, w);
  }

  [[noreturn]] void Mismatch(const char* phase, uint64_t idx, int64_t w) {
    static std::mutex mu;
    mu.lock();  // one report; other threads block here until the exit
    const uint64_t* p = PageAt(idx);
    std::fflush(stdout);
    std::fprintf(stderr,
                 "\nuvmbench: DATA MISMATCH system=%s phase=%s page=%" PRIu64 " addr=%p gen=%u",
                 cfg_.system.c_str(), phase, idx, static_cast<const void*>(p), gen_[idx]);
    if (w >= 0) {
      std::fprintf(stderr, " word=%" PRId64 " expected=0x%016" PRIx64 " got=0x%016" PRIx64 "\n", w,
                   ExpectedWord(idx, gen_[idx], static_cast<size_t>(w)), p[w]);
      // Say which generation, if any, the page holds instead.
      for (uint32_t g = 0; g <= gen_[idx] + 1; ++g) {
        if (g != gen_[idx] && CheckPage(p, kWords, idx, g) == -1) {
          std::fprintf(stderr, "uvmbench: the page holds generation %u of its own data%s\n", g,
                       g == 0 ? " (zeros)" : "");
        }
      }
    } else {
      std::fprintf(stderr, " (the page changed while it was being read)\n");
    }
    std::fflush(stderr);
    _exit(kExitVerify);
  }

  void SeqWrite(Progress* prog) {
    for (uint64_t i = 0; i < cfg_.npages; ++i) {
      FillPage(PageAt(i), kWords, i, ++gen_[i]);
      if (prog) prog->Tick(0);
    }
  }

  void SeqRead(Progress* prog, const char* label = "seq-read") {
    for (uint64_t i = 0; i < cfg_.npages; ++i) {
      Verify(label, i);
      if (prog) prog->Tick(0);
    }
  }

  // Thread `id` of `n` owns the pages idx with idx % n == id, so that no two
  // threads touch one page; its accesses are uniform over its pages, so the
  // whole is uniform over the region.
  uint64_t OwnedPages(int id, int n) const {
    return (cfg_.npages - static_cast<uint64_t>(id) + static_cast<uint64_t>(n) - 1) /
           static_cast<uint64_t>(n);
  }
  uint64_t OpsFor(int id, int n) const {
    return cfg_.ops / static_cast<uint64_t>(n) +
           (static_cast<uint64_t>(id) < cfg_.ops % static_cast<uint64_t>(n) ? 1 : 0);
  }

  void RandRmw(int id, int n, Progress* prog) {
    Rng rng(cfg_.seed * 1000003 + static_cast<uint64_t>(n) * 101 + static_cast<uint64_t>(id));
    const uint64_t owned = OwnedPages(id, n);
    const uint64_t ops = OpsFor(id, n);
    for (uint64_t k = 0; k < ops; ++k) {
      uint64_t idx = rng.Below(owned) * static_cast<uint64_t>(n) + static_cast<uint64_t>(id);
      Verify("rand-rmw", idx);
      FillPage(PageAt(idx), kWords, idx, ++gen_[idx]);
      prog->Tick(id);
    }
  }

  void BuildHotSet() {
    if (!hot_.empty()) return;
    uint64_t want = static_cast<uint64_t>(cfg_.hot_fraction * static_cast<double>(cfg_.budget) /
                                          static_cast<double>(kPage));
    want = std::clamp<uint64_t>(want, 1, cfg_.npages);
    // A random subset of the pages, scattered over the region.
    std::vector<uint64_t> all(cfg_.npages);
    for (uint64_t i = 0; i < cfg_.npages; ++i) all[i] = i;
    Rng rng(cfg_.seed ^ 0x407C01Dull);
    for (uint64_t i = 0; i < want; ++i) std::swap(all[i], all[i + rng.Below(cfg_.npages - i)]);
    hot_.assign(all.begin(), all.begin() + static_cast<int64_t>(want));
  }

  void HotCold(int id, int n, Progress* prog) {
    Rng rng(cfg_.seed * 7919 + static_cast<uint64_t>(n) * 31 + static_cast<uint64_t>(id));
    std::vector<uint64_t> hot;
    for (uint64_t idx : hot_) {
      if (idx % static_cast<uint64_t>(n) == static_cast<uint64_t>(id)) hot.push_back(idx);
    }
    const uint64_t owned = OwnedPages(id, n);
    const uint64_t ops = OpsFor(id, n);
    for (uint64_t k = 0; k < ops; ++k) {
      uint64_t idx;
      if (!hot.empty() && rng.Unit() < cfg_.hot_prob) {
        idx = hot[rng.Below(hot.size())];
      } else {
        idx = rng.Below(owned) * static_cast<uint64_t>(n) + static_cast<uint64_t>(id);
      }
      Verify("hotcold", idx);
      if (rng.Unit() < cfg_.write_frac) FillPage(PageAt(idx), kWords, idx, ++gen_[idx]);
      prog->Tick(id);
    }
  }

  const Config& cfg_;
  char* base_;
  std::vector<uint32_t> gen_;  // per page: the generation it must hold
  std::vector<uint64_t> hot_;  // hotcold: the hot pages
  bool injected_ = false;
  KernelCounters start_;
#ifdef UVMBENCH_HAVE_UVMRT
  uvmrt::Runtime* rt_ = nullptr;
#endif
};

Config ParseFlags(int argc, char** argv) {
  Flags f(argc, argv, kUsage);
  Config c;
  c.system = f.Str("system", "");
  c.workloads = f.StrList("workload", "all");
  c.budget = f.Size("budget", 64ull << 20);
  c.region_mult = f.Double("region-mult", 4);
  c.threads = f.IntList("threads", "1");
  c.hotcold_threads = static_cast<int>(f.Int("hotcold-threads", 1));
  int64_t ops = f.Int("ops", 0);
  c.hot_fraction = f.Double("hot-fraction", 0.5);
  c.hot_prob = f.Double("hot-prob", 0.9);
  c.write_frac = f.Double("write-frac", 0.3);
  c.seed = static_cast<uint64_t>(f.Int("seed", 1));
  c.progress = f.Bool("progress");
  c.swap_dir = f.Str("swap-dir", "");
  c.swap_bytes = f.Size("swap-bytes", 0);
  c.cluster_pages = static_cast<int>(f.Int("cluster-pages", 16));
  c.fault_threads = static_cast<int>(f.Int("fault-threads", 2));
  c.in_thread_faults = f.Bool("in-thread-faults");
  c.allow_buffered_swap = f.Bool("allow-buffered-swap");
  c.inject_error = f.Bool("inject-error");
  bool features = f.Bool("features");
  f.CheckAllUsed();
  if (features) {
#ifdef UVMBENCH_HAVE_UVMRT
    JsonLine().Add("uvmrt", true).Print();
#else
    JsonLine().Add("uvmrt", false).Print();
#endif
    std::exit(kExitOk);
  }

#ifndef UVMBENCH_HAVE_UVMRT
  if (c.system == "uvmrt") {
    Die(kExitSetup, "uvmbench was built without the uvmrt runtime (target uvmrt did not exist)");
  }
#endif

  if (c.system != "plain" && c.system != "uvmrt")
    Die(kExitUsage, "--system must be uvmrt or plain\n%s", kUsage);
  std::vector<std::string> ws;
  for (const auto& w : c.workloads) {
    if (w == "all") {
      ws.insert(ws.end(), {"seq-write", "seq-read", "rand-rmw", "hotcold"});
    } else if (w == "none") {
      // No phase and no final check: the region's page tables are built
      // (TouchPageTables).  It shows what the process needs besides the
      // region's data (code, the generation array, page tables for the whole
      // region).
    } else if (w == "seq-write" || w == "seq-read" || w == "rand-rmw" || w == "hotcold") {
      ws.push_back(w);
    } else {
      Die(kExitUsage, "unknown workload '%s'", w.c_str());
    }
  }
  c.workloads = ws;
  if (!(c.region_mult > 0)) Die(kExitUsage, "--region-mult must be positive");
  if (c.hotcold_threads < 1) Die(kExitUsage, "--hotcold-threads must be at least 1");
  c.budget = (c.budget + kPage - 1) / kPage * kPage;
  c.npages = static_cast<uint64_t>(c.region_mult * static_cast<double>(c.budget / kPage));
  if (c.npages == 0) Die(kExitUsage, "the region is empty");
  c.region_bytes = c.npages * kPage;
  c.ops = ops > 0 ? static_cast<uint64_t>(ops) : c.npages;
  if (c.swap_bytes == 0) c.swap_bytes = c.region_bytes;
  if (c.hot_fraction <= 0 || c.hot_prob < 0 || c.hot_prob > 1 || c.write_frac < 0 ||
      c.write_frac > 1) {
    Die(kExitUsage, "--hot-fraction must be > 0; --hot-prob and --write-frac in [0, 1]");
  }
  return c;
}

void PrintConfig(const Config& c) {
  JsonLine j;
  std::string ws, ts;
  for (const auto& w : c.workloads) ws += (ws.empty() ? "" : ",") + w;
  for (int t : c.threads) ts += (ts.empty() ? "" : ",") + std::to_string(t);
  j.Add("type", "config")
      .Add("system", c.system)
      .Add("workloads", ws)
      .Add("budget_bytes", c.budget)
      .Add("region_mult", c.region_mult)
      .Add("region_bytes", c.region_bytes)
      .Add("pages", c.npages)
      .Add("page_size", static_cast<uint64_t>(kPage))
      .Add("threads", ts)
      .Add("hotcold_threads", c.hotcold_threads)
      .Add("ops", c.ops)
      .Add("seed", c.seed)
      .Add("thp", ThpMode())
      .Add("pid", static_cast<int64_t>(getpid()));
  if (c.system == "uvmrt") {
    j.Add("swap_path", c.swap_dir)
        .Add("swap_bytes", c.swap_bytes)
        .Add("cluster_pages", c.cluster_pages)
        .Add("fault_threads", c.fault_threads)
        .Add("in_thread_faults", c.in_thread_faults);
  }
  j.Print();
}

int Main(int argc, char** argv) {
  Config cfg = ParseFlags(argc, argv);
  if (sysconf(_SC_PAGESIZE) != static_cast<long>(kPage))
    Die(kExitSetup, "uvmbench assumes 4 KiB pages");
  PrintConfig(cfg);
  double t0 = NowSeconds();

  if (cfg.system == "plain") {
    void* p = mmap(nullptr, cfg.region_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      Die(kExitSetup, "mmap of %" PRIu64 " bytes failed: %s", cfg.region_bytes,
          std::strerror(errno));
    }
    Bench b(cfg, static_cast<char*>(p));
    int rc = b.Run();
    b.Done(NowSeconds() - t0);
    munmap(p, cfg.region_bytes);
    return rc;
  }

#ifdef UVMBENCH_HAVE_UVMRT
  uvmrt::Options o;
  o.budget_bytes = cfg.budget;
  o.swap_path = cfg.swap_dir;
  o.swap_bytes = cfg.swap_bytes;
  o.cluster_pages = cfg.cluster_pages;
  o.fault_threads = cfg.fault_threads;
  o.in_thread_faults = cfg.in_thread_faults;
  o.allow_buffered_swap = cfg.allow_buffered_swap;
  auto rt = uvmrt::Runtime::Create(o);
  if (!rt.ok()) Die(kExitSetup, "uvmrt: Runtime::Create: %s", rt.status().ToString().c_str());
  auto region = (*rt)->Map(cfg.region_bytes);
  if (!region.ok())
    Die(kExitSetup, "uvmrt: Map(%" PRIu64 "): %s", cfg.region_bytes,
        region.status().ToString().c_str());
  int rc;
  {
    Bench b(cfg, static_cast<char*>(*region));
    b.set_runtime(rt->get());
    rc = b.Run();
    b.Done(NowSeconds() - t0);
  }
  absl::Status st = (*rt)->Unmap(*region, cfg.region_bytes);
  if (!st.ok()) Die(kExitSetup, "uvmrt: Unmap: %s", st.ToString().c_str());
  rt->reset();
  return rc;
#else
  Die(kExitSetup, "uvmbench was built without the uvmrt runtime (target uvmrt did not exist)");
#endif
}

}  // namespace
}  // namespace uvmbench

int main(int argc, char** argv) {
  return uvmbench::Main(argc, argv);
}
