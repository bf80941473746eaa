/*
 * uvmrt.h: the C interface of uvmrt, a user-space paging runtime.
 *
 * A runtime maps anonymous regions that may be far larger than the memory
 * it is allowed to keep resident.  Faults on those regions are caught with
 * userfaultfd; a page daemon ported from OpenBSD's UVM keeps the resident
 * set within the budget by paging to a swap file through io_uring.
 *
 * Thread safety: every function may be called from any thread, except that
 * uvmrt_destroy() must not race with other calls on the same runtime.
 * Mirrors uvmrt/runtime.h (C++).
 */
#ifndef UVMRT_UVMRT_H_
#define UVMRT_UVMRT_H_

#include <stddef.h>
#include <stdint.h>

#include "uvmrt/uvmrt_types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct uvmrt uvmrt;

/* Fills *opts with the defaults. */
void uvmrt_options_init(uvmrt_options *opts);

/* Creates a runtime.  Returns 0 or a negative errno; uvmrt_last_error()
 * then says what went wrong and what to do. */
int uvmrt_create(const uvmrt_options *opts, uvmrt **out);

/* The message of the last failed call on this thread ("" if none). */
const char *uvmrt_last_error(void);

/* Maps a page-aligned region of at least `bytes` (rounded up to pages).
 * Returns NULL on failure (see uvmrt_last_error). */
void *uvmrt_map(uvmrt *rt, size_t bytes);

/* Unmaps a region returned by uvmrt_map; `bytes` is its size as given to
 * uvmrt_map (or 0).  Returns 0 or a negative errno. */
int uvmrt_unmap(uvmrt *rt, void *addr, size_t bytes);

/* Access advice for the region starting at addr, as madvise(2). */
#define UVMRT_ADV_NORMAL 0     /* look ahead on sequential access */
#define UVMRT_ADV_RANDOM 1     /* never bring in neighbours */
#define UVMRT_ADV_SEQUENTIAL 2 /* always bring in the following pages */
int uvmrt_advise(uvmrt *rt, void *addr, int advice);

/* Copies the uvmexp counters into *out.  Returns 0 or a negative errno. */
int uvmrt_get_stats(uvmrt *rt, uvmrt_stats *out);

/* Stops the runtime's threads (no I/O left in flight), releases every
 * region and removes the swap file it created. */
void uvmrt_destroy(uvmrt *rt);

#ifdef __cplusplus
}
#endif

#endif /* UVMRT_UVMRT_H_ */
