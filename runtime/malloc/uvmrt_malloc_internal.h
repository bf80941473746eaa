// uvmrt_malloc_internal.h: what the parts of the link-time malloc share:
// the allocation functions (uvmrt_malloc.cc), start-up (uvmrt_malloc_start.cc)
// and the constructor that runs it (uvmrt_malloc_ctor.cc).
#ifndef UVMRT_MALLOC_UVMRT_MALLOC_INTERNAL_H_
#define UVMRT_MALLOC_UVMRT_MALLOC_INTERNAL_H_

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <atomic>

namespace uvmrt::malloc_internal {

// g_state: kBoot until start-up begins; kStarting while the runtime is
// created (every allocation is glibc's); kUp once the arena is in place;
// kFailed if start-up failed; kForked in a forked child.
enum State : int { kBoot = 0, kStarting = 1, kUp = 2, kFailed = 3, kForked = 4 };
extern std::atomic<int> g_state;

// The arena: [g_arena_lo, g_arena_lo + g_arena_len).  Set before kUp and
// never changed after.
extern uintptr_t g_arena_lo;
extern uintptr_t g_arena_len;

// The runtime's own threads, which allocate from glibc.  Set before kUp.
inline constexpr int kMaxRuntimeTids = 512;
extern pid_t g_runtime_tids[kMaxRuntimeTids];
extern int g_nruntime_tids;

// The allocation family (uvmrt_malloc.cc).
void* Malloc(size_t n);
void Free(void* p);
void* Calloc(size_t n, size_t size);
void* Realloc(void* p, size_t n);
void* Aligned(size_t alignment, size_t n);
size_t UsableSize(void* p);
bool Owns(const void* p);
void Collect();

// Looks up glibc's malloc_usable_size and malloc_trim, and checks that
// __libc_malloc is glibc's.
void ResolveLibc();
// pthread_atfork child handler.
void OnForkChild();

// Start-up and exit (uvmrt_malloc_start.cc).  Start() creates the runtime
// from the environment and hands mimalloc the arena; on a bad environment or
// a runtime that cannot start it prints one line and exits with status 1.
void Start();
void AtExit();

}  // namespace uvmrt::malloc_internal

#endif  // UVMRT_MALLOC_UVMRT_MALLOC_INTERNAL_H_
