// uvm.h: the paging core, UVM's global `struct uvm` and the functions of its
// subsystems.  One Uvm is one runtime's memory: its frames, page queues,
// free list, swap slots, regions and uvmexp counters.
//
// The member functions are grouped by subsystem and defined in the file named
// for it, as in UVM:
//   uvm_page.cc     frames, page queues, the free list, uvm_wait
//   uvm_aobj.cc     regions (uao_create, uao_detach, uao_set_swslot)
//   uvm_fault.cc    uvm_fault
//   uvm_pdaemon.cc  the page daemon (uvm_pageout, uvmpd_scan, swapcluster)
//   uvm_swap.cc     swap slots, uvm_swap_put/get, uvm_swap_dropcluster
//   io/uvm_aiodone.cc  the aiodone daemon
//
// Lock order (a thread may hold locks only in this order):
//   maplock -> owner lock (chunk vmobjlock) -> pageqlock -> fpageqlock
//   swap_lock and pdlock are leaves.
// The page daemon finds pages through the queues, the wrong way round, so it
// only ever trylocks an owner while it holds pageqlock (uvmpd_trylockowner).
#ifndef UVMRT_UVM_UVM_H_
#define UVMRT_UVM_UVM_H_

#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/swapdev.h"
#include "uvm/uvm_aobj.h"
#include "uvm/uvm_lock.h"
#include "uvm/uvm_page.h"
#include "uvm/uvm_pmap.h"
#include "uvm/uvmexp.h"

namespace uvmrt::uvm {

// Pager outcomes, as UVM's VM_PAGER_*.
enum pager_result { VM_PAGER_OK = 0, VM_PAGER_PEND, VM_PAGER_AGAIN, VM_PAGER_ERROR };

// UVMPD_NUMDIRTYREACTS: dirty pages reactivated per pass when swap is full.
inline constexpr int UVMPD_NUMDIRTYREACTS = 16;

// Fault-around: the most pages one fault brings in after the faulting one
// (UVM's nforw), with sequential advice, and with normal advice on
// sequential access.  A zero-fill run takes the larger number either way:
// it needs no bounce pages, and a first pass then pays half the round
// trips.  A swap-in run keeps the smaller one, of which read-ahead is built.
inline constexpr uint64_t kMaxFaultAhead = 127;
inline constexpr uint64_t kNormalFaultAhead = 63;
// Read-ahead: runs read asynchronously after a sequential swap-in run.  With
// the faulting run, eight runs of kNormalFaultAhead + 1 pages: a whole chunk,
// and the most bounce pages a runtime has (bounce_pages_for).
inline constexpr int kReadAheadRuns = 7;
static_assert((kReadAheadRuns + 1) * (kNormalFaultAhead + 1) == kChunkPages);

// Fault access kinds handed to uvm_fault.
enum fault_access { FAULT_READ, FAULT_WRITE, FAULT_WP };

struct uvm_params {
  uint64_t npages;          // frames in the budget
  int cluster_pages;        // SWCLUSTPAGES
  bool overcommit = false;  // allow mappings beyond npages + swpages
  // inactarg = (active + inactive) / inactarg_div.  UVM's is 3; the
  // runtime uses kInactargDiv.
  int inactarg_div = 3;
  // Bounce pages for swap-in reads (uvm_swap_allocpages); 0: swap-ins read
  // straight into their frames.
  uint64_t bounce_pages = 0;
};

// The bounce pages a runtime keeps out of a budget of `budget_pages`: a
// sixteenth, at most 2 MiB (four 128-page reads in flight).
constexpr uint64_t bounce_pages_for(uint64_t budget_pages) {
  return std::min<uint64_t>(512, budget_pages / 16);
}
// A full read-ahead window fits the most bounce pages a runtime has.
static_assert((kReadAheadRuns + 1) * (kNormalFaultAhead + 1) == bounce_pages_for(UINT64_MAX));

// The runtime's inactive target: an eighth of the queued pages, where UVM
// keeps a third.  UVM's inactive pages cost nothing when touched (the
// hardware sets the reference bit, and the daemon reactivates them); here a
// touch of an inactive page is a reactivation fault, so a smaller inactive
// queue trades some of the second chance for fewer faults
// (docs/performance.md).
inline constexpr int kInactargDiv = 8;

// A cluster that is one run of at least this many pages is written from its
// frames; any other from bounce pages (uvm_swap_writepages).
inline constexpr int kWriteFromFramesRun = 16;

// A cluster being built by the page daemon (OpenBSD's struct swapcluster).
struct swapcluster {
  int swc_slot = 0;
  int swc_nallocated = 0;
  int swc_nused = 0;
  std::vector<vm_page*> swc_pages;
};

// One cluster write in flight (UVM's buf with B_PDAEMON).
struct swapio {
  int slot;
  int npages;
  std::vector<vm_page*> pages;
  std::vector<iovec> iov;
  char* bounce = nullptr;  // written from these npages bounce pages, else from the frames
};

// One asynchronous swap-in read in flight: the fault-around run of pages
// run[0..n) at idx, read from slots slot0, slot0 + 1, ... (UVM's buf of an
// asynchronous pagein).  The pages are PG_BUSY until uvm_aio_swapin_done
// finishes it.
struct swapin_io {
  std::shared_ptr<Region> region;
  uint64_t idx = 0;
  uint64_t n = 0;
  uint32_t slot0 = 0;
  bool write = false;
  bool readahead = false;  // no thread faulted on run[0]
  char* bounce = nullptr;  // read into these n bounce pages, else into the frames
  vm_page* run[kMaxFaultAhead + 1];
  iovec iov[kMaxFaultAhead + 1];
};

// Work for a fault-handler thread (one that may wait), of one of four kinds.
struct deferred_fault {
  enum kind_t {
    // Fault on idx (uvm_fault).
    FAULT,
    // A swap-in whose completion could not map its run of n pages at idx
    // (an event was unread): map the pages still resident, and unless
    // `readahead` (a read-ahead run has no faulting thread), fault again on
    // idx if it is not among them (uvm_fault_maprun).
    MAPRUN,
    // The read of idx's own slot `slot` failed: poison the page if it is
    // still only there (uvm_fault_readerr).
    READERR,
    // A completed read-ahead read `done` to finish, with its result
    // (uvm_aio_swapin_done).
    SWAPIN_DONE,
  };
  kind_t kind = FAULT;
  std::shared_ptr<Region> region;  // all but SWAPIN_DONE
  uint64_t idx = 0;
  uint64_t n = 1;
  fault_access access = FAULT_READ;
  bool readahead = false;  // MAPRUN
  uint32_t slot = 0;       // READERR
  // READERR: the failed read's error message.  A string, not an
  // absl::Status: a status's shared representation must not be released on
  // two threads (the prebuilt abseil is not visible to ThreadSanitizer).
  std::string failed;
  swapin_io* done = nullptr;  // SWAPIN_DONE
  int64_t result = 0;         // SWAPIN_DONE
};

// Unmaps the bounce pages.
struct bounce_unmap {
  uint64_t bytes = 0;
  void operator()(char* p) const;
};

class Uvm {
 public:
  // `pmap` and `dev` outlive the Uvm.  `stats`, if given, is where the
  // counters live (a shared-memory page that uvmstat reads); it outlives the
  // Uvm too.
  Uvm(const uvm_params& params, Pmap* pmap, io::SwapDev* dev, uvmexp_t* stats = nullptr);
  ~Uvm();
  Uvm(const Uvm&) = delete;
  Uvm& operator=(const Uvm&) = delete;

  uvmexp_t& exp() { return uvmexp_; }
  const uvmexp_t& exp() const { return uvmexp_; }
  int cluster_pages() const { return params_.cluster_pages; }
  vm_page* frame(uint32_t i) { return &frames_[i]; }
  uint32_t frame_index(const vm_page* pg) const {
    return static_cast<uint32_t>(pg - frames_.get());
  }

  // ---- regions (uvm_aobj.cc) ----

  // uao_create: maps a new region of `npages` pages.
  // => any thread.
  absl::StatusOr<std::shared_ptr<Region>> uao_create(uint64_t npages) ABSL_LOCKS_EXCLUDED(maplock_);

  // uao_detach: unmaps the region starting at `addr`; waits for its busy
  // pages, then frees its frames and swap slots.  `bytes`, if nonzero, must
  // equal the region's size.
  // => any thread but the userfaultfd reader; holds no lock.
  absl::Status uao_detach(uintptr_t addr, uint64_t bytes) ABSL_LOCKS_EXCLUDED(maplock_, evlock_);

  // The region containing `addr`, or null.  Where the application has put
  // another region in a region's hole (an address range it unmapped), the
  // one whose page at `addr` is live.
  // => any thread.
  std::shared_ptr<Region> uvm_map_lookup(uintptr_t addr) ABSL_LOCKS_EXCLUDED(maplock_);

  // Whether [start, start + bytes) holds a live page of a region: one the
  // application may have unmapped already, but whose event is not yet
  // applied.  A new region's view must not be placed there.
  // => any thread.
  bool uvm_map_taken(uintptr_t start, uint64_t bytes) ABSL_LOCKS_EXCLUDED(maplock_);

  // Detaches every region (runtime shutdown).
  void uao_detach_all() ABSL_LOCKS_EXCLUDED(maplock_);

  // uao_set_swslot: sets the page's slot, returning the old one.
  // => caller holds c.vmobjlock, c == r.chunk_of(idx).
  static uint32_t uao_set_swslot(Chunk& c, uint64_t idx, uint32_t slot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock) {
    uint32_t old = c.ent[idx & kChunkMask].swslot;
    c.ent[idx & kChunkMask].swslot = slot;
    return old;
  }

  // uao_dropswap: frees the page's slot, if it has one.  Called when the
  // page is dirtied: its slot no longer matches it, and freeing it at once
  // (as Linux frees a swap entry on a write fault) keeps swap from filling
  // with stale copies, so clusters still find contiguous free slots.
  // => caller holds c.vmobjlock, c == r.chunk_of(idx).
  void uao_dropswap(Chunk& c, uint64_t idx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);

  // ---- region events (uvm_aobj.cc) ----

  // The application discarded [start, end) (MADV_DONTNEED, MADV_REMOVE):
  // from now on the pages read zero, as private anonymous memory does.  Frees
  // their frames and slots; a busy page gets PG_RELEASED and is freed by the
  // thread that holds it busy.
  // => the userfaultfd reader; holds no lock; never waits for I/O.
  void uvm_map_discard(uintptr_t start, uintptr_t end) ABSL_LOCKS_EXCLUDED(maplock_);

  // The application unmapped [start, end) (munmap).  A region unmapped
  // whole is detached.
  // => the userfaultfd reader; holds no lock.
  void uvm_map_unmapped(uintptr_t start, uintptr_t end) ABSL_LOCKS_EXCLUDED(maplock_);

  // The application moved [from, from + len) to `to` (mremap).  A whole
  // region moves with its pages; a part of one is unmapped from it.
  // => the userfaultfd reader; holds no lock.
  void uvm_map_remapped(uintptr_t from, uintptr_t to, uint64_t len) ABSL_LOCKS_EXCLUDED(maplock_);

  // Frees a page whose PG_RELEASED the thread that had it busy found.
  // => caller holds c.vmobjlock, the page's chunk; pg is no longer busy.
  void uvm_page_release(Chunk& c, vm_page* pg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);

  // ---- faults (uvm_fault.cc) ----

  // uvm_fault: resolves a fault on page `idx` of `r`: waits for a busy page,
  // remaps a resident one, swaps in, or zero-fills.  Every fault ends with
  // the page mapped, or the faulting threads woken to retry, or poisoned.
  // => any fault-handler thread; holds no lock.
  absl::Status uvm_fault(Region& r, uint64_t idx, fault_access access);

  // uvm_fault_try: as uvm_fault, but only if it needs no waiting (no busy
  // page, no swap-in, a free frame).  Returns false, having done nothing, if
  // the fault would wait; *st is the outcome otherwise.  After a sequential
  // zero-fill it fills the run after the next page too (zero-fill ahead).
  // => the userfaultfd reader, which must never wait; holds no lock.
  bool uvm_fault_try(Region& r, uint64_t idx, fault_access access, absl::Status* st);

  // Lets uvm_fault_try start swap-ins: it submits the read and returns, and
  // uvm_aio_swapin_done maps the pages when the read completes (on the
  // reader, see uvm_swapin_reaper, or else on aiodone).  What it cannot
  // finish without waiting goes to `defer`, which hands it to a thread that
  // may wait.  `hand_off`, if given, may take a completed read-ahead read
  // to finish on another thread (uvm_aio_swapin_done there), or return
  // false to leave it to the reaper.  Only on devices with asynchronous
  // reads.
  // => before the first fault.
  void uvm_enable_async_swapin(std::function<void(deferred_fault)> defer,
                               std::function<bool(swapin_io*, int64_t)> hand_off = nullptr);

  // Held by the userfaultfd reader from the read of a batch of messages
  // until it has applied the batch's events (exclusive).  madvise
  // (MADV_DONTNEED) returns once its REMOVE event is read, before the
  // reader has discarded the pages, so every call that maps a page's data
  // (uvm_pmap_enter and the rest) is made under this lock, shared: none
  // maps a page the application has just discarded.  Mapping threads only
  // try it (they hold an owner lock, which comes after it) and fail as a
  // mapping call refused for an unread event does.  A waiting reader goes
  // first (kWriterFirst).
  // => the reader, exclusive, holding no other lock.
  RwMutex& uvm_event_lock() ABSL_LOCK_RETURNED(evlock_) { return evlock_; }

  // Makes the calling thread reap the asynchronous swap-ins it starts
  // (SwapDev::TakeReadCompletions).  Returns the descriptor that polls
  // readable when some have completed, or -1: aiodone reaps them.
  // => the userfaultfd reader, before it starts any swap-in.
  int uvm_swapin_reaper();
  // Finishes every swap-in read that has completed (uvm_aio_swapin_done);
  // never waits.
  // => the reaper thread; holds no lock.
  void uvm_swapin_reap();
  // Waits up to `timeout_ms` for a swap-in read to complete, then finishes
  // those that have (uvm_swapin_reap).
  // => the reaper thread; holds no lock.
  void uvm_swapin_reap_wait(int timeout_ms);
  // Submits the swap-in reads a refused submission left queued
  // (SwapDev::SubmitQueuedReads); true if some are still queued, and the
  // reaper should call again soon.
  // => the reaper thread; holds no lock.
  bool uvm_swapin_submit_queued() { return dev_->SubmitQueuedReads(); }

  // Asynchronous swap-ins in flight.
  // => any thread.
  int64_t swapins_pending() const { return swapins_pending_.load(std::memory_order_acquire); }

  // A deferred fault whose read failed: poisons the page if it is still
  // only in slot `slot`, else faults again.
  // => any fault-handler thread; holds no lock.
  absl::Status uvm_fault_readerr(Region& r, uint64_t idx, uint32_t slot, const absl::Status& st);

  // A deferred swap-in run whose mapping met an unread event: maps the run's
  // pages that are still resident and active, waiting out the event; then,
  // unless `readahead`, faults again on idx if it was not mapped.
  // => any fault-handler thread; holds no lock.
  absl::Status uvm_fault_maprun(Region& r, uint64_t idx, uint64_t n, fault_access access,
                                bool readahead);

  // ---- frames and queues (uvm_page.cc) ----

  // uvm_pagealloc: takes a free frame for page idx of r, or returns null.
  // => caller holds the owner lock of (r, idx).
  vm_page* uvm_pagealloc(Region* r, uint64_t idx) ABSL_LOCKS_EXCLUDED(fpageqlock_);

  // uvm_pagefree: dequeues the frame, releases its backing page (unless the
  // caller already released a whole range) and puts it on the free list.
  // => caller holds the owner lock; the page is not busy.
  void uvm_pagefree(vm_page* pg, bool release_backing = true)
      ABSL_LOCKS_EXCLUDED(pageqlock_, fpageqlock_);

  // uvm_pageactivate / uvm_pagedeactivate / uvm_pagedequeue.
  // => caller holds the owner lock and pageqlock.
  void uvm_pageactivate(vm_page* pg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pageqlock_);
  void uvm_pagedeactivate(vm_page* pg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pageqlock_);
  void uvm_pagedequeue(vm_page* pg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pageqlock_);

  // Locking wrappers of the above.
  // => caller holds the owner lock.
  void pageactivate(vm_page* pg) ABSL_LOCKS_EXCLUDED(pageqlock_);

  // uvm_page_unbusy: clears PG_BUSY and wakes PG_WANTED sleepers.
  // => caller holds c.vmobjlock, the page's owner chunk.
  static void uvm_page_unbusy(Chunk& c, vm_page* pg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);

  // uvm_wait: wakes the page daemon and sleeps until a frame may be free.
  // Returns false if the runtime is stopping, or if memory and swap are both
  // exhausted and nothing has been freed for a long time (the out-of-swap
  // outcome: the caller fails the fault).
  // => caller holds no lock; never the page daemon.
  bool uvm_wait(const char* wmsg) ABSL_LOCKS_EXCLUDED(fpageqlock_);

  // Wakes the page daemon.
  // => any thread.
  void wakeup_pagedaemon() ABSL_LOCKS_EXCLUDED(fpageqlock_);

  // ---- page daemon (uvm_pdaemon.cc) ----

  // uvm_pageout: the page daemon's main loop; returns when stop() is called.
  void uvm_pageout() ABSL_LOCKS_EXCLUDED(pageqlock_, fpageqlock_);

  // One pass of the daemon's work: recompute inactarg and, if below target,
  // uvmpd_scan.  Exposed so tests can drive the daemon deterministically.
  // => the page daemon thread (or a test standing in for it).
  void uvmpd_pass() ABSL_LOCKS_EXCLUDED(pageqlock_, fpageqlock_);

  // uvmpd_scan: scans the inactive queue to meet the free target, then the
  // active queue to meet the inactive target.
  // => page daemon only; holds no lock.
  void uvmpd_scan() ABSL_LOCKS_EXCLUDED(pageqlock_);

  // uvmpd_tune: the paging targets from the budget.
  void uvmpd_tune();

  // ---- swap (uvm_swap.cc) ----

  // uvm_swap_alloc: allocates *n contiguous slots; with lessok, fewer if no
  // run of *n is free (*n is updated).  Returns the first slot or 0.
  // => any thread; swap_lock is a leaf.
  int uvm_swap_alloc(int* n, bool lessok) ABSL_LOCKS_EXCLUDED(swap_lock_);
  // uvm_swap_free: frees slots; bad slots are never freed.
  void uvm_swap_free(int slot, int n) ABSL_LOCKS_EXCLUDED(swap_lock_);
  // uvm_swap_markbad: the slots are never reused.
  // => the slots are allocated.
  void uvm_swap_markbad(int slot, int n) ABSL_LOCKS_EXCLUDED(swap_lock_);
  // Every slot holds a page that is only in swap (or is bad).
  bool uvm_swapisfull() const;
  // Every slot is allocated.
  bool uvm_swapisfilled() const;

  // uvm_swap_put: starts the cluster write; VM_PAGER_PEND or VM_PAGER_AGAIN.
  // => page daemon; pages are PG_BUSY; holds no lock.
  pager_result uvm_swap_put(int slot, vm_page** pages, int npages);

  // Reads slots slot..slot+n-1 in one I/O into the frames of pgs[0..n), or
  // into `bounce` (n pages from uvm_swap_allocpages) if not null.
  // => caller holds no lock; the pages are PG_BUSY and owned by the caller.
  absl::Status uvm_swap_get_run(vm_page* const* pgs, uint64_t n, int slot, char* bounce);

  // uvm_swap_allocpages: n contiguous bounce pages for a swap-in read, or
  // null if none are free (the read then goes straight into its frames).
  // uvm_swap_freepages gives them back.
  // => any thread; bounce_lock_ is a leaf.
  char* uvm_swap_allocpages(uint64_t n) ABSL_LOCKS_EXCLUDED(bounce_lock_);
  void uvm_swap_freepages(char* p, uint64_t n) ABSL_LOCKS_EXCLUDED(bounce_lock_);
  // The bounce pages a cluster write of pages[0..npages) was copied into,
  // or null: write from the frames.  uvm_swap_freewritepages gives them back.
  // => page daemon; the pages are PG_BUSY.
  char* uvm_swap_writepages(vm_page* const* pages, int npages) ABSL_LOCKS_EXCLUDED(bounce_lock_);
  // => aiodone once the write completed, or the page daemon if it never
  //    started.
  void uvm_swap_freewritepages(swapio* io) ABSL_LOCKS_EXCLUDED(bounce_lock_);

  // uvm_swap_dropcluster: finishes a cluster (seed 000).  On success marks
  // the pages clean; on error resets each page's slot.  Un-busies the pages.
  // Returns the first page's old slot for hard errors (else -1).
  // => holds no lock; takes each page's owner lock.
  int uvm_swap_dropcluster(vm_page** pgs, int npages, int error);

  // ---- aiodone (io/uvm_aiodone.cc) ----

  // uvm_aiodone_daemon: reaps write completions until stop() and no I/O is
  // left in flight.
  void uvm_aiodone_daemon();

  // uvm_aio_aiodone: finishes one cluster write.
  // => aiodone thread (or a test standing in for it).
  void uvm_aio_aiodone(swapio* io, int64_t result);

  // uvm_aio_swapin_done: finishes one asynchronous swap-in: the pages become
  // resident and are mapped, which wakes the faulting thread.  Never waits:
  // what would wait is deferred.
  // => the thread that reaps swap-in reads: the userfaultfd reader, which
  //    submitted them (SwapDev::TakeReadCompletions), or else aiodone; or a
  //    fault worker the reader handed a read-ahead read to; holds no lock.
  void uvm_aio_swapin_done(swapin_io* io, int64_t result);

  // ---- lifecycle ----

  // Asks the page daemon and uvm_wait sleepers to stop.
  // => any thread.
  void stop() ABSL_LOCKS_EXCLUDED(fpageqlock_);
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  // Asks aiodone to stop once no write is in flight.
  // => after the page daemon has returned: nothing submits any more.
  void stop_aiodone();

  // Capacity for the no-overcommit rule: budget plus usable swap.
  uint64_t capacity_pages() const;

 private:
  friend class UvmTestPeer;

  vm_page* uvmpd_iter_next(pglist& q, vm_page* iter) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pageqlock_);
  void uvmpd_scan_inactive() ABSL_LOCKS_EXCLUDED(pageqlock_);
  void uvmpd_scan_active(int inactive_shortage, int swap_shortage) ABSL_LOCKS_EXCLUDED(pageqlock_);
  struct deact_entry {
    std::shared_ptr<Region> region;
    uint64_t idx;  // the page picked; its frame may be freed and reused meanwhile
    vm_page* pg;
    uint64_t join;  // the page before it that one unmapping call may span to it, or kNoJoin
  };
  static constexpr uint64_t kNoJoin = UINT64_MAX;
  // One unmapping call may cover entry b right after entry a.
  static bool uvmpd_deactivate_joins(const deact_entry& a, const deact_entry& b) {
    return b.region == a.region && (b.idx == a.idx + 1 || b.join == a.idx);
  }
  void uvmpd_deactivate_batch(std::vector<deact_entry>& batch) ABSL_LOCKS_EXCLUDED(pageqlock_);
  void uvmpd_remap_kept(Region& r, uint64_t first, uint64_t end) ABSL_LOCKS_EXCLUDED(evlock_);
  void uvmpd_deactivate_window(Chunk& c, Region& r, uint64_t idx, vm_page* p,
                               int* inactive_shortage, std::vector<deact_entry>& batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  static constexpr uint64_t kDeactWindow = 64;  // pages; a power of two, at most kChunkPages
  // The most pages the active scan unmaps in one batch (uvmpd_scan_active).
  size_t deact_pages_ = 512;
  void uvmpd_dropswap(Chunk& c, vm_page* pg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  // Clean pages the inactive scan frees, contiguous in one region: held
  // PG_BUSY until their backing is punched out with one call.
  struct free_batch {
    std::shared_ptr<Region> region;
    uint64_t first = 0;
    std::vector<vm_page*> pages;  // pages first, first + 1, ...
  };
  static constexpr size_t kFreeBatch = 64;
  void uvmpd_free_batch(free_batch& b) ABSL_LOCKS_EXCLUDED(pageqlock_);

  bool swapcluster_allocslots(swapcluster* swc);
  int swapcluster_add(swapcluster* swc, Chunk& c, vm_page* pg)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  pager_result swapcluster_flush(swapcluster* swc);
  int swapcluster_nused(const swapcluster* swc) const { return swc->swc_nused; }

  void uao_teardown(Region& r) ABSL_LOCKS_EXCLUDED(maplock_);
  void uao_discard(Region& r, uint64_t first, uint64_t n);
  // The part of a region an address range covers: its pages [first, last).
  struct map_piece {
    std::shared_ptr<Region> r;
    uint64_t first, last;
  };
  // The regions [start, end) overlaps, each with the pages it covers.
  std::vector<map_piece> regions_overlapping(uintptr_t start, uintptr_t end)
      ABSL_LOCKS_EXCLUDED(maplock_);
  // regions_ helpers.
  // The first entry that may overlap [start, ...): with nesting, the first.
  absl::btree_multimap<uintptr_t, std::shared_ptr<Region>>::iterator map_first_overlap(
      uintptr_t start) ABSL_SHARED_LOCKS_REQUIRED(maplock_);
  std::shared_ptr<Region> map_lookup_locked(uintptr_t addr) ABSL_SHARED_LOCKS_REQUIRED(maplock_);
  void map_insert(const std::shared_ptr<Region>& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(maplock_);
  bool map_erase(const std::shared_ptr<Region>& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(maplock_);
  // After an erase: nested_ goes back to false once no region lies in
  // another's range, so that lookups are one tree search again.
  void map_recheck_nested() ABSL_EXCLUSIVE_LOCKS_REQUIRED(maplock_);
  enum fault_outcome { FAULT_DONE, FAULT_WOULDBLOCK };
  uint64_t fault_ahead(const Region& r, uint64_t idx, bool zerofill) const;
  absl::Status uvm_fault_poison(Region& r, uint64_t idx);
  void uvm_fault_unresolvable(Region& r, uint64_t idx);
  absl::Status uvm_fault_locked(Region& r, uint64_t idx, fault_access access, bool nowait);
  // Active and neither in I/O nor being deactivated: a resident page that
  // is mapped, or may be.
  static bool pg_idle_active(uint32_t f) { return (f & PQ_ACTIVE) && !(f & (PG_BUSY | PG_DEACT)); }
  // Mapped write-protected: a clean page, where the pmap sees first writes.
  bool pg_map_wp(const vm_page* pg) const {
    return (pg->flags() & PG_CLEAN) && pmap_->tracks_modify();
  }
  // The pmap's calls that map a page's data, made under uvm_event_lock
  // (shared, tried): refused as for an unread event (Unavailable) while
  // the reader applies a batch of events, one of which may discard the
  // page.  uvm_pmap_copy_run places the run unmapped when refused, as
  // copy_run leaves what it cannot map; uvm_pmap_enter_prefix maps none.
  // => caller holds the owner lock of every page in the run, not evlock_.
  absl::Status uvm_pmap_enter(const Region& r, uint64_t idx, bool wp) ABSL_LOCKS_EXCLUDED(evlock_);
  absl::Status uvm_pmap_enter_run(const Region& r, uint64_t idx, uint64_t n, bool wp)
      ABSL_LOCKS_EXCLUDED(evlock_);
  uint64_t uvm_pmap_enter_prefix(const Region& r, uint64_t idx, uint64_t n, bool wp)
      ABSL_LOCKS_EXCLUDED(evlock_);
  absl::Status uvm_pmap_copy_run(const Region& r, uint64_t idx, uint64_t n, const char* src,
                                 bool wp) ABSL_LOCKS_EXCLUDED(evlock_);
  // The page at idx, if it is resident, idle and active: one that may be
  // mapped.
  vm_page* uvm_mappable(Chunk& c, uint64_t idx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  // The end of the run of mappable pages in [from, end) that map as `wp`:
  // the first page that is not one.
  uint64_t uvm_mappable_end(Chunk& c, uint64_t from, uint64_t end, bool wp)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  // Maps the mappable pages of [from, end), one call per run that maps
  // alike.  Stops at a run whose mapping call an unread event refused, and
  // returns its first page; returns `end` once done (or the region died).
  // *mapped_from: whether page `from` was mapped here.
  uint64_t uvm_map_mappable(Region& r, Chunk& c, uint64_t from, uint64_t end,
                            bool* mapped_from = nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  void uvm_fault_maparound(Region& r, Chunk& c, uint64_t idx, bool wp)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  void uvm_fault_zerofill_ahead(Region& r, Chunk& c, uint64_t idx)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  void uvm_fault_zerofill_run_ahead(Region& r, Chunk& c, uint64_t start)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  absl::Status uvm_fault_zerofill(Region& r, Chunk& c, uint64_t idx, vm_page* const* run,
                                  uint64_t n, bool ahead = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  enum swapin_retry { SWAPIN_DONE, SWAPIN_RETRY_MAP, SWAPIN_RETRY_ALONE, SWAPIN_FAILED };
  absl::Status uvm_fault_swapin(Region& r, Chunk& c, uint64_t idx, vm_page* const* run, uint64_t n,
                                uint32_t slot0, bool write, bool readahead, swapin_retry* retry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  absl::Status uvm_fault_swapin_start(Region& r, Chunk& c, uint64_t idx, vm_page* const* run,
                                      uint64_t n, uint32_t slot0, bool write, bool readahead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  absl::Status uvm_fault_swapin_finish(Region& r, Chunk& c, uint64_t idx, vm_page* const* run,
                                       uint64_t n, bool write, bool readahead, const char* bounce,
                                       const absl::Status& st, swapin_retry* retry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  uint64_t uvm_fault_gather(Region& r, Chunk& c, uint64_t idx, uint64_t end, uint32_t slot,
                            uint64_t max, vm_page** out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  void uvm_fault_readahead(Region& r, Chunk& c, uint64_t idx, uint32_t slot, uint64_t n)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  absl::Status uvm_fault_swapin_failed(Region& r, Chunk& c, uint64_t idx, uint32_t slot0,
                                       const absl::Status& st)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  fault_outcome uvm_fault_common(Region& r, uint64_t idx, fault_access access, bool nowait,
                                 absl::Status* st);
  // Where page i of a swap-in run is read to: bounce page i, or else the
  // frame itself, through the direct view.
  char* swapin_buf(const vm_page* pg, char* bounce, uint64_t i) const {
    return bounce != nullptr ? bounce + (i << PAGE_SHIFT) : pmap_->direct(*pg->uobject, pg->offset);
  }
  bool swap_bit(uint64_t s) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(swap_lock_);
  uint64_t swap_find_run(uint64_t want, uint64_t* len) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(swap_lock_);
  static constexpr uint64_t kSwapGroup = 256;  // slots per swap_group_free_ count
  void swap_setbits(uint64_t s, uint64_t n, bool v) ABSL_EXCLUSIVE_LOCKS_REQUIRED(swap_lock_);

  // Constant after construction.
  const uvm_params params_;
  Pmap* const pmap_;
  io::SwapDev* const dev_;
  std::unique_ptr<vm_page[]> frames_;
  std::unique_ptr<uvmexp_t> own_uvmexp_;
  uvmexp_t& uvmexp_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> aiodone_stopping_{false};
  // Set before the first fault (uvm_enable_async_swapin), then constant.
  bool async_swapin_ = false;
  // The descriptor of the swap-in reads the reaper thread reaps, or -1.
  int swapin_readfd_ = -1;
  // uvm_swapin_reap_wait for a moment with c's lock dropped: a wait for a
  // busy page on the reaper thread would otherwise never end.
  void uvm_swapin_reap_wait(Chunk& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock);
  // True on the thread uvm_swapin_reaper made the reaper.
  bool is_swapin_reaper() const;
  std::function<void(deferred_fault)> defer_fault_;
  std::function<bool(swapin_io*, int64_t)> hand_off_;
  std::atomic<int64_t> swapins_pending_{0};
  // Bounce pages held by cluster writes (at most half of them).
  std::atomic<int64_t> bounce_writing_{0};

  // The reader's batches of userfaultfd messages (uvm_event_lock), and how
  // long uvmpd_remap_kept waits for it at most.
  RwMutex evlock_{RwMutex::kWriterFirst};
  absl::Duration remap_wait_ = absl::Milliseconds(1);

  // Regions (UVM's vm_map, reduced to a table of objects).
  RwMutex maplock_;
  // By base address.  Two regions share a base, and ranges overlap, only
  // where one was placed in the other's hole (a part the application
  // unmapped, or an mremap there); nested_ says so, and lookups then look
  // past the nearest region.
  absl::btree_multimap<uintptr_t, std::shared_ptr<Region>> regions_ ABSL_GUARDED_BY(maplock_);
  bool nested_ ABSL_GUARDED_BY(maplock_) = false;
  uint64_t mapped_pages_ ABSL_GUARDED_BY(maplock_) = 0;

  // Page queues.
  Mutex pageqlock_ ABSL_ACQUIRED_AFTER(maplock_);
  pglist page_active_ ABSL_GUARDED_BY(pageqlock_);
  // Activations so far (vm_page::pq_stamp); advanced under pageqlock_, read
  // without it.
  std::atomic<uint32_t> act_seq_{0};
  pglist page_inactive_ ABSL_GUARDED_BY(pageqlock_);

  // Free frames, and the sleepers on them.
  Mutex fpageqlock_ ABSL_ACQUIRED_AFTER(pageqlock_);
  pglist page_free_ ABSL_GUARDED_BY(fpageqlock_);
  bool pagedaemon_wanted_ ABSL_GUARDED_BY(fpageqlock_) = false;
  uint64_t free_generation_ ABSL_GUARDED_BY(fpageqlock_) = 0;  // bumped by each free
  CondVar pagedaemon_cv_;                                      // the daemon sleeps here
  CondVar free_cv_;                                            // uvm_wait sleeps here

  // Swap slots: one bit per slot, set when allocated or bad.  A summary count
  // per group of kSwapGroup slots keeps allocation fast when swap is full.
  Mutex swap_lock_;
  std::vector<uint64_t> swap_map_ ABSL_GUARDED_BY(swap_lock_);
  std::vector<uint32_t> swap_group_free_ ABSL_GUARDED_BY(swap_lock_);
  std::vector<uint64_t> swap_bad_ ABSL_GUARDED_BY(swap_lock_);
  uint64_t swap_cursor_ ABSL_GUARDED_BY(swap_lock_) = 1;

  // Bounce pages: one mapping of params_.bounce_pages pages, faulted in
  // once, and a bit per page, set while allocated.
  std::unique_ptr<char, bounce_unmap> bounce_;
  Mutex bounce_lock_;
  std::vector<uint64_t> bounce_map_ ABSL_GUARDED_BY(bounce_lock_);
};

}  // namespace uvmrt::uvm

#endif  // UVMRT_UVM_UVM_H_
