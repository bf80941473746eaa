// env.cc: runtime options from UVMRT_* environment variables (uvmrt/env.h).
#include "uvmrt/env.h"

#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "uvmrt/uvmrt_types.h"

extern char** environ;

namespace uvmrt {

namespace {

constexpr size_t kPage = 4096;

// The runtime's variables, in the order the documentation lists them.
constexpr const char* kKnown[] = {
    "UVMRT_BUDGET",           "UVMRT_SWAP_PATH",     "UVMRT_SWAP_SIZE",  "UVMRT_LOG",
    "UVMRT_CLUSTER_PAGES",    "UVMRT_FAULT_THREADS", "UVMRT_OVERCOMMIT", "UVMRT_BUFFERED_SWAP",
    "UVMRT_IN_THREAD_FAULTS", "UVMRT_RESERVE",
};

// Variables of uvmrt's test programs and benchmarks: not runtime options,
// but not misspellings either.
constexpr const char* kOtherKnown[] = {"UVMRT_TEST_SCALE", "UVMRT_TEST_IN_THREAD",
                                       "UVMRT_SOAK_SECONDS"};

absl::Status Bad(absl::string_view name, absl::string_view value, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrFormat("uvmrt: %s=\"%s\": %s", name, value, why));
}

const char* Get(const char* name) {
  return std::getenv(name);
}

absl::StatusOr<int> ParseInt(const char* name, const char* text, int lo, int hi) {
  int v = 0;
  const size_t len = std::strlen(text);
  bool digits = len > 0 && len <= 9;
  for (size_t i = 0; digits && i < len; i++) {
    digits = absl::ascii_isdigit(static_cast<unsigned char>(text[i]));
  }
  if (!digits || !absl::SimpleAtoi(text, &v)) {
    return Bad(name, text, absl::StrFormat("not a number; give an integer from %d to %d", lo, hi));
  }
  if (v < lo || v > hi) {
    return Bad(name, text, absl::StrFormat("out of range; give an integer from %d to %d", lo, hi));
  }
  return v;
}

absl::StatusOr<bool> ParseBool(const char* name, const char* text) {
  const std::string v = absl::AsciiStrToLower(text);
  if (v == "1" || v == "yes" || v == "on" || v == "true") return true;
  if (v == "0" || v == "no" || v == "off" || v == "false") return false;
  return Bad(name, text, "not a boolean; use 1 or 0 (or yes/no, on/off, true/false)");
}

std::string HumanSize(uint64_t bytes) {
  if (bytes % (uint64_t{1} << 30) == 0) return absl::StrFormat("%dG", bytes >> 30);
  if (bytes % (uint64_t{1} << 20) == 0) return absl::StrFormat("%dM", bytes >> 20);
  if (bytes % (uint64_t{1} << 10) == 0) return absl::StrFormat("%dK", bytes >> 10);
  return absl::StrFormat("%d", bytes);
}

absl::Status CheckSwapPath(const char* text, bool buffered_ok) {
  constexpr const char* kName = "UVMRT_SWAP_PATH";
  if (*text == '\0') return Bad(kName, text, "empty; name a directory or a new file");
  std::string dir = text;
  struct stat st;
  if (stat(text, &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return Bad(kName, text, "already exists; name a directory or a new file");
    }
  } else {
    const size_t slash = dir.find_last_of('/');
    dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : dir.substr(0, slash));
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return Bad(kName, text,
                 absl::StrFormat("directory %s does not exist; name an existing directory or a "
                                 "new file in one",
                                 dir));
    }
  }
  struct statfs sfs;
  if (!buffered_ok && statfs(dir.c_str(), &sfs) == 0 &&
      (sfs.f_type == 0x01021994 /* TMPFS_MAGIC */ || sfs.f_type == 0x858458f6 /* RAMFS */)) {
    return Bad(kName, text,
               "on tmpfs, which keeps swap in memory; name a directory on a disk filesystem "
               "(ext4, xfs)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<size_t> ParseSize(absl::string_view name, absl::string_view text) {
  const std::string shown(text);
  auto not_a_size = [&] {
    return Bad(name, shown,
               "not a size; use a number with an optional K, M or G suffix (e.g. 512M)");
  };
  size_t digits = 0;
  while (digits < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[digits]))) {
    digits++;
  }
  if (digits == 0 || digits > 20) return not_a_size();
  int shift = 0;
  const absl::string_view suffix = text.substr(digits);
  if (suffix.size() > 1) return not_a_size();
  if (suffix.size() == 1) {
    switch (absl::ascii_tolower(static_cast<unsigned char>(suffix[0]))) {
      case 'k':
        shift = 10;
        break;
      case 'm':
        shift = 20;
        break;
      case 'g':
        shift = 30;
        break;
      case 't':
        shift = 40;
        break;
      default:
        return not_a_size();
    }
  }
  uint64_t n = 0;
  if (!absl::SimpleAtoi(text.substr(0, digits), &n) || (shift > 0 && n > (UINT64_MAX >> shift)) ||
      (n << shift) > SIZE_MAX / 2) {
    return Bad(name, shown, "too large");
  }
  return static_cast<size_t>(n << shift);
}

std::vector<std::string> UnknownEnvVariables() {
  std::vector<std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; e++) {
    const char* kv = *e;
    if (std::strncmp(kv, "UVMRT_", 6) != 0) continue;
    const char* eq = std::strchr(kv, '=');
    const std::string name(kv, eq != nullptr ? static_cast<size_t>(eq - kv) : std::strlen(kv));
    bool known = false;
    for (const char* k : kKnown) known = known || name == k;
    for (const char* k : kOtherKnown) known = known || name == k;
    if (!known) out.push_back(name);
  }
  return out;
}

absl::StatusOr<std::optional<size_t>> ReserveFromEnv() {
  const char* v = Get("UVMRT_RESERVE");
  if (v == nullptr) return std::optional<size_t>();
  absl::StatusOr<size_t> n = ParseSize("UVMRT_RESERVE", v);
  if (!n.ok()) return n.status();
  if (*n < (size_t{64} << 20)) {
    return Bad("UVMRT_RESERVE", v, "below the minimum of 64M");
  }
  return std::optional<size_t>(*n);
}

absl::StatusOr<Options> OptionsFromEnv(Options o) {
  if (const char* v = Get("UVMRT_LOG")) {
    static constexpr const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "off"};
    bool ok = false;
    for (const char* l : kLevels) ok = ok || std::strcmp(v, l) == 0;
    if (!ok) {
      return Bad("UVMRT_LOG", v,
                 "not a log level; use one of trace, debug, info, warn, error, off");
    }
  }
  if (const char* v = Get("UVMRT_BUDGET")) {
    absl::StatusOr<size_t> n = ParseSize("UVMRT_BUDGET", v);
    if (!n.ok()) return n.status();
    if (*n < UVMRT_MIN_BUDGET) return Bad("UVMRT_BUDGET", v, "below the minimum budget of 1M");
    o.budget_bytes = *n;
  }
  if (const char* v = Get("UVMRT_CLUSTER_PAGES")) {
    absl::StatusOr<int> n = ParseInt("UVMRT_CLUSTER_PAGES", v, 1, UVMRT_MAX_CLUSTER_PAGES);
    if (!n.ok()) return n.status();
    o.cluster_pages = *n;
  }
  if (const char* v = Get("UVMRT_FAULT_THREADS")) {
    absl::StatusOr<int> n = ParseInt("UVMRT_FAULT_THREADS", v, 1, 64);
    if (!n.ok()) return n.status();
    o.fault_threads = *n;
  }
  if (const char* v = Get("UVMRT_OVERCOMMIT")) {
    absl::StatusOr<bool> b = ParseBool("UVMRT_OVERCOMMIT", v);
    if (!b.ok()) return b.status();
    o.overcommit = *b;
  }
  if (const char* v = Get("UVMRT_BUFFERED_SWAP")) {
    absl::StatusOr<bool> b = ParseBool("UVMRT_BUFFERED_SWAP", v);
    if (!b.ok()) return b.status();
    o.allow_buffered_swap = *b;
  }
  if (const char* v = Get("UVMRT_IN_THREAD_FAULTS")) {
    absl::StatusOr<bool> b = ParseBool("UVMRT_IN_THREAD_FAULTS", v);
    if (!b.ok()) return b.status();
    o.in_thread_faults = *b;
  }
  if (const char* v = Get("UVMRT_SWAP_SIZE")) {
    absl::StatusOr<size_t> n = ParseSize("UVMRT_SWAP_SIZE", v);
    if (!n.ok()) return n.status();
    // Slot 0 is never used: the file needs a cluster plus one page.
    const size_t min = (static_cast<size_t>(o.cluster_pages) + 1) * kPage;
    if (*n < min) {
      return Bad("UVMRT_SWAP_SIZE", v,
                 absl::StrFormat("below the minimum of %s (one swap cluster and a header page)",
                                 HumanSize(min)));
    }
    o.swap_bytes = *n;
  }
  if (const char* v = Get("UVMRT_SWAP_PATH")) {
    if (absl::Status st = CheckSwapPath(v, o.allow_buffered_swap); !st.ok()) return st;
    o.swap_path = v;
  }
  if (absl::Status st = ReserveFromEnv().status(); !st.ok()) return st;
  for (const std::string& name : UnknownEnvVariables()) {
    std::fprintf(stderr, "uvmrt: warning: %s is not a uvmrt variable and is ignored (known: %s)\n",
                 name.c_str(), absl::StrJoin(kKnown, ", ").c_str());
  }
  return o;
}

}  // namespace uvmrt
