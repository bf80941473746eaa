// uvm_aobj.cc: regions, UVM's anonymous objects: creation, lookup and
// detach (uao_create, uao_detach).
#include <algorithm>

#include "absl/strings/str_format.h"
#include "runtime/log.h"
#include "uvm/uvm.h"

namespace uvmrt::uvm {

Region::Region(uintptr_t base, uint64_t npages, uint64_t pgoff)
    : base_(base), npages_(npages), pgoff_(pgoff), chunks_(new (std::nothrow) Chunk[nchunks()]) {}

void Region::add_hole(uint64_t first, uint64_t n) {
  MutexLock l(&hole_lock_);
  holes_.emplace_back(first, n);
  has_holes_.store(true, std::memory_order_release);
}

bool Region::in_hole(uint64_t idx) {
  if (!has_holes_.load(std::memory_order_acquire)) return false;
  MutexLock l(&hole_lock_);
  for (const auto& [first, n] : holes_) {
    if (idx >= first && idx < first + n) return true;
  }
  return false;
}

uint64_t Region::live_from(uint64_t idx, uint64_t end) const {
  if (!has_holes_.load(std::memory_order_acquire)) return idx;
  MutexLock l(&hole_lock_);
  for (bool moved = true; moved && idx < end;) {
    moved = false;
    for (const auto& [first, n] : holes_) {
      if (idx >= first && idx < first + n) {
        idx = first + n;
        moved = true;
      }
    }
  }
  return std::min(idx, end);
}

uint64_t Region::live_end(uint64_t idx, uint64_t end) const {
  if (!has_holes_.load(std::memory_order_acquire)) return end;
  MutexLock l(&hole_lock_);
  for (const auto& [first, n] : holes_) {
    if (first + n > idx && first < end) end = std::max(idx, first);
  }
  return end;
}

void Region::add_poisoned(uint64_t idx) {
  MutexLock l(&poison_lock_);
  if (std::find(poisoned_.begin(), poisoned_.end(), idx) == poisoned_.end()) {
    poisoned_.push_back(idx);
  }
  has_poisoned_.store(true, std::memory_order_release);
}

bool Region::poisoned(uint64_t idx) {
  if (!has_poisoned_.load(std::memory_order_acquire)) return false;
  MutexLock l(&poison_lock_);
  return std::find(poisoned_.begin(), poisoned_.end(), idx) != poisoned_.end();
}

void Region::clear_poisoned(uint64_t first, uint64_t n) {
  if (!has_poisoned_.load(std::memory_order_acquire)) return;
  MutexLock l(&poison_lock_);
  std::erase_if(poisoned_, [&](uint64_t idx) { return idx >= first && idx < first + n; });
  has_poisoned_.store(!poisoned_.empty(), std::memory_order_release);
}

std::vector<std::pair<uint64_t, uint64_t>> Region::live_runs() {
  std::vector<std::pair<uint64_t, uint64_t>> holes;
  {
    MutexLock l(&hole_lock_);
    holes = holes_;
  }
  std::sort(holes.begin(), holes.end());
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  uint64_t at = 0;
  for (const auto& [first, n] : holes) {
    if (first > at) runs.emplace_back(at, first - at);
    at = std::max(at, first + n);
  }
  if (at < npages_) runs.emplace_back(at, npages_ - at);
  return runs;
}

absl::StatusOr<std::shared_ptr<Region>> Uvm::uao_create(uint64_t npages) {
  if (npages == 0) {
    return absl::InvalidArgumentError("uvmrt: cannot map zero bytes: ask for at least one byte");
  }
  if (npages > (uint64_t{1} << 32)) {
    return absl::InvalidArgumentError(
        "uvmrt: mapping too large: a region holds at most 2^32 pages (16 TiB)");
  }
  {
    WriterLock l(&maplock_);
    if (!params_.overcommit && mapped_pages_ + npages > capacity_pages()) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "uvmrt: mapping %d bytes would exceed budget + swap (%d of %d bytes already mapped): "
          "raise swap_bytes or budget_bytes, unmap regions, or enable overcommit",
          npages << PAGE_SHIFT, mapped_pages_ << PAGE_SHIFT, capacity_pages() << PAGE_SHIFT));
    }
    mapped_pages_ += npages;
  }
  auto r = std::make_shared<Region>(0, npages, 0);
  const auto taken = [this](uintptr_t start, uint64_t bytes) {
    return uvm_map_taken(start, bytes);
  };
  absl::Status st = r->valid() ? pmap_->create_view(*r, taken)
                               : absl::ResourceExhaustedError(absl::StrFormat(
                                     "uvmrt: no memory for the page entries of a %d-byte region: "
                                     "map less",
                                     npages << PAGE_SHIFT));
  if (!st.ok()) {
    WriterLock l(&maplock_);
    mapped_pages_ -= npages;
    return st;
  }
  {
    WriterLock l(&maplock_);
    map_insert(r);
  }
  inc(uvmexp_.mapped_bytes, static_cast<int64_t>(r->bytes()));
  inc(uvmexp_.regions);
  logger()->debug("uao_create: {} pages at {:#x}", npages, r->base());
  return r;
}

std::shared_ptr<Region> Uvm::uvm_map_lookup(uintptr_t addr) {
  ReaderLock l(&maplock_);
  return map_lookup_locked(addr);
}

std::shared_ptr<Region> Uvm::map_lookup_locked(uintptr_t addr) {
  // Without nesting the nearest region below is the only candidate.  With
  // it, the live one wins over one whose page there is a hole.
  std::shared_ptr<Region> holed;
  for (auto it = regions_.upper_bound(addr); it != regions_.begin();) {
    --it;
    const std::shared_ptr<Region>& r = it->second;
    if (r->contains(addr)) {
      if (!r->in_hole((addr - r->base()) >> PAGE_SHIFT)) return r;
      if (holed == nullptr) holed = r;
    }
    if (!nested_) break;
  }
  return holed;
}

bool Uvm::uvm_map_taken(uintptr_t start, uint64_t bytes) {
  for (const map_piece& p : regions_overlapping(start, start + bytes)) {
    if (p.r->live_from(p.first, p.last) < p.last) return true;
  }
  return false;
}

absl::btree_multimap<uintptr_t, std::shared_ptr<Region>>::iterator Uvm::map_first_overlap(
    uintptr_t start) {
  if (nested_) return regions_.begin();
  auto it = regions_.upper_bound(start);
  if (it != regions_.begin()) --it;
  return it;
}

void Uvm::map_insert(const std::shared_ptr<Region>& r) {
  const uintptr_t start = r->base(), end = start + r->bytes();
  if (!nested_) {
    // Ranges are disjoint so far: only the nearest region below the end
    // can overlap.
    auto it = regions_.lower_bound(end);
    if (it != regions_.begin()) {
      --it;
      if (it->second->base() + it->second->bytes() > start) nested_ = true;
    }
  }
  regions_.emplace(start, r);
}

bool Uvm::map_erase(const std::shared_ptr<Region>& r) {
  auto [lo, hi] = regions_.equal_range(r->base());
  for (auto it = lo; it != hi; ++it) {
    if (it->second == r) {
      regions_.erase(it);
      map_recheck_nested();
      return true;
    }
  }
  return false;
}

void Uvm::map_recheck_nested() {
  if (!nested_) return;
  uintptr_t end = 0;
  for (const auto& [base, r] : regions_) {
    if (base < end) return;  // still inside an earlier region's range
    end = std::max(end, base + r->bytes());
  }
  nested_ = false;
}

absl::Status Uvm::uao_detach(uintptr_t addr, uint64_t bytes) {
  // An munmap of part of the region returns once its event is read, and
  // the reader applies the event under uvm_event_lock.  Wait for that, so
  // that the removal of the view (destroy_view) leaves the part alone:
  // another mapping may have taken its addresses since.
  { ReaderLock applied(&evlock_); }
  std::shared_ptr<Region> r;
  {
    WriterLock l(&maplock_);
    // Two regions begin here only if one was placed where the application
    // had unmapped the other's first page: the one still mapped there.
    auto [lo, hi] = regions_.equal_range(addr);
    auto it = lo;
    for (auto i = lo; i != hi; ++i) {
      if (!i->second->in_hole(0)) {
        it = i;
        break;
      }
    }
    if (it == hi) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "uvmrt: %#x is not the start of a mapped region: pass the address Map returned", addr));
    }
    const uint64_t rounded = (bytes + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
    if (bytes != 0 && rounded != it->second->bytes()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "uvmrt: unmap size %d does not match the region's size %d: pass the size given to Map",
          bytes, it->second->bytes()));
    }
    r = it->second;
    regions_.erase(it);
    map_recheck_nested();
    mapped_pages_ -= r->npages();
  }
  uao_teardown(*r);
  return absl::OkStatus();
}

std::vector<Uvm::map_piece> Uvm::regions_overlapping(uintptr_t start, uintptr_t end) {
  std::vector<map_piece> out;
  ReaderLock l(&maplock_);
  for (auto it = map_first_overlap(start); it != regions_.end() && it->first < end; ++it) {
    const Region& r = *it->second;
    const uintptr_t base = r.base(), rend = base + r.bytes();
    if (rend <= start) continue;
    out.push_back({.r = it->second,
                   .first = (std::max(start, base) - base) >> PAGE_SHIFT,
                   .last = (std::min(end, rend) - base + PAGE_SIZE - 1) >> PAGE_SHIFT});
  }
  return out;
}

void Uvm::uao_dropswap(Chunk& c, uint64_t idx) {
  const uint32_t slot = uao_set_swslot(c, idx, 0);
  if (slot != 0) uvm_swap_free(static_cast<int>(slot), 1);
}

void Uvm::uvm_page_release(Chunk& c, vm_page* pg) {
  pgent& e = c.ent[pg->offset & kChunkMask];
  const uint32_t slot = e.swslot;
  e.frame = kNoFrame;
  e.swslot = 0;
  uvm_pagefree(pg);
  if (slot != 0) uvm_swap_free(static_cast<int>(slot), 1);
}

void Uvm::uao_discard(Region& r, uint64_t first, uint64_t n) {
  // The discard zapped the poison too: the pages read zero now.
  r.clear_poisoned(first, n);
  int64_t swponly = 0;
  for (uint64_t idx = first; idx < first + n;) {
    Chunk& c = r.chunk_of(idx);
    const uint64_t chunk_end = std::min(first + n, (idx | kChunkMask) + 1);
    MutexLock l(&c.vmobjlock);
    if (c.ent == nullptr) {  // never touched
      idx = chunk_end;
      continue;
    }
    for (; idx < chunk_end; idx++) {
      pgent& e = c.ent[idx & kChunkMask];
      if (e.frame != kNoFrame) {
        vm_page* pg = &frames_[e.frame];
        if (pg->flags() & PG_BUSY) {
          // Paging in or out: whoever holds it busy frees it (UVM's
          // PG_RELEASED), so nobody here waits for I/O.
          pg->setbits(PG_RELEASED);
          continue;
        }
        uvm_page_release(c, pg);
      } else if (e.swslot != 0) {
        uvm_swap_free(static_cast<int>(e.swslot), 1);
        e.swslot = 0;
        swponly++;
      }
    }
  }
  dec(uvmexp_.swpgonly, swponly);
}

void Uvm::uvm_map_discard(uintptr_t start, uintptr_t end) {
  for (const auto& [r, first, last] : regions_overlapping(start, end)) {
    logger()->debug("uvm_map_discard: {} pages at {:#x}", last - first, r->addr(first));
    uao_discard(*r, first, last - first);
  }
}

void Uvm::uvm_map_unmapped(uintptr_t start, uintptr_t end) {
  for (const auto& [r, first, last] : regions_overlapping(start, end)) {
    // A region whose view is there was mapped after the unmapping: in the
    // addresses an mremap left (the kernel reports the move, then the unmap
    // of the old range), or in a gap the munmap spanned.
    if (pmap_->view_at(*r, first)) continue;
    r->add_hole(first, last - first);
    uao_discard(*r, first, last - first);
    if (r->live_runs().empty()) {
      // Unmapped whole: detach it, as Unmap would.
      {
        WriterLock l(&maplock_);
        if (!map_erase(r)) continue;
        mapped_pages_ -= r->npages();
      }
      logger()->debug("uvm_map_unmapped: region at {:#x} unmapped whole", r->base());
      uao_teardown(*r);
    }
  }
}

void Uvm::uvm_map_remapped(uintptr_t from, uintptr_t to, uint64_t len) {
  std::shared_ptr<Region> r = uvm_map_lookup(from);
  if (r == nullptr) return;
  if (from == r->base() && len == r->bytes()) {
    // The whole region moved: its pages keep their backing offsets.
    WriterLock l(&maplock_);
    if (!map_erase(r)) return;
    r->set_base(to);
    map_insert(r);
    return;
  }
  logger()->error(
      "uvmrt: mremap of part of a region ({} bytes at {:#x}) is not supported: the moved pages "
      "are discarded, and touching them at their new address raises SIGBUS; move whole regions",
      len, from);
  uvm_map_unmapped(from, from + len);
}

void Uvm::uao_detach_all() {
  std::vector<std::shared_ptr<Region>> all;
  {
    WriterLock l(&maplock_);
    for (auto& [base, r] : regions_) all.push_back(r);
    regions_.clear();
    nested_ = false;
    mapped_pages_ = 0;
  }
  for (auto& r : all) uao_teardown(*r);
}

void Uvm::uao_teardown(Region& r) {
  // No new mapping can be made once the region is dead and its view gone;
  // faults still in flight on it find it dead and only wake their threads.
  r.set_dead();
  // A barrier: any fault handler that saw the region alive has finished its
  // mapping call before the view goes away and its addresses can be reused.
  for (uint64_t ci = 0; ci < r.nchunks(); ci++) {
    MutexLock l(&r.chunk(ci).vmobjlock);
  }
  pmap_->destroy_view(r);
  int64_t swponly = 0;
  for (uint64_t ci = 0; ci < r.nchunks(); ci++) {
    Chunk& c = r.chunk(ci);
    const uint64_t first = ci << kChunkShift;
    const uint64_t n = std::min(kChunkPages, r.npages() - first);
    MutexLock l(&c.vmobjlock);
    if (c.ent == nullptr) continue;  // never touched: nothing resident, no slot
    // As uao_detach: wait for every busy page (pageout or swap-in in flight).
    // The userfaultfd reader (an UNMAP event) finishes its own swap-in reads
    // meanwhile: nobody else would.
    for (uint64_t j = 0; j < n; j++) {
      for (;;) {
        const uint32_t f = c.ent[j].frame;
        if (f == kNoFrame || !(frames_[f].flags() & PG_BUSY)) break;
        if (is_swapin_reaper()) {
          uvm_swapin_reap_wait(c);
          continue;
        }
        frames_[f].setbits(PG_WANTED);
        c.wanted.Wait(&c.vmobjlock);
      }
    }
    // Release the backing pages first, then the frames, so the kernel's count
    // never exceeds the budget.
    pmap_->release(r, first, n);
    for (uint64_t j = 0; j < n; j++) {
      pgent& e = c.ent[j];
      if (e.frame != kNoFrame) {
        uvm_pagefree(&frames_[e.frame], /*release_backing=*/false);
        e.frame = kNoFrame;
      } else if (e.swslot != 0) {
        swponly++;
      }
      if (e.swslot != 0) {
        uvm_swap_free(static_cast<int>(e.swslot), 1);
        e.swslot = 0;
      }
    }
  }
  dec(uvmexp_.swpgonly, swponly);
  pmap_->free_range(r);
  dec(uvmexp_.mapped_bytes, static_cast<int64_t>(r.bytes()));
  dec(uvmexp_.regions);
}

}  // namespace uvmrt::uvm
