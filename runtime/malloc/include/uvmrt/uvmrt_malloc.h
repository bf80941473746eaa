/*
 * uvmrt_malloc.h: optional calls into the link-time malloc (libuvmrt-malloc).
 *
 * A program linked with `pkg-config --libs uvmrt-malloc` needs no source
 * change: malloc, free, calloc, realloc, reallocarray, posix_memalign,
 * aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size, and C++
 * new/delete (sized and aligned forms too) are served from memory that a
 * uvmrt runtime pages.  The library starts that runtime before main, with
 * options from the environment (uvmrt/env.h), and gives mimalloc one large
 * uvmrt region to allocate from.
 *
 * These functions let a program look at that runtime.  They are safe to call
 * from any thread, at any time.
 */
#ifndef UVMRT_UVMRT_MALLOC_H_
#define UVMRT_UVMRT_MALLOC_H_

#include <stddef.h>

#include "uvmrt/uvmrt_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 once allocations are served from uvmrt memory, 0 before (and in a
 * process forked from one that uses uvmrt-malloc). */
int uvmrt_malloc_active(void);

/* 1 if p points into the uvmrt memory the allocator manages. */
int uvmrt_malloc_owns(const void *p);

/* Copies the runtime's uvmexp counters into *out.  Returns 0, or -ENODEV if
 * the runtime is not running. */
int uvmrt_malloc_get_stats(uvmrt_stats *out);

/* The shared-memory file that uvmstat reads, or "" if there is none. */
const char *uvmrt_malloc_stats_path(void);

/* Bytes of uvmrt memory the allocator may use (its arena). */
size_t uvmrt_malloc_arena_bytes(void);

/* Returns to uvmrt what the calling thread's heap still holds free (pages
 * kept for reuse, segments of exited threads), with MADV_DONTNEED: the
 * runtime frees their frames and swap slots.  Other freed memory goes back
 * as it is freed.  malloc_trim() does the same. */
void uvmrt_malloc_collect(void);

#ifdef __cplusplus
}
#endif

#endif /* UVMRT_UVMRT_MALLOC_H_ */
