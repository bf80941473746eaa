/*
 * uvmrt_types.h: the plain structures of the uvmrt interface (options and
 * statistics), shared by the C header uvmrt.h and the C++ header runtime.h.
 * It names no `uvmrt` type, so C++ code may include it beside the uvmrt
 * namespace.
 */
#ifndef UVMRT_UVMRT_TYPES_H_
#define UVMRT_UVMRT_TYPES_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct uvmrt_options {
  size_t budget_bytes;     /* resident budget; at least UVMRT_MIN_BUDGET */
  const char *swap_path;   /* swap file or directory; NULL: a fresh file in $TMPDIR */
  size_t swap_bytes;       /* swap file size; 0: 4 x budget_bytes */
  int cluster_pages;       /* pages per swap cluster (UVM's SWCLUSTPAGES) */
  int fault_threads;       /* userfaultfd handler threads */
  int overcommit;          /* nonzero: allow mappings beyond budget + swap */
  int allow_buffered_swap; /* nonzero: fall back to buffered I/O without O_DIRECT */
  int in_thread_faults;    /* nonzero: resolve faults on the touching thread (SIGBUS);
                              see docs/integration.md */
} uvmrt_options;

#define UVMRT_MIN_BUDGET (1u << 20)
#define UVMRT_MAX_CLUSTER_PAGES 256

/*
 * uvmrt_stats: a snapshot of the uvmexp counters.  Names follow UVM's
 * struct uvmexp; counts are in pages unless noted.
 */
typedef struct uvmrt_stats {
  int64_t pagesize;       /* bytes per page */
  int64_t npages;         /* frames: the resident budget less its bounce pages */
  int64_t free;           /* free frames */
  int64_t active;         /* frames on the active queue */
  int64_t inactive;       /* frames on the inactive queue */
  int64_t paging;         /* frames in pageout I/O */
  int64_t wired;          /* wired frames */
  int64_t freemin;        /* uvmpd_tune: free-page minimum */
  int64_t freetarg;       /* uvmpd_tune: free-page target */
  int64_t inactarg;       /* inactive target, recomputed every daemon pass */
  int64_t wiredmax;       /* uvmpd_tune: wired maximum */
  int64_t swpages;        /* slots in the swap file */
  int64_t swpginuse;      /* slots allocated (including bad ones) */
  int64_t swpgonly;       /* pages whose only copy is in swap */
  int64_t swpgbad;        /* slots marked bad after write errors */
  int64_t pdwoke;         /* page daemon wakeups */
  int64_t pdrevs;         /* uvmpd_scan passes */
  int64_t pdscans;        /* pages looked at by uvmpd_scan_inactive */
  int64_t pdfreed;        /* clean pages freed without I/O */
  int64_t pdreact;        /* referenced pages reactivated by the daemon */
  int64_t pdbusy;         /* busy pages skipped by the daemon */
  int64_t pdpageouts;     /* cluster writes started */
  int64_t pdpending;      /* cluster writes that went asynchronous */
  int64_t pddeact;        /* pages deactivated by the active scan */
  int64_t pdreacts_dirty; /* dirty pages reactivated because swap is full */
  int64_t pgswapin;       /* pages read from swap */
  int64_t pgswapout;      /* pages written to swap */
  int64_t swapouterr;     /* pages whose pageout failed */
  int64_t swapinerr;      /* swap-in reads that failed */
  int64_t faults;         /* userfaultfd faults handled */
  int64_t flt_zfill;      /* zero-fill on first touch */
  int64_t flt_swapin;     /* faults served from swap */
  int64_t flt_react;      /* resident but unmapped page, remapped */
  int64_t flt_around;     /* extra pages brought in by fault-around, read-ahead, zero-fill ahead */
  int64_t flt_wp;         /* first write to a clean page */
  int64_t flt_busywait;   /* waits on a busy page (PG_WANTED) */
  int64_t flt_uvmwait;    /* uvm_wait: no free frame */
  int64_t mapped_bytes;   /* bytes in live regions */
  int64_t regions;        /* live regions */
} uvmrt_stats;

#ifdef __cplusplus
}
#endif

#endif /* UVMRT_UVMRT_TYPES_H_ */
