// bench_util.h: small helpers shared by the benchmark programs: flag
// parsing, sizes, JSON lines, kernel counters, the verifiable data pattern
// and a fast random number generator.
//
// Header-only; nothing here depends on the runtime.
#ifndef UVMRT_BENCH_BENCH_UTIL_H_
#define UVMRT_BENCH_BENCH_UTIL_H_

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#ifdef UVMBENCH_HAVE_UVMRT
#include "uvmrt/runtime.h"
#endif

namespace uvmbench {

// Exit codes shared by the benchmark programs (the driver relies on them).
inline constexpr int kExitOk = 0;
inline constexpr int kExitSetup = 2;   // the system under test could not be set up
inline constexpr int kExitVerify = 3;  // data verification failed
inline constexpr int kExitUsage = 64;  // bad command line

[[noreturn]] inline void Die(int code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
inline void Die(int code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fflush(stdout);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  std::exit(code);
}

// ---------------------------------------------------------------------------
// Command line: --name=value or --name value; bare --name means "true".

class Flags {
 public:
  Flags(int argc, char** argv, const char* usage) : usage_(usage) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "-h" || a == "--help") {
        std::fputs(usage_, stdout);
        std::exit(kExitOk);
      }
      if (a.rfind("--", 0) != 0) Die(kExitUsage, "unexpected argument '%s'\n%s", a.c_str(), usage_);
      a = a.substr(2);
      size_t eq = a.find('=');
      if (eq != std::string::npos) {
        values_[a.substr(0, eq)] = a.substr(eq + 1);
      } else if (i + 1 < argc && std::string_view(argv[i + 1]).rfind("--", 0) != 0) {
        values_[a] = argv[++i];
      } else {
        values_[a] = "true";
      }
    }
  }

  // Fails on flags that no one asked for (typos).
  void CheckAllUsed() const {
    for (const auto& [k, v] : values_) {
      if (!used_.count(k)) Die(kExitUsage, "unknown flag --%s\n%s", k.c_str(), usage_);
    }
  }

  std::string Str(const std::string& name, const std::string& def) {
    used_[name] = true;
    auto it = values_.find(name);
    return it == values_.end() ? def : it->second;
  }
  bool Bool(const std::string& name) {
    std::string v = Str(name, "false");
    return v == "true" || v == "1" || v == "yes";
  }
  int64_t Int(const std::string& name, int64_t def) {
    std::string v = Str(name, "");
    if (v.empty()) return def;
    char* end = nullptr;
    errno = 0;
    long long x = std::strtoll(v.c_str(), &end, 0);
    if (errno != 0 || *end != '\0')
      Die(kExitUsage, "--%s: not an integer: '%s'", name.c_str(), v.c_str());
    return x;
  }
  double Double(const std::string& name, double def) {
    std::string v = Str(name, "");
    if (v.empty()) return def;
    char* end = nullptr;
    double x = std::strtod(v.c_str(), &end);
    if (*end != '\0' || !std::isfinite(x)) {
      Die(kExitUsage, "--%s: not a number: '%s'", name.c_str(), v.c_str());
    }
    return x;
  }
  // A byte count with an optional K, M, G suffix (powers of 1024).
  uint64_t Size(const std::string& name, uint64_t def) {
    std::string v = Str(name, "");
    if (v.empty()) return def;
    char* end = nullptr;
    double x = std::strtod(v.c_str(), &end);
    std::string suffix = end;
    std::transform(suffix.begin(), suffix.end(), suffix.begin(), ::toupper);
    if (!suffix.empty() && suffix.back() == 'B') suffix.pop_back();
    if (!suffix.empty() && suffix.back() == 'I') suffix.pop_back();
    double mult = 1;
    if (suffix == "K") {
      mult = 1024.0;
    } else if (suffix == "M") {
      mult = 1024.0 * 1024;
    } else if (suffix == "G") {
      mult = 1024.0 * 1024 * 1024;
    } else if (!suffix.empty()) {
      Die(kExitUsage, "--%s: bad size '%s' (use e.g. 64M, 1G)", name.c_str(), v.c_str());
    }
    if (!(x > 0)) Die(kExitUsage, "--%s: size must be positive: '%s'", name.c_str(), v.c_str());
    return static_cast<uint64_t>(x * mult);
  }
  // A comma-separated list of positive integers.
  std::vector<int> IntList(const std::string& name, const std::string& def) {
    std::vector<int> out;
    std::stringstream ss(Str(name, def));
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item.empty()) continue;
      char* end = nullptr;
      long x = std::strtol(item.c_str(), &end, 10);
      if (*end != '\0' || x <= 0 || x > 1024) {
        Die(kExitUsage, "--%s: bad list item '%s'", name.c_str(), item.c_str());
      }
      out.push_back(static_cast<int>(x));
    }
    if (out.empty()) Die(kExitUsage, "--%s: empty list", name.c_str());
    return out;
  }
  std::vector<std::string> StrList(const std::string& name, const std::string& def) {
    std::vector<std::string> out;
    std::stringstream ss(Str(name, def));
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (!item.empty()) out.push_back(item);
    }
    return out;
  }

 private:
  const char* usage_;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> used_;
};

// ---------------------------------------------------------------------------
// JSON lines: one object per line on stdout, flushed, so that the driver can
// read results while the program runs.

class JsonLine {
 public:
  JsonLine& Add(const std::string& key, const std::string& value) {
    Key(key);
    out_ += '"';
    for (char c : value) {
      if (c == '"' || c == '\\') {
        out_ += '\\';
        out_ += c;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out_ += buf;
      } else {
        out_ += c;
      }
    }
    out_ += '"';
    return *this;
  }
  JsonLine& Add(const std::string& key, const char* value) { return Add(key, std::string(value)); }
  JsonLine& Add(const std::string& key, int64_t value) {
    Key(key);
    out_ += std::to_string(value);
    return *this;
  }
  JsonLine& Add(const std::string& key, uint64_t value) {
    Key(key);
    out_ += std::to_string(value);
    return *this;
  }
  JsonLine& Add(const std::string& key, int value) { return Add(key, static_cast<int64_t>(value)); }
  JsonLine& Add(const std::string& key, double value) {
    Key(key);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g", std::isfinite(value) ? value : 0.0);
    out_ += buf;
    return *this;
  }
  JsonLine& Add(const std::string& key, bool value) {
    Key(key);
    out_ += value ? "true" : "false";
    return *this;
  }
  // A nested object, given as already formatted JSON.
  JsonLine& AddRaw(const std::string& key, const std::string& json) {
    Key(key);
    out_ += json;
    return *this;
  }
  std::string Str() const { return "{" + out_ + "}"; }
  void Print() const {
    std::string s = Str();
    std::fprintf(stdout, "%s\n", s.c_str());
    std::fflush(stdout);
  }

 private:
  void Key(const std::string& key) {
    if (!out_.empty()) out_ += ',';
    out_ += '"' + key + "\":";
  }
  std::string out_;
};

// ---------------------------------------------------------------------------
// Kernel counters.

// pswpin, pswpout, pgmajfault... from /proc/vmstat (system-wide, in pages).
inline std::map<std::string, int64_t> ReadVmstat() {
  std::map<std::string, int64_t> m;
  std::ifstream f("/proc/vmstat");
  std::string k;
  int64_t v;
  while (f >> k >> v) m[k] = v;
  return m;
}

struct KernelCounters {
  int64_t majflt = 0;   // this process's major faults (getrusage)
  int64_t minflt = 0;   // this process's minor faults
  int64_t pswpin = 0;   // system-wide pages swapped in (/proc/vmstat)
  int64_t pswpout = 0;  // system-wide pages swapped out
  int64_t maxrss_kib = 0;

  static KernelCounters Now() {
    KernelCounters c;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    c.majflt = ru.ru_majflt;
    c.minflt = ru.ru_minflt;
    c.maxrss_kib = ru.ru_maxrss;
    auto vm = ReadVmstat();
    c.pswpin = vm["pswpin"];
    c.pswpout = vm["pswpout"];
    return c;
  }
  // Deltas of `this - before`, as a JSON object.
  std::string DeltaJson(const KernelCounters& before) const {
    JsonLine j;
    j.Add("majflt", majflt - before.majflt)
        .Add("minflt", minflt - before.minflt)
        .Add("pswpin", pswpin - before.pswpin)
        .Add("pswpout", pswpout - before.pswpout)
        .Add("maxrss_kib", maxrss_kib);
    return j.Str();
  }
};

// The host's transparent huge page mode for anonymous memory, e.g. "madvise".
inline std::string ThpMode() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  std::getline(f, line);
  size_t a = line.find('['), b = line.find(']');
  if (a == std::string::npos || b == std::string::npos || b < a) return "unknown";
  return line.substr(a + 1, b - a - 1);
}

// ---------------------------------------------------------------------------
// Time.

inline double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
inline int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------
// Random numbers: splitmix64 to seed, xoshiro256** to generate.

inline uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (auto& w : s_) w = SplitMix64(seed);
  }
  uint64_t Next() {
    uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, n), n > 0 (Lemire's multiply-shift; bias < n / 2^64).
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }
  // Uniform in [0, 1).
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// ---------------------------------------------------------------------------
// The data pattern.  Word w of page `idx` at generation `gen` (>= 1) holds
// Base(idx, gen) + w * kStep.  Every word depends on the page index, the
// generation and the word's position, so a lost write, a stale copy, a page
// at the wrong place, a torn or zeroed page are all told apart from the right
// contents.  Generation 0 means "never written" and reads as zeros.

inline constexpr uint64_t kStep = 0xD6E8FEB86659FD93ull;

inline uint64_t PatternBase(uint64_t idx, uint32_t gen) {
  uint64_t s = idx * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(gen) << 40) ^ 0x5EEDull;
  return SplitMix64(s);
}

inline void FillPage(uint64_t* page, size_t words, uint64_t idx, uint32_t gen) {
  const uint64_t base = PatternBase(idx, gen);
  for (size_t w = 0; w < words; ++w) page[w] = base + w * kStep;
}

// Returns the index of the first wrong word, -1 if the page is right, or -2
// if it was wrong at first but right when read again (it changed under us).
inline int64_t CheckPage(const uint64_t* page, size_t words, uint64_t idx, uint32_t gen) {
  const uint64_t base = gen == 0 ? 0 : PatternBase(idx, gen);
  const uint64_t step = gen == 0 ? 0 : kStep;
  uint64_t diff = 0;
  for (size_t w = 0; w < words; ++w) diff |= page[w] ^ (base + w * step);
  if (diff == 0) return -1;
  for (size_t w = 0; w < words; ++w) {
    if (page[w] != base + w * step) return static_cast<int64_t>(w);
  }
  return -2;  // the page changed while it was being read
}

inline uint64_t ExpectedWord(uint64_t idx, uint32_t gen, size_t w) {
  return gen == 0 ? 0 : PatternBase(idx, gen) + w * kStep;
}

// ---------------------------------------------------------------------------
// Percentiles of a sample (sorts it).

struct Percentiles {
  size_t n = 0;
  double p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
};

inline Percentiles Summarize(std::vector<double>& v) {
  Percentiles p;
  p.n = v.size();
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    size_t i = static_cast<size_t>(std::floor(q * static_cast<double>(v.size() - 1) + 0.5));
    return v[std::min(i, v.size() - 1)];
  };
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p99 = at(0.99);
  p.max = v.back();
  double sum = 0;
  for (double x : v) sum += x;
  p.mean = sum / static_cast<double>(v.size());
  return p;
}

#ifdef UVMBENCH_HAVE_UVMRT
// The uvmrt::Stats fields: X(name) for event counters, reported as deltas over
// a phase, and G(name) for gauges, reported as the value at its end.
// clang-format off
#define UVMBENCH_STATS_FIELDS(X, G)                                              \
  G(pagesize) G(npages) G(free) G(active) G(inactive) G(paging) G(wired)        \
  G(freemin) G(freetarg) G(inactarg) G(wiredmax)                                \
  G(swpages) G(swpginuse) G(swpgonly) G(swpgbad)                                \
  X(pdwoke) X(pdrevs) X(pdscans) X(pdfreed) X(pdreact) X(pdbusy)                \
  X(pdpageouts) X(pdpending) X(pddeact) X(pdreacts_dirty)                       \
  X(pgswapin) X(pgswapout) X(swapouterr) X(swapinerr)                           \
  X(faults) X(flt_zfill) X(flt_swapin) X(flt_react) X(flt_around) X(flt_wp)     \
  X(flt_busywait) X(flt_uvmwait) G(mapped_bytes) G(regions)
// clang-format on

// Counter deltas and end-of-phase gauges of two uvmrt::Stats snapshots.
inline std::string StatsDeltaJson(const uvmrt::Stats& before, const uvmrt::Stats& after) {
  JsonLine j;
#define UVMBENCH_X(f) j.Add(#f, static_cast<int64_t>(after.f - before.f));
#define UVMBENCH_G(f) j.Add(#f, static_cast<int64_t>(after.f));
  UVMBENCH_STATS_FIELDS(UVMBENCH_X, UVMBENCH_G)
#undef UVMBENCH_X
#undef UVMBENCH_G
  return j.Str();
}
#endif  // UVMBENCH_HAVE_UVMRT

}  // namespace uvmbench

#endif  // UVMRT_BENCH_BENCH_UTIL_H_
