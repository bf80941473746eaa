// uvmrt_malloc.cc: the link-time malloc.  The whole allocation family is
// defined here, so a program linked with libuvmrt-malloc calls these instead
// of glibc's.  Allocation itself is mimalloc's: it allocates from one arena,
// a large uvmrt region given to it with mi_manage_os_memory(), with OS
// allocation disabled (mi_option_limit_os_alloc).  mimalloc returns memory
// with MADV_DONTNEED, which the runtime sees (a userfaultfd REMOVE event) and
// answers by freeing the frames and swap slots behind it.
//
// Who gets uvmrt memory.  Each thread is classified once, on its first
// allocation after the runtime is up:
//   - application threads allocate from the arena (mimalloc);
//   - the runtime's own threads (fault handlers, page daemon, aiodone), which
//     must never touch memory they might have to page in themselves,
//     allocate from glibc's heap;
//   - before the runtime is up (while the program and its libraries are
//     being loaded, and while the runtime itself is being created) every
//     allocation is glibc's.
// free() and the other calls that take a pointer tell the two heaps apart by
// address: the arena is one range of addresses.
//
// A forked child has no runtime and no arena (regions are MADV_DONTFORK): it
// allocates from glibc's heap, and frees of arena pointers do nothing.
#include "runtime/malloc/uvmrt_malloc_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <mimalloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <new>

#include "uvmrt/uvmrt_malloc.h"

// glibc's own allocator, under the names glibc exports for this purpose.
extern "C" {
void* __libc_malloc(size_t n);
void* __libc_calloc(size_t n, size_t size);
void* __libc_realloc(void* p, size_t n);
void __libc_free(void* p);
void* __libc_memalign(size_t alignment, size_t n);
}

namespace uvmrt::malloc_internal {

std::atomic<int> g_state{kBoot};
uintptr_t g_arena_lo = 0;
uintptr_t g_arena_len = 0;
pid_t g_runtime_tids[kMaxRuntimeTids];
int g_nruntime_tids = 0;

namespace {

// This thread's kind: 0 until classified.
enum Kind : int { kUnknown = 0, kApp = 1, kSystem = 2 };
__thread int t_kind __attribute__((tls_model("initial-exec"))) = kUnknown;

// mimalloc serves alignments up to half a segment from an arena; larger ones
// it would take from the OS, which is disabled.
constexpr size_t kMaxArenaAlign = size_t{16} << 20;
constexpr size_t kPage = 4096;

size_t (*libc_usable_size)(void*) = nullptr;
int (*libc_malloc_trim)(size_t) = nullptr;

inline bool InArena(const void* p) {
  return reinterpret_cast<uintptr_t>(p) - g_arena_lo < g_arena_len;
}

// The slow half of UseArena: classifies this thread once the runtime is up.
__attribute__((noinline)) bool Classify() {
  if (t_kind != kUnknown) return false;  // kSystem
  if (g_state.load(std::memory_order_acquire) != kUp) return false;
  const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  for (int i = 0; i < g_nruntime_tids; i++) {
    if (g_runtime_tids[i] == tid) {
      t_kind = kSystem;
      return false;
    }
  }
  t_kind = kApp;
  return true;
}

// True if this thread allocates from the arena.
inline bool UseArena() {
  if (__builtin_expect(t_kind == kApp, 1)) return true;
  return Classify();
}

inline void* NoMem() {
  errno = ENOMEM;
  return nullptr;
}

inline bool PowerOf2(size_t a) {
  return a != 0 && (a & (a - 1)) == 0;
}

size_t LibcUsable(void* p) {
  if (libc_usable_size == nullptr) ResolveLibc();
  return libc_usable_size != nullptr ? libc_usable_size(p) : 0;
}

}  // namespace

void ResolveLibc() {
  // Look the symbols up in libc itself: this library defines the same names.
  void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  if (libc == nullptr) return;
  libc_usable_size = reinterpret_cast<size_t (*)(void*)>(dlsym(libc, "malloc_usable_size"));
  libc_malloc_trim = reinterpret_cast<int (*)(size_t)>(dlsym(libc, "malloc_trim"));
  void* own = dlsym(libc, "__libc_malloc");
  dlclose(libc);
  if (own != nullptr && own != reinterpret_cast<void*>(&__libc_malloc)) {
    static const char kMsg[] =
        "uvmrt-malloc: __libc_malloc does not resolve to glibc: another allocator is linked "
        "ahead of libc; link uvmrt-malloc alone\n";
    if (write(2, kMsg, sizeof(kMsg) - 1) < 0) _exit(1);
    _exit(1);
  }
}

void OnForkChild() {
  g_state.store(kForked, std::memory_order_release);
  t_kind = kSystem;
}

void* Malloc(size_t n) {
  if (UseArena()) {
    void* p = mi_malloc(n);
    return p != nullptr ? p : NoMem();
  }
  return __libc_malloc(n);
}

void Free(void* p) {
  if (p == nullptr) return;
  if (InArena(p)) {
    if (g_state.load(std::memory_order_relaxed) == kForked) return;
    // free() leaves errno alone (POSIX.1-2024); a purge's madvise may not.
    const int saved = errno;
    mi_free(p);
    errno = saved;
    return;
  }
  __libc_free(p);
}

void* Calloc(size_t n, size_t size) {
  if (UseArena()) {
    size_t bytes;
    if (__builtin_mul_overflow(n, size, &bytes)) return NoMem();
    void* p = mi_calloc(n, size);
    return p != nullptr ? p : NoMem();
  }
  return __libc_calloc(n, size);
}

void* Realloc(void* p, size_t n) {
  if (p == nullptr) return Malloc(n);
  if (n == 0) {  // as glibc: free, and return NULL
    Free(p);
    return nullptr;
  }
  if (InArena(p)) {
    if (g_state.load(std::memory_order_relaxed) == kForked) return NoMem();
    if (UseArena()) {
      void* q = mi_realloc(p, n);
      return q != nullptr ? q : NoMem();
    }
    // Not expected (the runtime's threads never see arena pointers), but
    // keep the block out of the arena from now on.
    void* q = __libc_malloc(n);
    if (q == nullptr) return nullptr;
    const size_t old = mi_usable_size(p);
    memcpy(q, p, old < n ? old : n);
    mi_free(p);
    return q;
  }
  if (UseArena()) {
    // A block from before the runtime was up: move it into the arena.
    void* q = mi_malloc(n);
    if (q == nullptr) return NoMem();
    const size_t old = LibcUsable(p);
    memcpy(q, p, old < n ? old : n);
    __libc_free(p);
    return q;
  }
  return __libc_realloc(p, n);
}

void* Aligned(size_t alignment, size_t n) {
  if (alignment <= kMaxArenaAlign && UseArena()) {
    void* p = alignment <= alignof(max_align_t) ? mi_malloc(n) : mi_malloc_aligned(n, alignment);
    return p != nullptr ? p : NoMem();
  }
  return __libc_memalign(alignment, n);
}

size_t UsableSize(void* p) {
  if (p == nullptr) return 0;
  if (InArena(p)) {
    return g_state.load(std::memory_order_relaxed) == kForked ? 0 : mi_usable_size(p);
  }
  return LibcUsable(p);
}

bool Owns(const void* p) {
  return p != nullptr && InArena(p);
}

void Collect() {
  if (t_kind == kApp) mi_collect(true);
}

}  // namespace uvmrt::malloc_internal

namespace mi = uvmrt::malloc_internal;

extern "C" {

void* malloc(size_t n) noexcept {
  return mi::Malloc(n);
}

void free(void* p) noexcept {
  mi::Free(p);
}

void* calloc(size_t n, size_t size) noexcept {
  return mi::Calloc(n, size);
}

void* realloc(void* p, size_t n) noexcept {
  return mi::Realloc(p, n);
}

void* reallocarray(void* p, size_t n, size_t size) noexcept {
  size_t bytes;
  if (__builtin_mul_overflow(n, size, &bytes)) {
    errno = ENOMEM;
    return nullptr;
  }
  return mi::Realloc(p, bytes);
}

int posix_memalign(void** out, size_t alignment, size_t n) noexcept {
  if (alignment % sizeof(void*) != 0 || !mi::PowerOf2(alignment)) return EINVAL;
  void* p = mi::Aligned(alignment, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}

void* aligned_alloc(size_t alignment, size_t n) noexcept {
  if (!mi::PowerOf2(alignment)) {
    errno = EINVAL;
    return nullptr;
  }
  return mi::Aligned(alignment, n);
}

void* memalign(size_t alignment, size_t n) noexcept {
  // As glibc: any alignment is rounded up to a power of two.
  if (alignment > (SIZE_MAX >> 1) + 1) {
    errno = EINVAL;
    return nullptr;
  }
  size_t a = alignof(max_align_t);
  while (a < alignment) a <<= 1;
  return mi::Aligned(a, n);
}

void* valloc(size_t n) noexcept {
  return mi::Aligned(mi::kPage, n);
}

void* pvalloc(size_t n) noexcept {
  if (n > SIZE_MAX - mi::kPage) {
    errno = ENOMEM;
    return nullptr;
  }
  return mi::Aligned(mi::kPage, (n + mi::kPage - 1) & ~(mi::kPage - 1));
}

size_t malloc_usable_size(void* p) noexcept {
  return mi::UsableSize(p);
}

int malloc_trim(size_t pad) noexcept {
  mi::Collect();
  if (mi::libc_malloc_trim == nullptr) mi::ResolveLibc();
  if (mi::libc_malloc_trim != nullptr) mi::libc_malloc_trim(pad);
  return 1;
}

int uvmrt_malloc_active(void) {
  return mi::g_state.load(std::memory_order_acquire) == mi::kUp ? 1 : 0;
}

int uvmrt_malloc_owns(const void* p) {
  return mi::Owns(p) ? 1 : 0;
}

size_t uvmrt_malloc_arena_bytes(void) {
  return mi::g_state.load(std::memory_order_acquire) == mi::kUp ? mi::g_arena_len : 0;
}

void uvmrt_malloc_collect(void) {
  mi::Collect();
}

}  // extern "C"

// C++ new and delete: every form, over the functions above.
namespace {

void* NewImpl(size_t n) {
  for (;;) {
    void* p = mi::Malloc(n != 0 ? n : 1);
    if (p != nullptr) return p;
    std::new_handler h = std::get_new_handler();
    if (h == nullptr) throw std::bad_alloc();
    h();
  }
}

void* NewAlignedImpl(size_t n, std::align_val_t al) {
  const size_t a = static_cast<size_t>(al);
  for (;;) {
    void* p = mi::Aligned(a < sizeof(void*) ? sizeof(void*) : a, n != 0 ? n : 1);
    if (p != nullptr) return p;
    std::new_handler h = std::get_new_handler();
    if (h == nullptr) throw std::bad_alloc();
    h();
  }
}

}  // namespace

void* operator new(size_t n) {
  return NewImpl(n);
}
void* operator new[](size_t n) {
  return NewImpl(n);
}
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  try {
    return NewImpl(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  try {
    return NewImpl(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(size_t n, std::align_val_t al) {
  return NewAlignedImpl(n, al);
}
void* operator new[](size_t n, std::align_val_t al) {
  return NewAlignedImpl(n, al);
}
void* operator new(size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  try {
    return NewAlignedImpl(n, al);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  try {
    return NewAlignedImpl(n, al);
  } catch (...) {
    return nullptr;
  }
}

void operator delete(void* p) noexcept {
  mi::Free(p);
}
void operator delete[](void* p) noexcept {
  mi::Free(p);
}
void operator delete(void* p, size_t) noexcept {
  mi::Free(p);
}
void operator delete[](void* p, size_t) noexcept {
  mi::Free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  mi::Free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  mi::Free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  mi::Free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  mi::Free(p);
}
void operator delete(void* p, size_t, std::align_val_t) noexcept {
  mi::Free(p);
}
void operator delete[](void* p, size_t, std::align_val_t) noexcept {
  mi::Free(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  mi::Free(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  mi::Free(p);
}
