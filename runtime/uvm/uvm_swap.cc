// uvm_swap.cc: swap slots, the swap pager (uvm_swap_put / uvm_swap_get) and
// uvm_swap_dropcluster.
//
// Slots are one bit each in swap_map_; a bit is set while the slot is
// allocated, and for ever once it is marked bad.  Allocation is next-fit from
// a cursor, a 64-slot word at a time, skipping groups of kSwapGroup slots
// whose summary count says they are full, so it stays fast as swap fills and
// fragments (Linux keeps 256-page cluster free lists for the same reason).
#include <errno.h>
#include <sys/mman.h>

#include <algorithm>
#include <bit>

#include "runtime/log.h"
#include "uvm/uvm.h"

namespace uvmrt::uvm {

bool Uvm::swap_bit(uint64_t s) const {
  return (swap_map_[s / 64] >> (s % 64)) & 1;
}

void Uvm::swap_setbits(uint64_t s, uint64_t n, bool v) {
  for (uint64_t i = s; i < s + n; i++) {
    const uint64_t bit = uint64_t{1} << (i % 64);
    const bool was = swap_map_[i / 64] & bit;
    if (was == v) continue;
    if (v) {
      swap_map_[i / 64] |= bit;
      if (!swap_group_free_.empty()) swap_group_free_[i / kSwapGroup]--;
    } else {
      swap_map_[i / 64] &= ~bit;
      if (!swap_group_free_.empty()) swap_group_free_[i / kSwapGroup]++;
    }
  }
}

// swap_find_run: the first free run of at least `want` slots at or after
// the next-fit cursor (wrapping once to the start; runs do not wrap around
// the end of the file); if there is none, the first of the longest free
// runs.  Returns its first slot and sets *len to its length, at most
// `want`; 0 if no slot is free.  One pass, a 64-slot word at a time: full
// words and full groups are skipped, a free word extends the run in hand,
// and inside a mixed word only a run longer than the best so far is looked
// for, with shifted ANDs of its free mask.
uint64_t Uvm::swap_find_run(uint64_t want, uint64_t* len) const {
  const uint64_t nwords = swap_map_.size();
  const uint64_t slack = (want + 63) / 64 + 1;  // to finish a run straddling the cursor
  uint64_t w = swap_cursor_ / 64;
  uint64_t run = 0;  // free slots ending at the previous word's top
  uint64_t best = 0, best_start = 0;
  auto found = [&](uint64_t start, uint64_t n) {
    if (n <= best) return false;
    best = std::min(n, want);
    best_start = start;
    return n >= want;
  };
  for (uint64_t k = 0; k < nwords + slack; k++, w++) {
    if (w >= nwords) {
      w = 0;
      run = 0;
    }
    const uint64_t base = w * 64;
    if (base % kSwapGroup == 0 && swap_group_free_[base / kSwapGroup] == 0) {
      const uint64_t skip = std::min<uint64_t>(kSwapGroup / 64, nwords - w) - 1;
      w += skip;
      k += skip;
      run = 0;
      continue;
    }
    const uint64_t f = ~swap_map_[w];  // free slots
    if (f == ~uint64_t{0}) {
      run += 64;
      if (found(base + 64 - run, run)) break;
      continue;
    }
    // The run in hand continues into this word's low free bits.
    const uint64_t lo = static_cast<uint64_t>(std::countr_one(f));
    if (found(base - run, run + lo)) break;
    // Runs wholly inside the word longer than the best: bit i of y stays
    // set only if slots i..i+need-1 are all free.
    bool done = false;
    for (uint64_t need = best + 1; need < 64 && !done; need = best + 1) {
      uint64_t y = f;
      for (uint64_t have = 1; have < need;) {
        const uint64_t step = std::min(have, need - have);
        y &= y >> step;
        have += step;
      }
      if (y == 0) break;
      const int at = std::countr_zero(y);
      const uint64_t n = static_cast<uint64_t>(std::countr_one(f >> at));
      if (at + n == 64) break;  // the top run: carried into the next word
      done = found(base + static_cast<uint64_t>(at), n);
    }
    if (done) break;
    run = static_cast<uint64_t>(std::countl_one(f));
    if (found(base + 64 - run, run)) break;
  }
  *len = best;
  return best_start;
}

// uvm_swap_alloc: allocate `*n` contiguous slots.  With `lessok`, a shorter
// run is accepted when no run of *n is free, as UVM's lessok; UVM halves
// the request until blist_alloc finds a run, each try a search of its own.
// Here one search finds the longest run there is: when swap is fragmented,
// five searches of the whole map cost the daemon more CPU time than the
// write they are for (docs/performance.md).
int Uvm::uvm_swap_alloc(int* n, bool lessok) {
  MutexLock l(&swap_lock_);
  const uint64_t want = static_cast<uint64_t>(*n);
  uint64_t got = 0;
  const uint64_t start = swap_find_run(want, &got);
  if (start == 0 || (got < want && !lessok)) return 0;
  swap_setbits(start, got, true);
  swap_cursor_ = start + got;
  inc(uvmexp_.swpginuse, static_cast<int64_t>(got));
  *n = static_cast<int>(got);
  return static_cast<int>(start);
}

void Uvm::uvm_swap_free(int slot, int n) {
  if (slot == 0 || n == 0) return;
  MutexLock l(&swap_lock_);
  int freed = 0;
  for (uint64_t s = static_cast<uint64_t>(slot); s < static_cast<uint64_t>(slot + n); s++) {
    if ((swap_bad_[s / 64] >> (s % 64)) & 1) continue;  // bad slots stay allocated
    if (!swap_bit(s)) {
      logger()->critical("uvm_swap_free: slot {} is not allocated", s);
      std::abort();
    }
    swap_setbits(s, 1, false);
    freed++;
  }
  dec(uvmexp_.swpginuse, freed);
}

void Uvm::uvm_swap_markbad(int slot, int n) {
  if (slot <= 0 || n == 0) return;
  MutexLock l(&swap_lock_);
  for (uint64_t s = static_cast<uint64_t>(slot); s < static_cast<uint64_t>(slot + n); s++) {
    swap_bad_[s / 64] |= uint64_t{1} << (s % 64);
  }
  inc(uvmexp_.swpgbad, n);
  logger()->warn("uvmrt: swap slots {}..{} marked bad after a write error; they are not reused",
                 slot, slot + n - 1);
}

bool Uvm::uvm_swapisfull() const {
  // UVM: every slot holds a page that lives only in swap.  Bad slots can hold
  // nothing, so they count as full too.
  return get(uvmexp_.swpgonly) + get(uvmexp_.swpgbad) >= get(uvmexp_.swpages);
}

bool Uvm::uvm_swapisfilled() const {
  return get(uvmexp_.swpginuse) >= get(uvmexp_.swpages);
}

uint64_t Uvm::capacity_pages() const {
  return params_.npages + static_cast<uint64_t>(get(uvmexp_.swpages) - get(uvmexp_.swpgbad));
}

pager_result Uvm::uvm_swap_put(int slot, vm_page** pages, int npages) {
  auto* io = new swapio{slot, npages, std::vector<vm_page*>(pages, pages + npages), {}};
  io->bounce = uvm_swap_writepages(pages, npages);
  io->iov.resize(npages);
  for (int i = 0; i < npages; i++) {
    io->iov[i].iov_base = io->bounce != nullptr
                              ? io->bounce + (static_cast<uint64_t>(i) << PAGE_SHIFT)
                              : pmap_->direct(*pages[i]->uobject, pages[i]->offset);
    io->iov[i].iov_len = PAGE_SIZE;
  }
  // Count the pages as paging before the write can complete, so that aiodone
  // never sees the counter go negative.
  inc(uvmexp_.paging, npages);
  absl::Status st = dev_->SubmitWrite(static_cast<uint64_t>(slot), io->iov.data(), npages, io);
  if (!st.ok()) {
    dec(uvmexp_.paging, npages);
    if (!absl::IsUnavailable(st)) {
      logger()->warn("uvmrt: swap write could not be queued: {}", st.ToString());
    }
    uvm_swap_freewritepages(io);
    delete io;
    return VM_PAGER_AGAIN;
  }
  return VM_PAGER_PEND;
}

absl::Status Uvm::uvm_swap_get_run(vm_page* const* pgs, uint64_t n, int slot, char* bounce) {
  iovec iov[kMaxFaultAhead + 1];
  for (uint64_t i = 0; i < n; i++) {
    iov[i].iov_base = swapin_buf(pgs[i], bounce, i);
    iov[i].iov_len = PAGE_SIZE;
  }
  return dev_->Read(static_cast<uint64_t>(slot), iov, static_cast<int>(n));
}

/*
 * Bounce pages (OpenBSD's uvm_swap_allocpages, there for swap encryption
 * and DMA limits).  Here a swap-in reads into bounce pages, and the pmap
 * copies them into place (UFFDIO_COPY), which allocates and maps each page
 * in one step; a read straight into a frame would fault the page into the
 * direct view first, allocating and clearing it, one page at a time.
 * First fit over a small bitmap: reads hold their pages only until they
 * complete.
 */
char* Uvm::uvm_swap_allocpages(uint64_t n) {
  if (bounce_ == nullptr || n > params_.bounce_pages) return nullptr;
  MutexLock l(&bounce_lock_);
  auto used = [&](uint64_t i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(bounce_lock_) {
    return (bounce_map_[i / 64] >> (i % 64)) & 1;
  };
  for (uint64_t s = 0; s + n <= params_.bounce_pages;) {
    uint64_t k = 0;
    while (k < n && !used(s + k)) k++;
    if (k < n) {
      s += k + 1;
      continue;
    }
    for (uint64_t i = s; i < s + n; i++) bounce_map_[i / 64] |= uint64_t{1} << (i % 64);
    return bounce_.get() + (s << PAGE_SHIFT);
  }
  return nullptr;
}

void Uvm::uvm_swap_freepages(char* p, uint64_t n) {
  if (p == nullptr) return;
  const uint64_t s = static_cast<uint64_t>(p - bounce_.get()) >> PAGE_SHIFT;
  MutexLock l(&bounce_lock_);
  for (uint64_t i = s; i < s + n; i++) bounce_map_[i / 64] &= ~(uint64_t{1} << (i % 64));
}

namespace {
// How many of pages[i..npages) are consecutive pages of one region.
int run_length(vm_page* const* pages, int i, int npages) {
  int j = i + 1;
  while (j < npages && pages[j]->uobject == pages[i]->uobject &&
         pages[j]->offset == pages[i]->offset + static_cast<uint64_t>(j - i)) {
    j++;
  }
  return j - i;
}
}  // namespace

/*
 * Cluster writes from bounce pages (a departure from UVM, which writes the
 * pages themselves).  Written from the direct view, each page is mapped there
 * by get_user_pages, so the hole punch that frees it once it is clean must
 * shoot down the TLB of the CPUs the application runs on: 19 to 21 us for a
 * one-page punch here, against 4 us for a page mapped nowhere.  Random
 * pageouts free pages one or a few at a time, so a cluster that is not one
 * long run is copied into bounce pages (a memfd read: about 1 us per page,
 * mapping nothing) and written from there.  A run of kWriteFromFramesRun
 * pages or more is later freed in one punch, whose shootdown costs less per
 * page than the copy, and is written from the frames.  Writes hold at most
 * half of the bounce pages, so swap-ins keep the rest.
 *
 * => page daemon (the only thread that adds to bounce_writing_); the pages
 *    are PG_BUSY.
 */
char* Uvm::uvm_swap_writepages(vm_page* const* pages, int npages) {
  if (run_length(pages, 0, npages) == npages && npages >= kWriteFromFramesRun) return nullptr;
  const int64_t limit = static_cast<int64_t>(params_.bounce_pages / 2);
  if (bounce_writing_.load(std::memory_order_relaxed) + npages > limit) return nullptr;
  char* b = uvm_swap_allocpages(static_cast<uint64_t>(npages));
  if (b == nullptr) return nullptr;
  for (int i = 0; i < npages;) {
    const int n = run_length(pages, i, npages);
    if (!pmap_->read_run(*pages[i]->uobject, pages[i]->offset, static_cast<uint64_t>(n),
                         b + (static_cast<uint64_t>(i) << PAGE_SHIFT))) {
      uvm_swap_freepages(b, static_cast<uint64_t>(npages));
      return nullptr;
    }
    i += n;
  }
  bounce_writing_.fetch_add(npages, std::memory_order_relaxed);
  return b;
}

// => aiodone, or the page daemon when the write was not started.
void Uvm::uvm_swap_freewritepages(swapio* io) {
  if (io->bounce == nullptr) return;
  uvm_swap_freepages(io->bounce, static_cast<uint64_t>(io->npages));
  bounce_writing_.fetch_sub(io->npages, std::memory_order_relaxed);
  io->bounce = nullptr;
}

void bounce_unmap::operator()(char* p) const {
  munmap(p, bytes);
}

int Uvm::uvm_swap_dropcluster(vm_page** pgs, int npages, int error) {
  int slot = -1;
  for (int i = 0; i < npages; i++) {
    vm_page* pg = pgs[i];
    Region* r = pg->uobject;
    Chunk& c = r->chunk_of(pg->offset);
    MutexLock l(&c.vmobjlock);
    if (error) {
      // For hard failures return the first slot.
      if (error != ENOMEM && i == 0) slot = static_cast<int>(c.ent[pg->offset & kChunkMask].swslot);
      // For failed swap-backed pageouts reset the page's slot to 0: the page
      // stays dirty and will be paged out elsewhere.
      uao_set_swslot(c, pg->offset, 0);
    } else {
      // A successful pageout: the page now matches its slot.
      pg->clearbits(PG_PMAP_REF);
      pg->setbits(PG_CLEAN);
    }
    uvm_page_unbusy(c, pg);
    // Discarded by the application during the write: free it now.
    if (pg->flags() & PG_RELEASED) uvm_page_release(c, pg);
  }
  return slot;
}

}  // namespace uvmrt::uvm
