// uvm_pdaemon.c: the page daemon, ported from OpenBSD's uvm_pdaemon.c.
//
// Departures from UVM, each for a reason of user space (docs/architecture.md):
// - The page-queue lock is dropped around each page's work, so a marker
//   (PQ_ITER) holds the daemon's place in the queue, as OpenBSD's iterator
//   does; the system calls behind the pmap never run under pageqlock.
// - The active scan unmaps a page without its owner lock (PG_DEACT marks
//   it meanwhile): unmapping sends a userfaultfd event whose reader may need
//   that lock.
// - Pages on the inactive queue are always unmapped from the application
//   view, so pmap_page_protect(PROT_READ) before a pageout needs no call:
//   a touch faults and waits on PG_BUSY.
// - The active scan deactivates a picked page's old neighbours with it
//   (uvmpd_deactivate_window), and unmaps each window with one call, over
//   the pages it keeps active, which it then maps again (uvmpd_remap_kept):
//   each unmapping call is a round trip to the userfaultfd reader.
// - The daemon also wakes on a timer, a backstop for lost wakeups.
#include <errno.h>
#include <sched.h>

#include <algorithm>

#include "absl/time/clock.h"
#include "runtime/log.h"
#include "uvm/uvm.h"

namespace uvmrt::uvm {

/*
 * uvmpd_tune: tune paging parameters
 *
 * => called once the budget is known
 */
void Uvm::uvmpd_tune() {
  const int64_t npages = get(uvmexp_.npages);
  int64_t freemin = npages / 30;
  // between 16k and 512k (OpenBSD keeps the lower bound only)
  freemin = std::max<int64_t>(freemin, (16 * 1024) >> PAGE_SHIFT);
  int64_t freetarg = (freemin * 4) / 3;
  if (freetarg <= freemin) freetarg = freemin + 1;
  uvmexp_.freemin = freemin;
  uvmexp_.freetarg = freetarg;
  uvmexp_.wiredmax = npages / 3;
  uvmexp_.inactarg = freetarg + 1;  // computed in the main daemon loop
}

/*
 * uvm_pageout: the main loop for the pagedaemon
 */
void Uvm::uvm_pageout() {
  logger()->debug("pagedaemon: {} frames, freemin {} freetarg {}", get(uvmexp_.npages),
                  get(uvmexp_.freemin), get(uvmexp_.freetarg));
  for (;;) {
    {
      MutexLock l(&fpageqlock_);
      if (!pagedaemon_wanted_ && !stopping()) {
        pagedaemon_cv_.WaitWithTimeout(&fpageqlock_, absl::Milliseconds(250));
      }
      pagedaemon_wanted_ = false;
    }
    if (stopping()) break;
    inc(uvmexp_.pdwoke);
    // I/O a refused submission left queued goes now, at the latest 250 ms
    // after the refusal, if no other submission took it.
    dev_->SubmitQueued();
    uvmpd_pass();
    // if there's any free memory to be had, wake up any waiters.
    {
      MutexLock l(&fpageqlock_);
      if (get(uvmexp_.free) > 0 || get(uvmexp_.paging) == 0) free_cv_.SignalAll();
    }
    sched_yield();
  }
}

void Uvm::uvmpd_pass() {
  bool scan;
  {
    MutexLock l(&pageqlock_);
    // UVM keeps a third of the queued pages inactive; the runtime an eighth
    // (kInactargDiv: here an inactive page costs a fault when touched).
    int64_t inactarg = (get(uvmexp_.active) + get(uvmexp_.inactive)) / params_.inactarg_div;
    if (inactarg <= get(uvmexp_.freetarg)) inactarg = get(uvmexp_.freetarg) + 1;
    uvmexp_.inactarg = inactarg;
    scan = get(uvmexp_.free) < get(uvmexp_.freetarg) || get(uvmexp_.inactive) < inactarg;
  }
  if (scan) uvmpd_scan();
}

/*
 * uvmpd_iter_next: advance the marker `iter` past the next real page of `q`
 * and return that page, or null at the end of the queue.
 *
 * => called with page queues locked
 */
vm_page* Uvm::uvmpd_iter_next(pglist& q, vm_page* iter) {
  vm_page* p = pglist::next(iter);
  while (p != nullptr && (p->flags() & PQ_ITER)) p = pglist::next(p);
  q.remove(iter);
  if (p == nullptr) {
    q.insert_tail(iter);
    return nullptr;
  }
  q.insert_after(p, iter);
  return p;
}

/*
 * uvmpd_dropswap: free any swap allocated to this page.
 *
 * => called with owner locked.
 */
void Uvm::uvmpd_dropswap(Chunk& c, vm_page* pg) {
  uao_dropswap(c, pg->offset);
}

bool Uvm::swapcluster_allocslots(swapcluster* swc) {
  if (swc->swc_slot != 0) return true;
  int n = params_.cluster_pages;
  const int slot = uvm_swap_alloc(&n, true);
  if (slot == 0) return false;
  swc->swc_slot = slot;
  swc->swc_nallocated = n;
  swc->swc_nused = 0;
  swc->swc_pages.resize(static_cast<size_t>(params_.cluster_pages));
  return true;
}

int Uvm::swapcluster_add(swapcluster* swc, Chunk& c, vm_page* pg) {
  const int slot = swc->swc_slot + swc->swc_nused;
  uao_set_swslot(c, pg->offset, static_cast<uint32_t>(slot));
  swc->swc_pages[static_cast<size_t>(swc->swc_nused)] = pg;
  swc->swc_nused++;
  return 0;
}

/*
 * swapcluster_flush: write the cluster with uvm_swap_put, directly (seed
 * 000).  A transient failure drops the cluster and frees its slots; the
 * pages stay dirty on the inactive queue and are retried later.
 *
 * => holds no lock; the cluster's pages are PG_BUSY.
 */
pager_result Uvm::swapcluster_flush(swapcluster* swc) {
  if (swc->swc_slot == 0) return VM_PAGER_OK;
  const int slot = swc->swc_slot;
  const int nused = swc->swc_nused;
  const int nallocated = swc->swc_nallocated;
  if (nused < nallocated) uvm_swap_free(slot + nused, nallocated - nused);
  pager_result result = VM_PAGER_OK;
  if (nused > 0) {
    inc(uvmexp_.pdpageouts);
    result = uvm_swap_put(slot, swc->swc_pages.data(), nused);
    if (result != VM_PAGER_PEND) {
      uvm_swap_dropcluster(swc->swc_pages.data(), nused, ENOMEM);
      // for transient failures, free all the swslots
      uvm_swap_free(slot, nused);
    } else {
      inc(uvmexp_.pdpending);
    }
  }
  // zero swslot to indicate that we are no longer building a cluster.
  swc->swc_slot = 0;
  swc->swc_nallocated = 0;
  swc->swc_nused = 0;
  return result;
}

/*
 * uvmpd_scan_inactive: scan the inactive list for pages to clean or free.
 *
 * => we work on meeting our free target by converting inactive pages
 *    into free pages.
 * => we handle the building of swap-backed clusters
 */
void Uvm::uvmpd_scan_inactive() {
  swapcluster swc;
  free_batch fb;
  vm_page iter;
  iter.pg_flags.store(PQ_ITER, std::memory_order_relaxed);
  int dirtyreacts = 0;
  const int64_t freetarg = get(uvmexp_.freetarg);

  // The pass's cluster writes go to the device several at a time.
  dev_->PlugWrites();
  pageqlock_.Lock();
  page_inactive_.insert_head(&iter);
  for (;;) {
    vm_page* p = uvmpd_iter_next(page_inactive_, &iter);
    if (p == nullptr) break;
    // see if we've met our target
    const int64_t free = get(uvmexp_.free);
    const int64_t batched = static_cast<int64_t>(fb.pages.size());
    if (free + batched + get(uvmexp_.paging) >= (freetarg << 2) ||
        dirtyreacts == UVMPD_NUMDIRTYREACTS) {
      break;
    }
    inc(uvmexp_.pdscans);

    // first we attempt to lock the object that this page belongs to.  it is
    // important to "try" locking the object as we are locking in the wrong
    // order (pageq -> object) and we don't want to deadlock.
    Region* r = p->uobject;
    // A page that does not extend the batch of clean pages ends it (its
    // flags are only peeked at here).  The batch is freed without
    // pageqlock; afterwards the page is looked at only if it is still the
    // same inactive page.
    if (!fb.pages.empty() && (fb.region.get() != r || fb.first + fb.pages.size() != p->offset ||
                              fb.pages.size() >= kFreeBatch || !(p->flags() & PG_CLEAN))) {
      const uint64_t off = p->offset;
      pageqlock_.Unlock();
      uvmpd_free_batch(fb);
      pageqlock_.Lock();
      if (!(p->flags() & PQ_INACTIVE) || p->uobject != r || p->offset != off) continue;
    }
    Chunk& c = r->chunk_of(p->offset);
    if (!c.vmobjlock.TryLock()) continue;
    pageqlock_.Unlock();

    bool flush = false;
    bool to_free = false;
    do {
      if (r->dead()) break;  // uao_detach is freeing it
      // move referenced pages back to active queue and skip to next page.
      if (pmap_->is_referenced(p)) {
        pageactivate(p);
        inc(uvmexp_.pdreact);
        break;
      }
      if (p->flags() & PG_BUSY) {
        inc(uvmexp_.pdbusy);
        break;
      }
      // the page is not busy.  if the page is clean we can free it now:
      // in a batch with its clean neighbours (uvmpd_free_batch), busy
      // until then.
      if (p->flags() & PG_CLEAN) {
        p->setbits(PG_BUSY);
        to_free = true;
        if (fb.pages.empty()) fb.region = r->shared_from_this();
        break;
      }
      // this page is dirty, skip it if we'll have met our free target when
      // all the current pageouts complete.
      if (free + get(uvmexp_.paging) > (freetarg << 2)) break;
      // this page is dirty, but we can't page it out since all pages in
      // swap are only in swap.  reactivate it so that we eventually cycle
      // all pages thru the inactive queue.
      if (uvm_swapisfull()) {
        dirtyreacts++;
        inc(uvmexp_.pdreacts_dirty);
        pageactivate(p);
        break;
      }
      // if swap space is full, free any swap allocated to the page so that
      // other pages can be paged out.
      if (uvm_swapisfilled()) uvmpd_dropswap(c, p);

      // the page is dirty: mark it busy so no one else touches it.  It is
      // already unmapped from the application view (inactive), so a touch
      // faults and waits.
      p->setbits(PG_BUSY);
      inc(uvmexp_.pgswapout);
      // free old swap slot (if any), and (re)allocate.
      uvmpd_dropswap(c, p);
      if (!swapcluster_allocslots(&swc)) {
        // no swap?  give up!
        uvm_page_unbusy(c, p);
        inc(uvmexp_.pgswapout, -1);
        break;
      }
      swapcluster_add(&swc, c, p);
      flush = swapcluster_nused(&swc) >= swc.swc_nallocated;
    } while (false);
    c.vmobjlock.Unlock();
    if (to_free) {
      if (fb.pages.empty()) fb.first = p->offset;
      fb.pages.push_back(p);
    }

    // now consider doing the pageout: a full cluster is written now.
    if (flush) swapcluster_flush(&swc);
    pageqlock_.Lock();
  }
  page_inactive_.remove(&iter);
  pageqlock_.Unlock();

  uvmpd_free_batch(fb);
  // the final pageout of a partial cluster.
  swapcluster_flush(&swc);
  dev_->UnplugWrites();
}

/*
 * uvmpd_free_batch: free a batch of clean inactive pages, contiguous in one
 * region.  Each frame's backing page is punched out of the memfd before the
 * frame is freed (the budget invariant); one call for the batch costs one
 * TLB shootdown instead of one per page.  The pages stay PG_BUSY until
 * then, so a fault on one waits and then swaps it in again.
 *
 * => page daemon; holds no lock.
 */
void Uvm::uvmpd_free_batch(free_batch& b) {
  if (b.pages.empty()) return;
  Region& r = *b.region;
  pmap_->release(r, b.first, b.pages.size());
  for (size_t i = 0; i < b.pages.size(); i++) {
    vm_page* p = b.pages[i];
    const uint64_t idx = b.first + i;
    Chunk& c = r.chunk_of(idx);
    MutexLock l(&c.vmobjlock);
    const uint32_t f = p->flags();
    uvm_page_unbusy(c, p);
    if (f & PG_RELEASED) {
      // Discarded meanwhile: frame and slot go.
      uvm_page_release(c, p);
      continue;
    }
    // this page now lives only in swap
    inc(uvmexp_.swpgonly);
    if (f & PG_SWAPIN) r.note_evicted_clean();
    c.ent[idx & kChunkMask].frame = kNoFrame;
    uvm_pagefree(p, /*release_backing=*/false);
    inc(uvmexp_.pdfreed);
  }
  b.pages.clear();
  b.region.reset();
}

/*
 * uvmpd_scan: scan the page queues and attempt to meet our targets.
 */
void Uvm::uvmpd_scan() {
  inc(uvmexp_.pdrevs);
  // first we work on our free target by converting inactive pages into free
  // pages.  then we work on meeting our inactive target by converting active
  // pages to inactive ones.
  int64_t pages_freed = get(uvmexp_.pdfreed);
  uvmpd_scan_inactive();
  pages_freed = get(uvmexp_.pdfreed) - pages_freed;

  int inactive_shortage;
  {
    MutexLock l(&pageqlock_);
    inactive_shortage = static_cast<int>(get(uvmexp_.inactarg) - get(uvmexp_.inactive));
  }
  // detect if we're not going to be able to page anything out until we free
  // some swap resources from active pages.
  const int64_t free = get(uvmexp_.free);
  int swap_shortage = 0;
  if (free < get(uvmexp_.freetarg) && uvm_swapisfilled() && !uvm_swapisfull() && pages_freed == 0) {
    swap_shortage = static_cast<int>(get(uvmexp_.freetarg) - free);
  }
  if (inactive_shortage > 0 || swap_shortage > 0) {
    uvmpd_scan_active(inactive_shortage, swap_shortage);
  }
}

/*
 * uvmpd_deactivate_batch: unmap the pages of a batch chosen by the active
 * scan and move those nobody touched meanwhile to the inactive queue.
 *
 * pmap_page_protect(PROT_NONE) runs without the owner lock: unmapping sends
 * a userfaultfd event, and its reader may need that lock.  A fault that maps
 * a page meanwhile clears its PG_DEACT, and the page stays active (it was
 * referenced).  Contiguous pages of a region are unmapped with one call.
 *
 * => page daemon; holds no lock.
 */
void Uvm::uvmpd_deactivate_batch(std::vector<deact_entry>& batch) {
  std::sort(batch.begin(), batch.end(), [](const deact_entry& a, const deact_entry& b) {
    return a.region != b.region ? a.region < b.region : a.idx < b.idx;
  });
  for (size_t i = 0; i < batch.size();) {
    size_t j = i + 1;
    while (j < batch.size() && uvmpd_deactivate_joins(batch[j - 1], batch[j])) j++;
    Region& r = *batch[i].region;
    const uint64_t first = batch[i].idx, end = batch[j - 1].idx + 1;
    if (!pmap_->remove(r, first, end - first)) {
      // Some page may still be mapped (the region moved under the call):
      // none of the batch is deactivated, and all are mapped again where
      // the region is.
      for (size_t k = i; k < j; k++) {
        Chunk& c = r.chunk_of(batch[k].idx);
        MutexLock l(&c.vmobjlock);
        if (c.ent[batch[k].idx & kChunkMask].frame == frame_index(batch[k].pg)) {
          batch[k].pg->clearbits(PG_DEACT);
        }
      }
    }
    uvmpd_remap_kept(r, first, end);
    for (size_t k = i; k < j; k++) {
      vm_page* p = batch[k].pg;
      Chunk& c = r.chunk_of(batch[k].idx);
      MutexLock l(&c.vmobjlock);
      const pgent& e = c.ent[batch[k].idx & kChunkMask];
      if (e.frame != frame_index(p)) continue;  // freed meanwhile
      if ((p->flags() & PG_DEACT) && !r.dead()) {
        MutexLock q(&pageqlock_);
        uvm_pagedeactivate(p);
        inc(uvmexp_.pddeact);
      }
      p->clearbits(PG_DEACT);
    }
    i = j;
  }
  batch.clear();
}

/*
 * uvmpd_remap_kept: map again the pages that an unmapping call of
 * uvmpd_deactivate_batch spanned [first, end) but that stay active: those
 * not picked, and picked ones touched since (PG_DEACT cleared).  One call
 * over a window and a mapping call per run kept cost less than one
 * unmapping call per run picked: each of those is a round trip to the
 * userfaultfd reader, during which every mapping call fails.  A page a
 * fault maps meanwhile is skipped (EEXIST).  A mapping call refused, for
 * an unread event or while the reader applies a batch of events
 * (uvm_event_lock), is tried again for up to a millisecond, never longer,
 * as the reader may itself be waiting for a pageout this thread submits
 * (the teardown of a region unmapped under it); then the rest stay
 * unmapped, and a touch maps them.
 *
 * => page daemon; holds no lock.  The range may span chunks.
 */
void Uvm::uvmpd_remap_kept(Region& r, uint64_t first, uint64_t end) {
  const absl::Time deadline = absl::Now() + remap_wait_;
  for (uint64_t k = first; k < end;) {
    Chunk& c = r.chunk_of(k);
    const uint64_t cend = std::min(end, r.chunk_end(k));
    MutexLock l(&c.vmobjlock);
    if (r.dead()) return;
    // A chunk never touched has nothing to map.
    if (c.ent == nullptr) {
      k = cend;
      continue;
    }
    k = uvm_map_mappable(r, c, k, cend);
    if (k == cend) continue;
    if (absl::Now() >= deadline) return;
    retry_later(c);
  }
}

/*
 * uvmpd_deactivate_window: queue page `p` (at `idx`, just marked PG_DEACT)
 * for deactivation, with the active pages of its kDeactWindow-page window
 * that are in the older half of the active queue (by pq_stamp), while
 * inactive pages are short.  A departure from UVM, which deactivates one
 * page at a time from the head of the queue: here each unmapping call is a
 * round trip to the userfaultfd reader, so pages that would reach the head
 * soon go with their neighbour in one call.  Each entry records the entry
 * before it that one call may span to: across pages that stay active
 * (uvmpd_remap_kept maps them again), never across a poisoned one.
 *
 * => page daemon; caller holds c.vmobjlock, c == r.chunk_of(idx).
 */
void Uvm::uvmpd_deactivate_window(Chunk& c, Region& r, uint64_t idx, vm_page* p,
                                  int* inactive_shortage, std::vector<deact_entry>& batch) {
  const uint64_t w0 = idx & ~(kDeactWindow - 1);
  const uint64_t w1 = std::min(w0 + kDeactWindow, r.npages());
  const uint32_t head = p->pq_stamp.load(std::memory_order_relaxed);
  const uint32_t half = (act_seq_.load(std::memory_order_relaxed) - head) / 2;
  uint64_t prev = kNoJoin;
  bool clear = false;  // no poisoned page between prev and here
  for (uint64_t k = w0; k < w1; k++) {
    const pgent& e = c.ent[k & kChunkMask];
    if (e.frame == kNoFrame) {
      // Unmapping would drop a poison mark (uvm_fault poisons again if a
      // page is poisoned after this look).
      if (r.poisoned(k)) clear = false;
      continue;
    }
    vm_page* q = &frames_[e.frame];
    const bool mapped = pg_idle_active(q->flags());
    bool take = q == p;
    if (!take && mapped && *inactive_shortage > 0 &&
        q->pq_stamp.load(std::memory_order_relaxed) - head <= half) {
      q->setbits(PG_DEACT);
      (*inactive_shortage)--;
      take = true;
    }
    if (take) {
      batch.push_back(deact_entry{r.shared_from_this(), k, q, clear ? prev : kNoJoin});
      prev = k;
      clear = true;
    }
  }
}

void Uvm::uvmpd_scan_active(int inactive_shortage, int swap_shortage) {
  // The batch is unmapped once it needs kDeactCalls unmapping calls, or
  // holds deact_pages_ pages: sequential access fills a batch with runs
  // that one call unmaps, random access with single pages.
  constexpr size_t kDeactCalls = 64;
  std::vector<deact_entry> batch;
  batch.reserve(deact_pages_ + kDeactWindow);
  size_t calls = 0;
  vm_page iter;
  iter.pg_flags.store(PQ_ITER, std::memory_order_relaxed);
  pageqlock_.Lock();
  page_active_.insert_head(&iter);
  while (inactive_shortage > 0 || swap_shortage > 0) {
    vm_page* p = uvmpd_iter_next(page_active_, &iter);
    if (p == nullptr) break;
    if (p->flags() & (PG_BUSY | PG_DEACT)) continue;
    // lock the page's owner.
    Region* r = p->uobject;
    Chunk& c = r->chunk_of(p->offset);
    if (!c.vmobjlock.TryLock()) continue;
    pageqlock_.Unlock();
    const uint64_t idx = p->offset;
    // skip this page if it's busy, or being detached.
    if (!(p->flags() & (PG_BUSY | PG_DEACT)) && !r->dead() && (p->flags() & PQ_ACTIVE)) {
      // if there's a shortage of swap, free any swap allocated to this page
      // so that other pages can be paged out.
      if (swap_shortage > 0) {
        const uint32_t slot = uao_set_swslot(c, idx, 0);
        if (slot != 0) {
          uvm_swap_free(static_cast<int>(slot), 1);
          p->clearbits(PG_CLEAN | PG_SWAPIN);
          swap_shortage--;
        }
      }
      // deactivate this page if there's a shortage of inactive pages.
      if (inactive_shortage > 0) {
        p->setbits(PG_DEACT);
        // Not dead under the owner lock: uao_detach's caller still holds
        // the region, and now so does the batch.
        inactive_shortage--;
        const size_t first = batch.size();
        uvmpd_deactivate_window(c, *r, idx, p, &inactive_shortage, batch);
        for (size_t k = first; k < batch.size(); k++) {
          if (k == 0 || !uvmpd_deactivate_joins(batch[k - 1], batch[k])) calls++;
        }
      }
    }
    c.vmobjlock.Unlock();
    if (calls >= kDeactCalls || batch.size() >= deact_pages_) {
      uvmpd_deactivate_batch(batch);
      calls = 0;
    }
    pageqlock_.Lock();
  }
  page_active_.remove(&iter);
  pageqlock_.Unlock();
  uvmpd_deactivate_batch(batch);
}

}  // namespace uvmrt::uvm
