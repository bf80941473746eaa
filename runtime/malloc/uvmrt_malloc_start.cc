// uvmrt_malloc_start.cc: starting the link-time malloc's runtime.
//
// Start() runs from a constructor of libuvmrt-malloc, before main and after
// the constructors of the libraries it depends on.  Until it has finished,
// every allocation is glibc's, so creating the runtime (whose code allocates
// with malloc, and whose threads start allocating at once) cannot recurse
// into the arena being set up.
#include <dirent.h>
#include <errno.h>
#include <mimalloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "runtime/malloc/uvmrt_malloc_internal.h"
#include "uvmrt/env.h"
#include "uvmrt/runtime.h"
#include "uvmrt/uvmrt_malloc.h"

namespace uvmrt::malloc_internal {

namespace {

// mimalloc 2.0's arena block (its segment size): the arena starts on such a
// boundary and holds whole blocks.
constexpr size_t kBlock = size_t{32} << 20;

Runtime* g_rt = nullptr;
char g_stats_path[256];

[[noreturn]] void Die(const std::string& line) {
  std::string s = line + "\n";
  if (write(2, s.data(), s.size()) < 0) _exit(1);
  exit(1);
}

std::vector<pid_t> ListTids() {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9') out.push_back(atoi(e->d_name));
  }
  closedir(d);
  return out;
}

std::string Mib(size_t bytes) {
  return absl::StrFormat("%dM", bytes >> 20);
}

}  // namespace

void Start() {
  int expected = kBoot;
  if (!g_state.compare_exchange_strong(expected, kStarting)) return;
  // glibc state that the runtime's threads may read later is set up now, in
  // glibc's heap, rather than by an application thread in the arena.
  tzset();
  ResolveLibc();
  pthread_atfork(nullptr, nullptr, &OnForkChild);

  absl::StatusOr<Options> o = OptionsFromEnv(Options());
  if (!o.ok()) Die(std::string(o.status().message()));
  if (o->in_thread_faults) {
    // The allocator touches its arena while it holds its own locks; a fault
    // handled in a SIGBUS handler on that thread may allocate, and would
    // wait for them.
    Die("uvmrt-malloc: UVMRT_IN_THREAD_FAULTS is not supported by the link-time malloc: unset it");
  }
  absl::StatusOr<std::optional<size_t>> reserve = ReserveFromEnv();
  if (!reserve.ok()) Die(std::string(reserve.status().message()));
  const size_t swap = o->swap_bytes != 0 ? o->swap_bytes : 4 * o->budget_bytes;
  const size_t capacity = o->budget_bytes + swap;
  const size_t arena = (reserve->has_value() ? **reserve : capacity) & ~(kBlock - 1);
  if (arena < kBlock) {
    Die(absl::StrFormat(
        "uvmrt-malloc: budget + swap is %s, less than the allocator's %s segment: raise "
        "UVMRT_SWAP_SIZE or UVMRT_BUDGET, or set UVMRT_RESERVE",
        Mib(capacity), Mib(kBlock)));
  }
  // The arena region is mapped one block larger than the arena, so that the
  // arena can start on a block boundary; the slack is never touched.  Only
  // the arena is ever used, and unless UVMRT_RESERVE says otherwise it fits
  // in budget + swap.
  o->overcommit = true;

  const std::vector<pid_t> before = ListTids();
  absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(*o);
  if (!rt.ok()) Die(std::string(rt.status().message()));
  const std::vector<pid_t> after = ListTids();
  snprintf(g_stats_path, sizeof(g_stats_path), "%s", (*rt)->StatsPath().c_str());
  for (pid_t t : after) {
    bool old = false;
    for (pid_t b : before) old = old || b == t;
    if (!old && g_nruntime_tids < kMaxRuntimeTids) g_runtime_tids[g_nruntime_tids++] = t;
  }

  absl::StatusOr<void*> region = (*rt)->Map(arena + kBlock);
  if (!region.ok()) {
    const std::string msg(region.status().message());
    rt->reset();
    Die("uvmrt-malloc: cannot map the allocator's arena: " + msg);
  }
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(*region) + kBlock - 1) & ~(kBlock - 1);
  mi_option_enable(mi_option_limit_os_alloc);
  // Freed memory goes back to the runtime at once (MADV_DONTNEED), rather
  // than after mimalloc's delay: memory the allocator keeps would hold frames
  // and, under pressure, be written to swap.  mimalloc's own variables
  // (MIMALLOC_DECOMMIT_DELAY=25 restores its default) take precedence.
  if (getenv("MIMALLOC_DECOMMIT_DELAY") == nullptr) mi_option_set(mi_option_decommit_delay, 0);
  if (getenv("MIMALLOC_SEGMENT_DECOMMIT_DELAY") == nullptr) {
    mi_option_set(mi_option_segment_decommit_delay, 0);
  }
  if (!mi_manage_os_memory(reinterpret_cast<void*>(lo), arena, /*is_committed=*/false,
                           /*is_large=*/false, /*is_zero=*/true, /*numa_node=*/-1)) {
    rt->reset();
    Die("uvmrt-malloc: mimalloc refused the arena");
  }
  // A swap file named by path is unlinked now: the runtime lives as long as
  // the process, and the file should not outlive it.
  struct stat st;
  if (!o->swap_path.empty() && stat(o->swap_path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    unlink(o->swap_path.c_str());
  }
  g_rt = rt->release();
  g_arena_lo = lo;
  g_arena_len = arena;
  g_state.store(kUp, std::memory_order_release);
}

void AtExit() {
  // The runtime is left running: destructors and atexit handlers that run
  // after this one may still free arena memory.  Only the counters file goes.
  if (g_state.load(std::memory_order_acquire) == kUp && g_stats_path[0] != '\0') {
    unlink(g_stats_path);
  }
}

}  // namespace uvmrt::malloc_internal

namespace mi = uvmrt::malloc_internal;

extern "C" {

int uvmrt_malloc_get_stats(uvmrt_stats* out) {
  if (out == nullptr) return -EINVAL;
  if (mi::g_state.load(std::memory_order_acquire) != mi::kUp) return -ENODEV;
  *out = mi::g_rt->GetStats();
  return 0;
}

const char* uvmrt_malloc_stats_path(void) {
  if (mi::g_state.load(std::memory_order_acquire) != mi::kUp) return "";
  return mi::g_stats_path;
}

}  // extern "C"
