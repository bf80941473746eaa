// uvmstat: the uvmexp counters of a running process that uses uvmrt, in the
// manner of vmstat(8) and systat(1).
//
//   uvmstat [-r] [-n N | -f FILE] PID [INTERVAL [COUNT]]
//   uvmstat -l
//
// Every uvmrt runtime publishes its counters in /dev/shm/uvmrt.<pid>.<n>.
// uvmstat maps that file read-only, checks its magic and layout, and loads
// the counters; the process is not stopped or signalled.  The first report
// gives rates averaged since the runtime started, each later one the rates
// over the last interval.  Rates are per second; frame and swap counts are
// pages, as they stand.
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "uvm/uvmexp_shm.h"

namespace {

using uvmrt::uvm::uvmexp_shm;
using uvmrt::uvm::uvmexp_t;

constexpr int64_t kMissing = INT64_MIN;

// One counter of uvmexp_t, read by name.  A field this build of uvmrt does
// not have reads as kMissing and is left out.
struct Field {
  const char* name;
  int64_t (*get)(const uvmexp_t&);
};

#define UVMSTAT_FIELD(f)                                                   \
  Field {                                                                  \
#f, [](const uvmexp_t& e) -> int64_t {                                   \
      return [](const auto& x) -> int64_t {                                  \
        if constexpr (requires { x.f; }) {                                   \
          return x.f.load(std::memory_order_relaxed);                        \
        } else {                                                             \
          return kMissing;                                                   \
        }                                                                    \
      }(e);                                                                  \
    } \
  }

// Every counter, in uvmexp.h's order, for --raw.
const Field kFields[] = {
    UVMSTAT_FIELD(npages),       UVMSTAT_FIELD(free),         UVMSTAT_FIELD(active),
    UVMSTAT_FIELD(inactive),     UVMSTAT_FIELD(paging),       UVMSTAT_FIELD(wired),
    UVMSTAT_FIELD(freemin),      UVMSTAT_FIELD(freetarg),     UVMSTAT_FIELD(inactarg),
    UVMSTAT_FIELD(wiredmax),     UVMSTAT_FIELD(swpages),      UVMSTAT_FIELD(swpginuse),
    UVMSTAT_FIELD(swpgonly),     UVMSTAT_FIELD(swpgbad),      UVMSTAT_FIELD(pdwoke),
    UVMSTAT_FIELD(pdrevs),       UVMSTAT_FIELD(pdscans),      UVMSTAT_FIELD(pdfreed),
    UVMSTAT_FIELD(pdreact),      UVMSTAT_FIELD(pdbusy),       UVMSTAT_FIELD(pdpageouts),
    UVMSTAT_FIELD(pdpending),    UVMSTAT_FIELD(pddeact),      UVMSTAT_FIELD(pdreacts_dirty),
    UVMSTAT_FIELD(pgswapin),     UVMSTAT_FIELD(pgswapout),    UVMSTAT_FIELD(swapouterr),
    UVMSTAT_FIELD(swapinerr),    UVMSTAT_FIELD(faults),       UVMSTAT_FIELD(flt_zfill),
    UVMSTAT_FIELD(flt_swapin),   UVMSTAT_FIELD(flt_react),    UVMSTAT_FIELD(flt_around),
    UVMSTAT_FIELD(flt_wp),       UVMSTAT_FIELD(flt_busywait), UVMSTAT_FIELD(flt_uvmwait),
    UVMSTAT_FIELD(mapped_bytes), UVMSTAT_FIELD(regions),
};

// The columns of the table: a rate (per second) or a level.
struct Column {
  const char* group;
  const char* head;
  const char* field;
  bool rate;
};

const Column kColumns[] = {
    {"faults/s", "total", "faults", true},     {"faults/s", "zfill", "flt_zfill", true},
    {"faults/s", "swpin", "flt_swapin", true}, {"faults/s", "react", "flt_react", true},
    {"faults/s", "wp", "flt_wp", true},        {"paging/s", "pgin", "pgswapin", true},
    {"paging/s", "pgout", "pgswapout", true},  {"paging/s", "clust", "pdpageouts", true},
    {"paging/s", "freed", "pdfreed", true},    {"frames", "free", "free", false},
    {"frames", "act", "active", false},        {"frames", "inact", "inactive", false},
    {"frames", "pging", "paging", false},      {"swap", "inuse", "swpginuse", false},
    {"swap", "only", "swpgonly", false},
};
constexpr int kWidth = 7;

using Sample = std::vector<int64_t>;  // indexed like kFields

int FieldIndex(const char* name) {
  for (size_t i = 0; i < std::size(kFields); i++) {
    if (std::strcmp(kFields[i].name, name) == 0) return static_cast<int>(i);
  }
  return -1;
}

[[noreturn]] void Fail(const std::string& msg) {
  std::fprintf(stderr, "uvmstat: %s\n", msg.c_str());
  std::exit(1);
}

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: uvmstat [-r] [-n N | -f FILE] PID [INTERVAL [COUNT]]\n"
               "       uvmstat -l\n"
               "  PID          a process using uvmrt\n"
               "  INTERVAL     seconds between reports (default: one report)\n"
               "  COUNT        number of reports (default: until interrupted)\n"
               "  -r, --raw    every counter as name=value, one line per report\n"
               "  -n N         the process's runtime N (/dev/shm/uvmrt.PID.N)\n"
               "  -f FILE      read this counters file\n"
               "  -l, --list   list the processes that publish counters\n");
}

int64_t NowNs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

bool ProcessAlive(pid_t pid) {
  return kill(pid, 0) == 0 || errno == EPERM;
}

struct Channel {
  uint32_t n;
  std::string path;
};

// The counters files in /dev/shm, for one pid (or every pid if pid == 0).
std::vector<std::pair<pid_t, Channel>> FindChannels(pid_t pid) {
  std::vector<std::pair<pid_t, Channel>> out;
  DIR* d = opendir("/dev/shm");
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    int64_t p = 0;
    uint32_t n = 0;
    if (!uvmrt::uvm::parse_uvmexp_shm_name(e->d_name, &p, &n)) continue;
    if (pid != 0 && static_cast<pid_t>(p) != pid) continue;
    out.push_back({static_cast<pid_t>(p), Channel{n, std::string("/dev/shm/") + e->d_name}});
  }
  closedir(d);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : a.second.n < b.second.n;
  });
  return out;
}

// Maps a counters file read-only and checks it.
const uvmexp_shm* Attach(const std::string& path, pid_t pid) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(absl::StrFormat("cannot open %s: %s", path, std::strerror(errno)));
  struct stat st;
  if (fstat(fd, &st) != 0) Fail(absl::StrFormat("cannot stat %s: %s", path, std::strerror(errno)));
  if (static_cast<size_t>(st.st_size) < sizeof(uvmexp_shm)) {
    Fail(absl::StrFormat("%s is %d bytes, too small for uvmrt counters (%d bytes)", path,
                         st.st_size, sizeof(uvmexp_shm)));
  }
  void* m = mmap(nullptr, sizeof(uvmexp_shm), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (m == MAP_FAILED) Fail(absl::StrFormat("cannot map %s: %s", path, std::strerror(errno)));
  const auto* shm = static_cast<const uvmexp_shm*>(m);
  // The runtime writes the magic last; a runtime that is just starting may
  // not have yet.
  for (int i = 0; i < 100; i++) {
    std::atomic_thread_fence(std::memory_order_acquire);
    if (std::memcmp(shm->magic, uvmrt::uvm::kUvmexpShmMagic, sizeof(shm->magic)) == 0) break;
    if (i == 99) Fail(absl::StrFormat("%s is not a uvmrt counters file (bad magic)", path));
    usleep(10000);
  }
  std::atomic_thread_fence(std::memory_order_acquire);
  if (shm->header_bytes != offsetof(uvmexp_shm, exp) || shm->exp_bytes != sizeof(uvmexp_t)) {
    Fail(absl::StrFormat(
        "%s has another counter layout (header %d, counters %d bytes; this uvmstat expects %d "
        "and %d): use the uvmstat built with that process's uvmrt",
        path, shm->header_bytes, shm->exp_bytes, offsetof(uvmexp_shm, exp), sizeof(uvmexp_t)));
  }
  if (pid != 0 && shm->pid != pid) {
    Fail(absl::StrFormat("%s belongs to process %d, not %d", path, shm->pid, pid));
  }
  return shm;
}

Sample Read(const uvmexp_shm* shm) {
  Sample s(std::size(kFields));
  for (size_t i = 0; i < std::size(kFields); i++) s[i] = kFields[i].get(shm->exp);
  return s;
}

void PrintHeader() {
  std::string groups, heads;
  const char* last = "";
  for (const Column& c : kColumns) {
    if (FieldIndex(c.field) < 0) continue;
    if (std::strcmp(c.group, last) != 0) {
      // Pad the previous group to its columns, then start this one.
      groups.resize(heads.size(), ' ');
      groups += absl::StrFormat(" %-*s", kWidth - 1, c.group);
      last = c.group;
    }
    heads += absl::StrFormat("%*s", kWidth, c.head);
  }
  groups.erase(groups.find_last_not_of(' ') + 1);
  std::printf("%s\n%s\n", groups.c_str(), heads.c_str());
}

void PrintRow(const Sample& prev, const Sample& cur, double seconds) {
  std::string row;
  for (const Column& c : kColumns) {
    const int i = FieldIndex(c.field);
    if (i < 0) continue;
    int64_t v = cur[i];
    if (c.rate) {
      v = seconds > 0 ? static_cast<int64_t>(static_cast<double>(cur[i] - prev[i]) / seconds + 0.5)
                      : 0;
    }
    row += absl::StrFormat("%*d", kWidth, v);
  }
  std::printf("%s\n", row.c_str());
}

void PrintRaw(const uvmexp_shm* shm, const Sample& s) {
  std::string line = absl::StrFormat("pid=%d time=%.3f", shm->pid,
                                     static_cast<double>(NowNs(CLOCK_REALTIME)) / 1e9);
  for (size_t i = 0; i < std::size(kFields); i++) {
    if (s[i] == kMissing) continue;
    line += absl::StrFormat(" %s=%d", kFields[i].name, s[i]);
  }
  std::printf("%s\n", line.c_str());
}

int List() {
  const auto all = FindChannels(0);
  if (all.empty()) {
    std::printf("no uvmrt counters in /dev/shm\n");
    return 0;
  }
  std::printf("%8s %3s %-8s %s\n", "PID", "N", "STATE", "FILE");
  for (const auto& [pid, ch] : all) {
    std::printf("%8d %3u %-8s %s\n", pid, ch.n, ProcessAlive(pid) ? "running" : "gone",
                ch.path.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool raw = false, list = false;
  long runtime_n = -1;
  std::string file;
  static const option kLong[] = {{"raw", no_argument, nullptr, 'r'},
                                 {"list", no_argument, nullptr, 'l'},
                                 {"help", no_argument, nullptr, 'h'},
                                 {nullptr, 0, nullptr, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "+rln:f:h", kLong, nullptr)) != -1) {
    switch (c) {
      case 'r':
        raw = true;
        break;
      case 'l':
        list = true;
        break;
      case 'n':
        if (!absl::SimpleAtoi(optarg, &runtime_n) || runtime_n < 0) {
          Fail(absl::StrFormat("-n %s: not a runtime number", optarg));
        }
        break;
      case 'f':
        file = optarg;
        break;
      case 'h':
        Usage(stdout);
        return 0;
      default:
        Usage(stderr);
        return 2;
    }
  }
  if (list) return List();
  const int npos = argc - optind;
  if (npos < 1 || npos > 3) {
    Usage(stderr);
    return 2;
  }
  int pid = 0;
  if (!absl::SimpleAtoi(argv[optind], &pid) || pid <= 0) {
    Fail(absl::StrFormat("%s: not a process id", argv[optind]));
  }
  double interval = 0;
  long count = 1;
  if (npos >= 2) {
    if (!absl::SimpleAtod(argv[optind + 1], &interval) || !(interval > 0) || interval > 86400) {
      Fail(absl::StrFormat("%s: not an interval in seconds", argv[optind + 1]));
    }
    count = -1;
  }
  if (npos == 3 && (!absl::SimpleAtoi(argv[optind + 2], &count) || count < 1)) {
    Fail(absl::StrFormat("%s: not a report count", argv[optind + 2]));
  }

  if (file.empty()) {
    const auto chans = FindChannels(pid);
    const bool alive = ProcessAlive(pid);
    if (chans.empty()) {
      Fail(alive
               ? absl::StrFormat("process %d publishes no uvmrt counters (no /dev/shm/uvmrt.%d.*):"
                                 " it has no running uvmrt runtime",
                                 pid, pid)
               : absl::StrFormat("no process %d", pid));
    }
    if (!alive) {
      Fail(absl::StrFormat("process %d is not running; %s is left over from it (remove it)", pid,
                           chans.front().second.path));
    }
    if (runtime_n >= 0) {
      for (const auto& [p, ch] : chans) {
        if (ch.n == static_cast<uint32_t>(runtime_n)) file = ch.path;
      }
      if (file.empty()) Fail(absl::StrFormat("process %d has no runtime %d", pid, runtime_n));
    } else {
      file = chans.front().second.path;
      if (chans.size() > 1) {
        std::string ns;
        for (const auto& [p, ch] : chans) ns += absl::StrFormat(" %d", ch.n);
        std::fprintf(stderr, "uvmstat: process %d has runtimes%s; showing %d (choose with -n)\n",
                     pid, ns.c_str(), chans.front().second.n);
      }
    }
  }
  const uvmexp_shm* shm = Attach(file, static_cast<pid_t>(pid));

  // The first report: rates since the runtime started.
  Sample prev(std::size(kFields), 0);
  double seconds = static_cast<double>(NowNs(CLOCK_REALTIME) - shm->start_unix_ns) / 1e9;
  int64_t t_prev = NowNs(CLOCK_MONOTONIC);
  for (long i = 0; count < 0 || i < count; i++) {
    if (i > 0) {
      const int64_t next = t_prev + static_cast<int64_t>(interval * 1e9);
      for (int64_t now = NowNs(CLOCK_MONOTONIC); now < next; now = NowNs(CLOCK_MONOTONIC)) {
        const int64_t left = next - now;
        timespec ts{static_cast<time_t>(left / 1000000000), static_cast<long>(left % 1000000000)};
        nanosleep(&ts, nullptr);
      }
      if (access(file.c_str(), F_OK) != 0) {
        std::fprintf(stderr, "uvmstat: the runtime of process %d has stopped\n", pid);
        return 0;
      }
      const int64_t now = NowNs(CLOCK_MONOTONIC);
      seconds = static_cast<double>(now - t_prev) / 1e9;
      t_prev = now;
    }
    const Sample cur = Read(shm);
    if (raw) {
      PrintRaw(shm, cur);
    } else {
      if (i % 20 == 0) PrintHeader();
      PrintRow(prev, cur, seconds);
    }
    std::fflush(stdout);
    prev = cur;
  }
  return 0;
}
