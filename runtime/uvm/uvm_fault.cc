// uvm_fault.cc: the fault handler, UVM's uvm_fault.
//
// A fault's kind (missing, minor, write-protect) is only a hint: the page's
// state is read under its owner lock when the fault is handled, and every
// fault ends with the page mapped, its threads woken to retry, or poisoned.
#include <poll.h>

#include <algorithm>

#include "runtime/log.h"
#include "uvm/uvm.h"

namespace uvmrt::uvm {

uint64_t Uvm::fault_ahead(const Region& r, uint64_t idx, bool zerofill) const {
  switch (r.get_advice()) {
    case Region::ADV_RANDOM:
      return 0;
    case Region::ADV_SEQUENTIAL:
      return kMaxFaultAhead;
    case Region::ADV_NORMAL:
      break;
  }
  // Normal: look ahead only when this fault follows the last one closely,
  // as a sequential reader's (or several interleaved readers') would.
  const uint64_t last = r.last_fault();
  if (idx <= last || idx - last > 8) return 0;
  return zerofill ? kMaxFaultAhead : kNormalFaultAhead;
}

namespace {
absl::Status kWouldBlock() {
  return absl::AbortedError("would block");
}
}  // namespace

// Poisons the page: the touching threads get SIGBUS until the application
// discards it.  Remembered, so that a fault handler never mistakes that
// SIGBUS for a fault (Region::poisoned).
absl::Status Uvm::uvm_fault_poison(Region& r, uint64_t idx) {
  absl::Status st = pmap_->poison(r, idx);
  if (st.ok()) r.add_poisoned(idx);
  return st;
}

absl::Status Uvm::uvm_fault(Region& r, uint64_t idx, fault_access access) {
  absl::Status st;
  uvm_fault_common(r, idx, access, /*nowait=*/false, &st);
  return st;
}

bool Uvm::uvm_fault_try(Region& r, uint64_t idx, fault_access access, absl::Status* st) {
  return uvm_fault_common(r, idx, access, /*nowait=*/true, st) == FAULT_DONE;
}

Uvm::fault_outcome Uvm::uvm_fault_common(Region& r, uint64_t idx, fault_access access, bool nowait,
                                         absl::Status* out) {
  *out = uvm_fault_locked(r, idx, access, nowait);
  if (absl::IsAborted(*out)) return FAULT_WOULDBLOCK;
  if (absl::IsFailedPrecondition(*out)) {
    // The page's mapping changed under the call (split, or unmapped with
    // its event unread): the thread was woken and faults again.
    logger()->debug("uvm_fault: page {} at {:#x}: {}", idx, r.addr(idx), out->ToString());
    *out = absl::OkStatus();
  }
  if (absl::IsInternal(*out)) uvm_fault_unresolvable(r, idx);
  inc(uvmexp_.faults);
  return FAULT_DONE;
}

// A mapping call failed for a reason no retry mends (Internal: not an
// unread event, nor a mapping changed under the call).  Left so, the
// faulting thread would fault again for ever, woken each time.  It gets
// SIGBUS instead, as for a failed swap-in read; the page's data stays where
// it is.
// => caller holds no owner lock.
void Uvm::uvm_fault_unresolvable(Region& r, uint64_t idx) {
  Chunk& c = r.chunk_of(idx);
  MutexLock l(&c.vmobjlock);
  if (r.dead() || r.poisoned(idx) || !uvm_fault_poison(r, idx).ok()) {
    // Gone, poisoned already (a failed swap-in), or not to be poisoned (the
    // mapping is gone too): the thread retries.
    pmap_->wake(r, idx);
    return;
  }
  logger()->error("uvmrt: the fault at {:#x} cannot be resolved; the touching thread gets SIGBUS",
                  r.addr(idx));
}

// The fault itself.  Returns Aborted ("would block") with nothing done when
// `nowait` and the fault needs to wait.
absl::Status Uvm::uvm_fault_locked(Region& r, uint64_t idx, fault_access access, bool nowait) {
  Chunk& c = r.chunk_of(idx);
  const uint64_t j = idx & kChunkMask;
  const bool write = access != FAULT_READ;
  MutexLock l(&c.vmobjlock);
  // After a failed read of a fault-around run, the faulting page is retried
  // alone, so a bad slot fails only the page it holds.
  bool alone = false;
  // The swap-in read its pages but could not map them (an event was
  // unread): the next round maps them, as part of this fault.
  bool remap = false;
  for (;;) {
    if (r.dead()) {
      // Unmapped under the faulting thread: let it retry and take SIGSEGV.
      pmap_->wake(r, idx);
      return absl::OkStatus();
    }
    if (r.poisoned(idx)) {
      // Poisoned by an earlier fault: the thread retries and takes SIGBUS.
      // The mark may be gone (an unmapping call of the page daemon's may
      // have spanned the page before it was poisoned), so poison it again;
      // if it is still there, this fault was queued before it.
      absl::Status st = pmap_->poison(r, idx);
      if (absl::IsUnavailable(st)) {
        if (nowait) return kWouldBlock();
        retry_later(c);
        continue;
      }
      if (!st.ok()) pmap_->wake(r, idx);
      return absl::OkStatus();
    }
    if (!c.ensure_ent()) {
      // No memory for the chunk's page entries: as out of memory, SIGBUS.
      if (!uvm_fault_poison(r, idx).ok()) pmap_->wake(r, idx);
      return absl::ResourceExhaustedError("uvmrt: no memory for page entries");
    }
    pgent& e = c.ent[j];
    if (e.frame != kNoFrame) {
      vm_page* pg = &frames_[e.frame];
      if (pg->flags() & PG_BUSY) {
        if (nowait) return kWouldBlock();
        // Paging in or out: sleep until un-busied (PG_WANTED), then look again.
        pg->setbits(PG_WANTED);
        inc(uvmexp_.flt_busywait);
        c.wanted.Wait(&c.vmobjlock);
        continue;
      }
      // Mapped again: an active scan unmapping it must leave it active.
      pg->clearbits(PG_DEACT);
      if (access == FAULT_WP && (pg->flags() & PQ_ACTIVE)) {
        // First write to a clean, mapped page: it is dirty from now on.
        if (pg->flags() & PG_SWAPIN) r.note_written_after_swapin();
        pg->clearbits(PG_CLEAN | PG_SWAPIN);
        uao_dropswap(c, idx);
        inc(uvmexp_.flt_wp);
        absl::Status st = pmap_->unprotect(r, idx);
        if (absl::IsUnavailable(st)) {
          dec(uvmexp_.flt_wp);
          if (nowait) return kWouldBlock();
          retry_later(c);
          continue;
        }
        return st;
      }
      // Resident but unmapped (deactivated), or mapped by a racing fault:
      // reactivate and map, without a copy.
      pageactivate(pg);
      if (write) {
        if (pg->flags() & PG_SWAPIN) r.note_written_after_swapin();
        pg->clearbits(PG_CLEAN | PG_SWAPIN);
        uao_dropswap(c, idx);
      } else if ((pg->flags() & PG_CLEAN) && pmap_->tracks_modify() && r.swapin_map_dirty()) {
        // A read of a clean page (paged out, or swapped in and not written
        // since) in a region whose pages mostly get written: mapped
        // writable, as a swap-in is, so the write that follows costs no
        // second fault.
        pg->clearbits(PG_CLEAN | PG_SWAPIN);
        uao_dropswap(c, idx);
      }
      pg->setbits(PG_PMAP_REF);
      // A swap-in mapped late (an event was unread) is not a reactivation.
      if (!remap) inc(uvmexp_.flt_react);
      const bool wp = pg_map_wp(pg);
      absl::Status st = uvm_pmap_enter(r, idx, wp);
      if (absl::IsUnavailable(st)) {
        if (!remap) dec(uvmexp_.flt_react);
        if (nowait) return kWouldBlock();
        retry_later(c);
        continue;
      }
      if (st.ok()) uvm_fault_maparound(r, c, idx, wp);
      return st;
    }

    // Not resident: get a frame.  A swap-in waits for I/O, unless it can be
    // started here and finished by aiodone.
    if (nowait && e.swslot != 0 && !async_swapin_) return kWouldBlock();
    vm_page* pg = uvm_pagealloc(&r, idx);
    if (pg == nullptr) {
      if (nowait) return kWouldBlock();
      inc(uvmexp_.flt_uvmwait);
      c.vmobjlock.Unlock();
      const bool ok = uvm_wait("flt_noram");
      c.vmobjlock.Lock();
      if (!ok) {
        if (stopping()) {
          pmap_->wake(r, idx);
          return absl::CancelledError("uvmrt: runtime is stopping");
        }
        // Out of memory and swap: the faulting thread gets SIGBUS.
        absl::Status st = uvm_fault_poison(r, idx);
        if (!st.ok()) pmap_->wake(r, idx);
        return absl::ResourceExhaustedError(
            "uvmrt: out of swap: raise swap_bytes or budget_bytes, or map less");
      }
      continue;
    }
    e.frame = frame_index(pg);
    pg->setbits(PQ_SWAPBACKED);

    // Fault-around (UVM's nforw): on sequential access, the following pages
    // of the chunk in the same state come in with this one, so one fault
    // serves a run.  They take free frames only; none is waited for.
    vm_page* run[kMaxFaultAhead + 1];
    run[0] = pg;
    const uint32_t slot0 = e.swslot;
    const uint64_t ahead = alone ? 0 : fault_ahead(r, idx, slot0 == 0);
    const uint64_t n = 1 + uvm_fault_gather(r, c, idx + 1, r.chunk_end(idx),
                                            slot0 == 0 ? 0 : slot0 + 1, ahead, run + 1);
    r.set_last_fault(idx + n - 1);

    if (slot0 == 0) {
      absl::Status st = uvm_fault_zerofill(r, c, idx, run, n);
      if (absl::IsUnavailable(st)) {
        if (nowait) return kWouldBlock();
        retry_later(c);
        continue;
      }
      if (st.ok() && nowait && ahead == kMaxFaultAhead) uvm_fault_zerofill_ahead(r, c, idx);
      return st;
    }
    if (nowait) {
      absl::Status st = uvm_fault_swapin_start(r, c, idx, run, n, slot0, write, false);
      if (st.ok() && ahead > 0 && n == ahead + 1) uvm_fault_readahead(r, c, idx + n, slot0 + n, n);
      return st;
    }
    swapin_retry retry = SWAPIN_DONE;
    // Read-ahead from a thread that may wait: only where asynchronous reads
    // may be started from any thread (aiodone reaps them).
    const bool readahead = ahead > 0 && n == ahead + 1 && async_swapin_ && swapin_readfd_ < 0;
    absl::Status st = uvm_fault_swapin(r, c, idx, run, n, slot0, write, readahead, &retry);
    if (retry == SWAPIN_RETRY_ALONE) {
      alone = true;
      continue;
    }
    if (retry == SWAPIN_RETRY_MAP) {
      // The pages are resident and consistent; map them on the next round.
      remap = true;
      retry_later(c);
      continue;
    }
    if (retry == SWAPIN_FAILED) return uvm_fault_swapin_failed(r, c, idx, slot0, st);
    return st;
  }
}

// The pages idx, idx + 1, ... before `end` (at most `max`) that are not
// resident and hold slots slot, slot + 1, ... (slot 0: hold no slot), each
// given a free frame, into out[].  Returns how many.  Never waits.
// => caller holds c.vmobjlock; c's pages include [idx, end), which may be
//    empty (idx == end: a run that ends with its chunk).
uint64_t Uvm::uvm_fault_gather(Region& r, Chunk& c, uint64_t idx, uint64_t end, uint32_t slot,
                               uint64_t max, vm_page** out) {
  // Never into a hole the application unmapped: a page there holds no frame
  // and no slot, as a never-touched page, but is not the region's to map.
  end = r.live_end(idx, end);
  uint64_t n = 0;
  while (n < max && idx + n < end) {
    pgent& ne = c.ent[(idx + n) & kChunkMask];
    if (ne.frame != kNoFrame) break;
    if (slot == 0 ? ne.swslot != 0 : ne.swslot != slot + n) break;
    vm_page* npg = uvm_pagealloc(&r, idx + n);
    if (npg == nullptr) break;
    ne.frame = frame_index(npg);
    npg->setbits(PQ_SWAPBACKED);
    out[n++] = npg;
  }
  return n;
}

// Read-ahead: after a sequential swap-in run of `n` pages, up to
// kReadAheadRuns more runs of the chunk that follow it in swap are read
// asynchronously too, so the device has several reads in flight while the
// application works through the first.  They are mapped when they arrive;
// a touch before that waits on PG_BUSY.  Free frames only.
// => a thread that may start asynchronous swap-ins: the userfaultfd reader,
//    or any fault handler when aiodone reaps them (in-thread faults); caller
//    holds c.vmobjlock, c == r.chunk_of(idx).
void Uvm::uvm_fault_readahead(Region& r, Chunk& c, uint64_t idx, uint32_t slot, uint64_t n) {
  for (int k = 0; k < kReadAheadRuns; k++) {
    // Only within the chunk of the faulting page (idx - 1 is in it).
    if ((idx & kChunkMask) == 0) return;
    vm_page* run[kMaxFaultAhead + 1];
    const uint64_t got = uvm_fault_gather(r, c, idx, r.chunk_end(idx), slot, n, run);
    if (got == 0) return;
    if (!uvm_fault_swapin_start(r, c, idx, run, got, slot, false, true).ok()) return;
    r.set_last_fault(idx + got - 1);
    if (got < n) return;
    idx += got;
    slot += static_cast<uint32_t>(got);
  }
}

// Fault-around for a resident page, as UVM's fault maps the resident
// neighbours it finds: after the page at idx is mapped, the following pages
// of its chunk that are resident, idle and active but not mapped are mapped
// with it, up to the first one mapped already.  Such pages are a swap-in
// run whose mapping met an unread event, placed in the backing object until
// a worker maps it: a sequential reader would otherwise fault on each.
// Pages being deactivated, or inactive, stay unmapped.
// => caller holds c.vmobjlock, c == r.chunk_of(idx).
void Uvm::uvm_fault_maparound(Region& r, Chunk& c, uint64_t idx, bool wp) {
  const uint64_t end = std::min(r.chunk_end(idx), idx + 1 + kNormalFaultAhead);
  const uint64_t j = uvm_mappable_end(c, idx + 1, end, wp);
  // Not counted in flt_around: the pages came in with the fault that read
  // them.
  if (j > idx + 1) uvm_pmap_enter_prefix(r, idx + 1, j - idx - 1, wp);
}

namespace {
absl::Status kEventsApplied() {
  return absl::UnavailableError("userfaultfd events are being applied");
}
}  // namespace

absl::Status Uvm::uvm_pmap_enter(const Region& r, uint64_t idx, bool wp) {
  if (!evlock_.ReaderTryLock()) return kEventsApplied();
  absl::Status st = pmap_->enter(r, idx, wp);
  evlock_.ReaderUnlock();
  return st;
}

absl::Status Uvm::uvm_pmap_enter_run(const Region& r, uint64_t idx, uint64_t n, bool wp) {
  if (!evlock_.ReaderTryLock()) return kEventsApplied();
  absl::Status st = pmap_->enter_run(r, idx, n, wp);
  evlock_.ReaderUnlock();
  return st;
}

uint64_t Uvm::uvm_pmap_enter_prefix(const Region& r, uint64_t idx, uint64_t n, bool wp) {
  if (!evlock_.ReaderTryLock()) return 0;
  const uint64_t done = pmap_->enter_prefix(r, idx, n, wp);
  evlock_.ReaderUnlock();
  return done;
}

absl::Status Uvm::uvm_pmap_copy_run(const Region& r, uint64_t idx, uint64_t n, const char* src,
                                    bool wp) {
  if (!evlock_.ReaderTryLock()) {
    pmap_->place_run(r, idx, n, src);
    return kEventsApplied();
  }
  absl::Status st = pmap_->copy_run(r, idx, n, src, wp);
  evlock_.ReaderUnlock();
  return st;
}

vm_page* Uvm::uvm_mappable(Chunk& c, uint64_t idx) {
  const pgent& e = c.ent[idx & kChunkMask];
  if (e.frame == kNoFrame) return nullptr;
  vm_page* p = &frames_[e.frame];
  return pg_idle_active(p->flags()) ? p : nullptr;
}

uint64_t Uvm::uvm_mappable_end(Chunk& c, uint64_t from, uint64_t end, bool wp) {
  uint64_t j = from;
  for (vm_page* q; j < end && (q = uvm_mappable(c, j)) != nullptr; j++) {
    if (pg_map_wp(q) != wp) break;
  }
  return j;
}

uint64_t Uvm::uvm_map_mappable(Region& r, Chunk& c, uint64_t from, uint64_t end,
                               bool* mapped_from) {
  if (mapped_from != nullptr) *mapped_from = false;
  for (uint64_t k = from; k < end && !r.dead();) {
    vm_page* p = uvm_mappable(c, k);
    if (p == nullptr) {
      k++;
      continue;
    }
    const bool wp = pg_map_wp(p);
    const uint64_t j = uvm_mappable_end(c, k + 1, end, wp);
    if (absl::IsUnavailable(uvm_pmap_enter_run(r, k, j - k, wp))) return k;
    if (k == from && mapped_from != nullptr) *mapped_from = true;
    k = j;
  }
  return end;
}

// Zero-fill ahead, after a sequential zero-fill fault at idx whose run is
// mapped (its thread woken): the reader, which never waits, fills the run
// after the next unfilled page too, while the application writes this
// one.  That page, the mark, is left untouched: the application's fault on
// it, a one-page run whose neighbours are filled, fills the next run ahead,
// as Linux's PG_readahead starts the next read-ahead window.
// Never-touched pages with free frames only; in the next chunk only if
// its lock is free (two owner locks have no order).
// => the userfaultfd reader; caller holds c.vmobjlock, c == r.chunk_of(idx).
void Uvm::uvm_fault_zerofill_ahead(Region& r, Chunk& c, uint64_t idx) {
  // The mark: the first page after idx without a frame, at most a run on
  // and at most the end of the chunk: the end of this fault's run, or of
  // the run filled ahead of it.
  const uint64_t limit = std::min(r.chunk_end(idx), idx + kMaxFaultAhead + 1);
  uint64_t mark = idx + 1;
  while (mark < limit && c.ent[mark & kChunkMask].frame != kNoFrame) mark++;
  const uint64_t start = mark + 1;
  if (start >= r.npages()) return;
  Chunk& c2 = r.chunk_of(start);
  if (&c2 == &c) {
    uvm_fault_zerofill_run_ahead(r, c, start);
  } else if (c2.vmobjlock.TryLock()) {
    uvm_fault_zerofill_run_ahead(r, c2, start);
    c2.vmobjlock.Unlock();
  }
}

// The run ahead itself: up to kMaxFaultAhead pages from start.
// => caller holds c.vmobjlock, c == r.chunk_of(start).
void Uvm::uvm_fault_zerofill_run_ahead(Region& r, Chunk& c, uint64_t start) {
  if (!c.ensure_ent() || r.poisoned(start)) return;
  vm_page* run[kMaxFaultAhead];
  const uint64_t n = uvm_fault_gather(r, c, start, r.chunk_end(start), 0, kMaxFaultAhead, run);
  if (n == 0) return;  // resident, in swap, or no free frame
  // The next mark's fault follows the last one closely: sequential.
  r.set_last_fault(start - 2);
  // Not filled, the pages are left for the faults that reach them.
  uvm_fault_zerofill(r, c, start, run, n, /*ahead=*/true).IgnoreError();
}

// Zero-fill on first touch (or after the page was discarded) of the run
// run[0..n) at idx.  Unavailable: nothing was done (an event is pending).
// `ahead`: filled ahead, for no faulting thread, so every page counts as
// fault-around and none as the fault.
// => caller holds c.vmobjlock, c == r.chunk_of(idx).
absl::Status Uvm::uvm_fault_zerofill(Region& r, Chunk& c, uint64_t idx, vm_page* const* run,
                                     uint64_t n, bool ahead) {
  // Counters and queues are updated before the mapping call, which wakes
  // the faulting thread.
  const uint64_t faulted = ahead ? 0 : 1;  // pages counted as the fault
  if (!ahead) inc(uvmexp_.flt_zfill);
  inc(uvmexp_.flt_around, static_cast<int64_t>(n - faulted));
  for (uint64_t i = 0; i < n; i++) {
    run[i]->setbits(PG_PMAP_REF);
    pageactivate(run[i]);
  }
  uint64_t done = 0;
  absl::Status st = pmap_->zerofill_run(r, idx, n, &done);
  // Pages not filled give their frames back.  Refused for an unread event
  // (Unavailable), the call created no page, so there is nothing to punch:
  // a punch of absent pages still walks every mapping of the range, and
  // this happens for whole runs whenever the daemon's unmapping is unread.
  // Stopped part way, the call removed the page it could not map, but the
  // range is punched once anyway, so the budget holds whatever stopped it.
  if (absl::IsUnavailable(st)) {
    done = 0;
  } else if (done < n) {
    pmap_->release(r, idx + done, n - done);
  }
  for (uint64_t i = done; i < n; i++) {
    c.ent[(idx + i) & kChunkMask].frame = kNoFrame;
    uvm_pagefree(run[i], /*release_backing=*/false);
  }
  dec(uvmexp_.flt_around, static_cast<int64_t>(n - std::max(done, faulted)));
  if (absl::IsUnavailable(st) && !ahead) dec(uvmexp_.flt_zfill);
  return st;
}

// Swap-in of the run run[0..n) at idx, whose slots are slot0, slot0 + 1, ...
// Slots written by one cluster come back in one read; with `readahead`, the
// runs that follow in swap are started asynchronously first.  *retry:
// SWAPIN_RETRY_MAP, the pages are resident but not all mapped (an event is
// pending): fault again; SWAPIN_RETRY_ALONE, the run's read failed: fault
// again reading the faulting page alone, so a bad slot fails only the page
// it holds; SWAPIN_FAILED, the read of the faulting page alone failed.
// => caller holds c.vmobjlock, c == r.chunk_of(idx); it is dropped during
//    the read.
absl::Status Uvm::uvm_fault_swapin(Region& r, Chunk& c, uint64_t idx, vm_page* const* run,
                                   uint64_t n, uint32_t slot0, bool write, bool readahead,
                                   swapin_retry* retry) {
  // The frames are busy while the slots are read into them, so other faults
  // on the pages wait, and the daemon and detach leave them alone.
  for (uint64_t i = 0; i < n; i++) run[i]->setbits(PG_BUSY);
  // The runs that follow are read meanwhile.
  if (readahead) uvm_fault_readahead(r, c, idx + n, slot0 + static_cast<uint32_t>(n), n);
  char* bounce = uvm_swap_allocpages(n);
  c.vmobjlock.Unlock();
  absl::Status st = uvm_swap_get_run(run, n, static_cast<int>(slot0), bounce);
  c.vmobjlock.Lock();
  absl::Status out = uvm_fault_swapin_finish(r, c, idx, run, n, write, false, bounce, st, retry);
  uvm_swap_freepages(bounce, n);
  return out;
}

// Starts the swap-in of the run run[0..n) at idx as one asynchronous read;
// uvm_aio_swapin_done finishes it.  A read-ahead run has no
// faulting page.  Aborted ("would block") with the frames given back if the
// read cannot be queued now: a fault-handler thread then reads
// synchronously.
// => as uvm_fault_readahead; caller holds c.vmobjlock, c == r.chunk_of(idx).
absl::Status Uvm::uvm_fault_swapin_start(Region& r, Chunk& c, uint64_t idx, vm_page* const* run,
                                         uint64_t n, uint32_t slot0, bool write, bool readahead) {
  std::unique_ptr<swapin_io> io(new (std::nothrow) swapin_io);
  if (io != nullptr) {
    io->region = r.shared_from_this();
    io->idx = idx;
    io->n = n;
    io->slot0 = slot0;
    io->write = write;
    io->readahead = readahead;
    io->bounce = uvm_swap_allocpages(n);
    for (uint64_t i = 0; i < n; i++) {
      io->run[i] = run[i];
      io->iov[i].iov_base = swapin_buf(run[i], io->bounce, i);
      io->iov[i].iov_len = PAGE_SIZE;
      run[i]->setbits(PG_BUSY);
    }
    swapins_pending_.fetch_add(1, std::memory_order_acq_rel);
    absl::Status st =
        dev_->SubmitRead(slot0, io->iov, static_cast<int>(n), static_cast<void*>(io.get()));
    if (st.ok()) {
      io.release();  // aiodone owns it now
      return absl::OkStatus();
    }
    swapins_pending_.fetch_sub(1, std::memory_order_acq_rel);
    uvm_swap_freepages(io->bounce, n);
    if (!absl::IsUnavailable(st)) {
      logger()->warn("uvmrt: swap read could not be queued: {}", st.ToString());
    }
  }
  for (uint64_t i = 0; i < n; i++) {
    if (io != nullptr) uvm_page_unbusy(c, run[i]);
    c.ent[(idx + i) & kChunkMask].frame = kNoFrame;
    uvm_pagefree(run[i]);
  }
  return kWouldBlock();
}

// After the read of a swap-in run (status st): the pages that stay become
// resident and are mapped; the data is in `bounce` if not null, else in the
// frames already.  *retry as uvm_fault_swapin.
// => caller holds c.vmobjlock, c == r.chunk_of(idx); the pages are PG_BUSY,
//    held by the caller.
absl::Status Uvm::uvm_fault_swapin_finish(Region& r, Chunk& c, uint64_t idx, vm_page* const* run,
                                          uint64_t n, bool write, bool readahead,
                                          const char* bounce, const absl::Status& st,
                                          swapin_retry* retry) {
  // Which of the run's pages end up resident.  A page discarded meanwhile
  // (PG_RELEASED) reads zero now; after a failed read every page gives its
  // frame back and keeps its slot.
  bool good[kMaxFaultAhead + 1];
  uint64_t ngood = 0;
  bool released = false;  // the faulting page itself was discarded
  // Read once: the region may die meanwhile (uao_teardown sets it without
  // this lock, then waits for it), and every page of the run must be
  // counted out of swpgonly the same way, here or by the teardown.
  const bool dead = r.dead();
  for (uint64_t i = 0; i < n; i++) {
    vm_page* p = run[i];
    pgent& pe = c.ent[(idx + i) & kChunkMask];
    good[i] = false;
    uvm_page_unbusy(c, p);
    if (dead) {
      // Detached meanwhile: uao_detach frees frame and slot as those of a
      // resident page.
      dec(uvmexp_.swpgonly);
      continue;
    }
    if (p->flags() & PG_RELEASED) {
      uvm_page_release(c, p);
      dec(uvmexp_.swpgonly);
      if (i == 0) released = true;
      continue;
    }
    if (!st.ok()) {
      pe.frame = kNoFrame;
      uvm_pagefree(p);
      continue;
    }
    good[i] = true;
    ngood++;
  }
  if (dead) {
    pmap_->wake(r, idx);
    return absl::OkStatus();
  }
  if (!st.ok() && readahead) {
    // Nobody waits for these pages: they stay in swap until touched.
    return absl::OkStatus();
  }
  if (!st.ok() && released && n == 1) {
    // Discarded during the failed read: it reads zero now.
    pmap_->wake(r, idx);
    return absl::OkStatus();
  }
  if (!st.ok()) {
    // Which slot of a run failed is unknown: read the faulting page's own
    // slot alone before blaming it.
    *retry = n > 1 ? SWAPIN_RETRY_ALONE : SWAPIN_FAILED;
    return st;
  }

  // If the faulting page itself was discarded, its thread retries (and
  // reads zero); the rest of the run is resident all the same.
  dec(uvmexp_.swpgonly, static_cast<int64_t>(ngood));
  inc(uvmexp_.pgswapin, static_cast<int64_t>(ngood));
  if (readahead) {
    inc(uvmexp_.flt_around, static_cast<int64_t>(ngood));
  } else {
    inc(uvmexp_.flt_swapin);
    inc(uvmexp_.flt_around, static_cast<int64_t>(ngood - (good[0] ? 1 : 0)));
  }
  // The pages match their slots until written; the faulting page is dirty
  // at once if this is a write.  Pages that cannot be kept clean give up
  // their slots at once (uao_dropswap).
  const bool track = pmap_->tracks_modify();
  for (uint64_t i = 0; i < n; i++) {
    if (!good[i]) continue;
    if (track) {
      run[i]->setbits(PG_CLEAN | PG_SWAPIN);
    } else {
      uao_dropswap(c, idx + i);
    }
    run[i]->setbits(PG_PMAP_REF);
    pageactivate(run[i]);
  }
  // A read fault maps the page writable too when the region's swapped-in
  // pages mostly get written (Region::swapin_map_dirty): one fault
  // instead of two.
  if (!readahead && good[0] && (write || (track && r.swapin_map_dirty()))) {
    run[0]->clearbits(PG_CLEAN | PG_SWAPIN);
    uao_dropswap(c, idx);
  }
  // Map the resident pages, a contiguous run per call.  From bounce pages,
  // every page is put in place, mapped or not.
  absl::Status mst;
  for (uint64_t i = 0; i < n && (mst.ok() || bounce != nullptr);) {
    if (!good[i]) {
      i++;
      continue;
    }
    uint64_t j = i + 1;
    const bool wp = pg_map_wp(run[i]);
    while (j < n && good[j] && pg_map_wp(run[j]) == wp) j++;
    if (bounce == nullptr) {
      mst = uvm_pmap_enter_run(r, idx + i, j - i, wp);
    } else if (mst.ok()) {
      mst = uvm_pmap_copy_run(r, idx + i, j - i, bounce + (i << PAGE_SHIFT), wp);
    } else {
      // Resident and unmapped, as after a failed enter_run.
      pmap_->place_run(r, idx + i, j - i, bounce + (i << PAGE_SHIFT));
    }
    i = j;
  }
  if (released) {
    pmap_->wake(r, idx);
    return absl::OkStatus();
  }
  if (absl::IsUnavailable(mst)) *retry = SWAPIN_RETRY_MAP;
  return mst;
}

// A swap-in read failed for the faulting page's own slot.  Only the
// touching thread is affected: the page is poisoned, as the kernel does for
// a swap-in read error, and its data stays in the slot.
// => caller holds c.vmobjlock, c == r.chunk_of(idx).
absl::Status Uvm::uvm_fault_swapin_failed(Region& r, Chunk& c, uint64_t idx, uint32_t slot0,
                                          const absl::Status& st) {
  inc(uvmexp_.swapinerr);
  logger()->error("uvmrt: swap-in of slot {} failed ({}); the touching thread gets SIGBUS", slot0,
                  st.ToString());
  const pgent& e = c.ent[idx & kChunkMask];
  absl::Status pst = uvm_fault_poison(r, idx);
  while (absl::IsUnavailable(pst)) {
    // An event is unread.  If it discarded the page meanwhile, the thread
    // retries and reads zero; otherwise poison once it is read.
    retry_later(c);
    if (r.dead() || e.frame != kNoFrame || e.swslot != slot0) break;
    pst = uvm_fault_poison(r, idx);
  }
  if (!pst.ok()) {
    if (!absl::IsUnavailable(pst)) {
      logger()->error("uvmrt: cannot poison the page: {}", pst.ToString());
    }
    pmap_->wake(r, idx);
  }
  return st;
}

}  // namespace uvmrt::uvm

namespace uvmrt::uvm {

void Uvm::uvm_enable_async_swapin(std::function<void(deferred_fault)> defer,
                                  std::function<bool(swapin_io*, int64_t)> hand_off) {
  if (!dev_->async_reads()) return;
  defer_fault_ = std::move(defer);
  hand_off_ = std::move(hand_off);
  async_swapin_ = true;
}

namespace {
thread_local const Uvm* t_swapin_reaper = nullptr;
}  // namespace

int Uvm::uvm_swapin_reaper() {
  if (!async_swapin_) return -1;
  swapin_readfd_ = dev_->TakeReadCompletions();
  if (swapin_readfd_ >= 0) t_swapin_reaper = this;
  return swapin_readfd_;
}

bool Uvm::is_swapin_reaper() const {
  return t_swapin_reaper == this;
}

void Uvm::uvm_swapin_reap() {
  std::vector<io::Completion> done;
  dev_->ReapReads(&done);
  for (const io::Completion& c : done) {
    swapin_io* io = static_cast<swapin_io*>(c.cookie);
    // A read-ahead run was read for no faulting thread: mapping it (its
    // copy, most of a completion's cost) may go to another thread, so that
    // the reaper goes on reading faults and starting reads.
    if (io->readahead && hand_off_ && hand_off_(io, c.result)) continue;
    uvm_aio_swapin_done(io, c.result);
  }
}

void Uvm::uvm_swapin_reap_wait(int timeout_ms) {
  pollfd p{swapin_readfd_, POLLIN, 0};
  poll(&p, 1, timeout_ms);
  uvm_swapin_reap();
}

void Uvm::uvm_swapin_reap_wait(Chunk& c) {
  c.vmobjlock.Unlock();
  uvm_swapin_reap_wait(1);
  c.vmobjlock.Lock();
}

absl::Status Uvm::uvm_fault_maprun(Region& r, uint64_t idx, uint64_t n, fault_access access,
                                   bool readahead) {
  bool mapped_idx = false;
  {
    Chunk& c = r.chunk_of(idx);
    MutexLock l(&c.vmobjlock);
    for (uint64_t k = idx; !r.dead();) {
      bool mapped = false;
      const uint64_t stop = uvm_map_mappable(r, c, k, idx + n, &mapped);
      if (k == idx && mapped) mapped_idx = true;
      if (stop == idx + n) break;
      retry_later(c);  // the run is looked at again
      k = stop;
    }
    if (r.dead()) {
      if (!readahead) pmap_->wake(r, idx);
      return absl::OkStatus();
    }
  }
  // The faulting page changed state meanwhile (discarded, deactivated):
  // fault on it as usual.
  if (readahead || mapped_idx) return absl::OkStatus();
  return uvm_fault(r, idx, access);
}

absl::Status Uvm::uvm_fault_readerr(Region& r, uint64_t idx, uint32_t slot,
                                    const absl::Status& st) {
  {
    Chunk& c = r.chunk_of(idx);
    MutexLock l(&c.vmobjlock);
    if (r.dead()) {
      pmap_->wake(r, idx);
      return absl::OkStatus();
    }
    const pgent& e = c.ent[idx & kChunkMask];
    if (e.frame == kNoFrame && e.swslot == slot) {
      return uvm_fault_swapin_failed(r, c, idx, slot, st);
    }
  }
  // Discarded, or brought in by another fault meanwhile: fault again.
  return uvm_fault(r, idx, FAULT_READ);
}

}  // namespace uvmrt::uvm
