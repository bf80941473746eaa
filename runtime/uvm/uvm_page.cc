// uvm_page.cc: frames, the page queues, the free list and uvm_wait.
#include <sys/mman.h>

#include <algorithm>

#include "absl/time/time.h"
#include "runtime/log.h"
#include "uvm/uvm.h"

namespace uvmrt::uvm {

void uvmexp_t::snapshot(uvmrt_stats* o) const {
  o->pagesize = PAGE_SIZE;
#define UVMEXP_COPY(f) o->f = get(f)
  UVMEXP_COPY(npages);
  UVMEXP_COPY(free);
  UVMEXP_COPY(active);
  UVMEXP_COPY(inactive);
  UVMEXP_COPY(paging);
  UVMEXP_COPY(wired);
  UVMEXP_COPY(freemin);
  UVMEXP_COPY(freetarg);
  UVMEXP_COPY(inactarg);
  UVMEXP_COPY(wiredmax);
  UVMEXP_COPY(swpages);
  UVMEXP_COPY(swpginuse);
  UVMEXP_COPY(swpgonly);
  UVMEXP_COPY(swpgbad);
  UVMEXP_COPY(pdwoke);
  UVMEXP_COPY(pdrevs);
  UVMEXP_COPY(pdscans);
  UVMEXP_COPY(pdfreed);
  UVMEXP_COPY(pdreact);
  UVMEXP_COPY(pdbusy);
  UVMEXP_COPY(pdpageouts);
  UVMEXP_COPY(pdpending);
  UVMEXP_COPY(pddeact);
  UVMEXP_COPY(pdreacts_dirty);
  UVMEXP_COPY(pgswapin);
  UVMEXP_COPY(pgswapout);
  UVMEXP_COPY(swapouterr);
  UVMEXP_COPY(swapinerr);
  UVMEXP_COPY(faults);
  UVMEXP_COPY(flt_zfill);
  UVMEXP_COPY(flt_swapin);
  UVMEXP_COPY(flt_react);
  UVMEXP_COPY(flt_around);
  UVMEXP_COPY(flt_wp);
  UVMEXP_COPY(flt_busywait);
  UVMEXP_COPY(flt_uvmwait);
  UVMEXP_COPY(mapped_bytes);
  UVMEXP_COPY(regions);
#undef UVMEXP_COPY
}

Uvm::Uvm(const uvm_params& params, Pmap* pmap, io::SwapDev* dev, uvmexp_t* stats)
    : params_(params),
      pmap_(pmap),
      dev_(dev),
      frames_(new vm_page[params.npages]),
      own_uvmexp_(stats == nullptr ? std::make_unique<uvmexp_t>() : nullptr),
      uvmexp_(stats != nullptr ? *stats : *own_uvmexp_) {
  uvmexp_.npages = static_cast<int64_t>(params.npages);
  if (params.bounce_pages > 0) {
    // Faulted in once, so reads land in pages that exist.
    const uint64_t bytes = params.bounce_pages << PAGE_SHIFT;
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p != MAP_FAILED) {
      madvise(p, bytes, MADV_DONTFORK);  // a child has no use for them
      bounce_ = std::unique_ptr<char, bounce_unmap>(static_cast<char*>(p), bounce_unmap{bytes});
      dev_->RegisterBuffer(p, bytes);
      MutexLock l(&bounce_lock_);
      bounce_map_.assign((params.bounce_pages + 63) / 64, 0);
    } else {
      logger()->warn("uvmrt: no bounce pages for swap-in reads; reading into frames");
    }
  }
  {
    MutexLock l(&fpageqlock_);
    for (uint64_t i = 0; i < params.npages; i++) {
      frames_[i].pg_flags.store(PQ_FREE, std::memory_order_relaxed);
      page_free_.insert_tail(&frames_[i]);
    }
    uvmexp_.free = static_cast<int64_t>(params.npages);
  }
  const uint64_t nslots = dev_->nslots();
  {
    MutexLock l(&swap_lock_);
    const uint64_t words = (nslots + 1 + 63) / 64;
    swap_map_.assign(words, 0);
    swap_bad_.assign(words, 0);
    swap_setbits(0, 1, true);  // slot 0 means "no slot"
    // Bits past the last slot are permanently set so the search never
    // returns them.
    for (uint64_t s = nslots + 1; s < words * 64; s++) swap_setbits(s, 1, true);
    swap_group_free_.clear();
    for (uint64_t g = 0; g * kSwapGroup < words * 64; g++) {
      uint32_t nfree = 0;
      for (uint64_t s = g * kSwapGroup; s < std::min((g + 1) * kSwapGroup, words * 64); s++) {
        if (!swap_bit(s)) nfree++;
      }
      swap_group_free_.push_back(nfree);
    }
  }
  uvmexp_.swpages = static_cast<int64_t>(nslots);
  uvmpd_tune();
}

Uvm::~Uvm() = default;

vm_page* Uvm::uvm_pagealloc(Region* r, uint64_t idx) {
  vm_page* pg;
  bool wake;
  {
    MutexLock l(&fpageqlock_);
    pg = page_free_.first();
    if (pg == nullptr) {
      pagedaemon_wanted_ = true;
      pagedaemon_cv_.Signal();
      return nullptr;
    }
    page_free_.remove(pg);
    const int64_t nfree = uvmexp_.free.fetch_sub(1, std::memory_order_relaxed) - 1;
    pg->uobject = r;
    pg->offset = idx;
    pg->wire_count = 0;
    pg->pg_flags.store(0, std::memory_order_release);
    // As uvm_pagealloc: kick the daemon when free memory is short, or when
    // it is getting short and the inactive queue is too small to refill it.
    wake = nfree < get(uvmexp_.freemin) ||
           (nfree < get(uvmexp_.freetarg) && get(uvmexp_.inactive) < get(uvmexp_.inactarg));
    if (wake && !pagedaemon_wanted_) {
      pagedaemon_wanted_ = true;
      pagedaemon_cv_.Signal();
    }
  }
  return pg;
}

void Uvm::uvm_pagefree(vm_page* pg, bool release_backing) {
  Region* r = pg->uobject;
  if (pg->flags() & (PQ_ACTIVE | PQ_INACTIVE)) {
    MutexLock l(&pageqlock_);
    uvm_pagedequeue(pg);
  }
  // Give the page back to the kernel before the frame can be reused, so the
  // kernel's count of backing pages never exceeds the budget.
  if (release_backing && r != nullptr) pmap_->release(*r, pg->offset, 1);
  MutexLock l(&fpageqlock_);
  pg->uobject = nullptr;
  pg->offset = 0;
  pg->pg_flags.store(PQ_FREE, std::memory_order_release);
  page_free_.insert_head(pg);
  inc(uvmexp_.free);
  free_generation_++;
  free_cv_.SignalAll();
}

void Uvm::uvm_pageactivate(vm_page* pg) {
  const uint32_t f = pg->flags();
  if (f & PQ_INACTIVE) {
    page_inactive_.remove(pg);
    pg->clearbits(PQ_INACTIVE);
    dec(uvmexp_.inactive);
  }
  // act_seq_ only advances here, under pageqlock_: no atomic increment.
  const uint32_t seq = act_seq_.load(std::memory_order_relaxed) + 1;
  act_seq_.store(seq, std::memory_order_relaxed);
  pg->pq_stamp.store(seq, std::memory_order_relaxed);
  if (f & PQ_ACTIVE) {
    // Already active: move to the tail (most recently used).
    page_active_.remove(pg);
    page_active_.insert_tail(pg);
    return;
  }
  page_active_.insert_tail(pg);
  pg->setbits(PQ_ACTIVE);
  inc(uvmexp_.active);
}

void Uvm::uvm_pagedeactivate(vm_page* pg) {
  const uint32_t f = pg->flags();
  if (f & PQ_INACTIVE) return;
  if (f & PQ_ACTIVE) {
    page_active_.remove(pg);
    pg->clearbits(PQ_ACTIVE);
    dec(uvmexp_.active);
  }
  // pmap_clear_reference: the next touch sets the bit again.
  pg->clearbits(PG_PMAP_REF);
  page_inactive_.insert_tail(pg);
  pg->setbits(PQ_INACTIVE);
  inc(uvmexp_.inactive);
}

void Uvm::uvm_pagedequeue(vm_page* pg) {
  const uint32_t f = pg->flags();
  if (f & PQ_ACTIVE) {
    page_active_.remove(pg);
    pg->clearbits(PQ_ACTIVE);
    dec(uvmexp_.active);
  } else if (f & PQ_INACTIVE) {
    page_inactive_.remove(pg);
    pg->clearbits(PQ_INACTIVE);
    dec(uvmexp_.inactive);
  }
}

void Uvm::pageactivate(vm_page* pg) {
  MutexLock l(&pageqlock_);
  uvm_pageactivate(pg);
}

void Uvm::uvm_page_unbusy(Chunk& c, vm_page* pg) {
  const uint32_t f = pg->flags();
  pg->clearbits(PG_BUSY | PG_WANTED);
  if (f & PG_WANTED) c.wanted.SignalAll();
}

void Uvm::stop() {
  stopping_.store(true, std::memory_order_release);
  MutexLock l(&fpageqlock_);
  pagedaemon_wanted_ = true;
  pagedaemon_cv_.SignalAll();
  free_cv_.SignalAll();
}

void Uvm::wakeup_pagedaemon() {
  MutexLock l(&fpageqlock_);
  pagedaemon_wanted_ = true;
  pagedaemon_cv_.Signal();
}

bool Uvm::uvm_wait(const char* wmsg) {
  // How long a waiter tolerates no frame being freed while swap is full
  // before it gives the fault up (design.md, I5).
  constexpr absl::Duration kOutOfSwapGrace = absl::Seconds(5);
  MutexLock l(&fpageqlock_);
  const uint64_t gen = free_generation_;
  const absl::Time deadline = absl::Now() + kOutOfSwapGrace;
  pagedaemon_wanted_ = true;
  pagedaemon_cv_.Signal();
  while (!stopping() && free_generation_ == gen && page_free_.empty()) {
    // Kick the daemon again only when a wait times out: a daemon pass that
    // frees nothing wakes this waiter, and re-kicking at once would make the
    // two spin while nothing can progress.
    if (free_cv_.WaitWithTimeout(&fpageqlock_, absl::Milliseconds(100))) {
      pagedaemon_wanted_ = true;
      pagedaemon_cv_.Signal();
    }
    if (absl::Now() > deadline && free_generation_ == gen && page_free_.empty()) {
      if (uvm_swapisfull() || uvm_swapisfilled()) {
        logger()->error(
            "uvmrt: out of memory and swap ({}): every frame is dirty and swap is full; "
            "raise swap_bytes or the budget, or map less",
            wmsg);
        return false;
      }
    }
  }
  return !stopping();
}

}  // namespace uvmrt::uvm
