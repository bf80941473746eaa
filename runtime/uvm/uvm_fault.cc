// uvm_fault.cc: the fault handler, UVM's uvm_fault.
//
// A fault's kind (missing, minor, write-protect) is only a hint: the page's
// state is read under its owner lock when the fault is handled, and every
// fault ends with the page mapped, its threads woken to retry, or poisoned.
#include <sched.h>

#include "runtime/log.h"
#include "uvm/uvm.h"

namespace uvmrt::uvm {

namespace {
absl::Status kWouldBlock() {
  return absl::AbortedError("would block");
}

// Drops the owner lock for a moment so a pending userfaultfd event can be
// read and handled, then takes it again.
void retry_later(Chunk& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock) {
  c.vmobjlock.Unlock();
  sched_yield();
  c.vmobjlock.Lock();
}
}  // namespace

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
  inc(uvmexp_.faults);
  return FAULT_DONE;
}

// The fault itself.  Returns Aborted ("would block") with nothing done when
// `nowait` and the fault needs to wait.
absl::Status Uvm::uvm_fault_locked(Region& r, uint64_t idx, fault_access access, bool nowait) {
  Chunk& c = r.chunk_of(idx);
  const uint64_t j = idx & kChunkMask;
  const bool write = access != FAULT_READ;
  MutexLock l(&c.vmobjlock);
  for (;;) {
    if (r.dead()) {
      // Unmapped under the faulting thread: let it retry and take SIGSEGV.
      pmap_->wake(r, idx);
      return absl::OkStatus();
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
        pg->clearbits(PG_CLEAN);
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
      if (write) pg->clearbits(PG_CLEAN);
      pg->setbits(PG_PMAP_REF);
      inc(uvmexp_.flt_react);
      const bool wp = (pg->flags() & PG_CLEAN) && pmap_->tracks_modify();
      absl::Status st = pmap_->enter(r, idx, wp);
      if (absl::IsUnavailable(st)) {
        dec(uvmexp_.flt_react);
        if (nowait) return kWouldBlock();
        retry_later(c);
        continue;
      }
      return st;
    }

    // Not resident: get a frame.  A swap-in waits for I/O.
    if (nowait && e.swslot != 0) return kWouldBlock();
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
        absl::Status st = pmap_->poison(r, idx);
        if (!st.ok()) pmap_->wake(r, idx);
        return absl::ResourceExhaustedError(
            "uvmrt: out of swap: raise swap_bytes or budget_bytes, or map less");
      }
      continue;
    }
    e.frame = frame_index(pg);
    pg->setbits(PQ_SWAPBACKED);

    if (e.swslot == 0) {
      // Zero-fill on first touch (or after the page was discarded).
      // Counters and queues are updated before the mapping call, which wakes
      // the faulting thread.
      inc(uvmexp_.flt_zfill);
      pg->setbits(PG_PMAP_REF);
      pageactivate(pg);
      absl::Status st = pmap_->zerofill(r, idx);
      if (absl::IsUnavailable(st)) {
        // Nothing was allocated: give the frame back and retry.
        dec(uvmexp_.flt_zfill);
        e.frame = kNoFrame;
        uvm_pagefree(pg);
        if (nowait) return kWouldBlock();
        retry_later(c);
        continue;
      }
      return st;
    }

    // Swap-in: the frame is busy while the slot is read into it, so other
    // faults on the page wait, and the daemon and detach leave it alone.
    const int slot = static_cast<int>(e.swslot);
    pg->setbits(PG_BUSY);
    c.vmobjlock.Unlock();
    absl::Status st = uvm_swap_get(pg, slot);
    c.vmobjlock.Lock();
    uvm_page_unbusy(c, pg);
    if (r.dead()) {
      // Detached meanwhile; uao_detach frees the frame.
      pmap_->wake(r, idx);
      return absl::OkStatus();
    }
    if (pg->flags() & PG_RELEASED) {
      // Discarded by the application meanwhile: the page reads zero now.
      uvm_page_release(c, pg);
      pmap_->wake(r, idx);
      return absl::OkStatus();
    }
    if (!st.ok()) {
      // Only the touching thread is affected: the page is poisoned, as the
      // kernel does for a swap-in read error, and its data stays in the slot.
      inc(uvmexp_.swapinerr);
      logger()->error("uvmrt: swap-in of slot {} failed ({}); the touching thread gets SIGBUS",
                      slot, st.ToString());
      e.frame = kNoFrame;
      uvm_pagefree(pg);
      absl::Status pst = pmap_->poison(r, idx);
      if (!pst.ok()) pmap_->wake(r, idx);
      return st;
    }
    dec(uvmexp_.swpgonly);
    inc(uvmexp_.pgswapin);
    inc(uvmexp_.flt_swapin);
    // The page matches its slot until it is written.
    if (!write) pg->setbits(PG_CLEAN);
    pg->setbits(PG_PMAP_REF);
    pageactivate(pg);
    const bool wp = !write && pmap_->tracks_modify();
    if (!write && !pmap_->tracks_modify()) pg->clearbits(PG_CLEAN);
    absl::Status mst = pmap_->enter(r, idx, wp);
    if (absl::IsUnavailable(mst)) {
      // The page is resident and consistent; map it on the next round.
      retry_later(c);
      continue;
    }
    return mst;
  }
}

}  // namespace uvmrt::uvm
