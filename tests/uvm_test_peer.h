// uvm_test_peer.h: UvmTestPeer, the tests' access to a Uvm's private state
// (the friend declared in uvm.h), shared by the page-daemon and swap tests.
#ifndef UVMRT_TESTS_UVM_TEST_PEER_H_
#define UVMRT_TESTS_UVM_TEST_PEER_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "uvm/uvm.h"

namespace uvmrt::uvm {

// Reaches the Uvm's private queues and swap map.  Every accessor takes the
// lock that guards what it reads.
class UvmTestPeer {
 public:
  // ---- swap slots ----
  static bool Allocated(Uvm& u, uint64_t s) {
    MutexLock l(&u.swap_lock_);
    return u.swap_bit(s);
  }
  static bool Bad(Uvm& u, uint64_t s) {
    MutexLock l(&u.swap_lock_);
    return (u.swap_bad_[s / 64] >> (s % 64)) & 1;
  }
  // Allocated (or bad) slots among 1..nslots.
  // Whether the region table holds a region inside another's range.
  static bool Nested(Uvm& u) {
    ReaderLock l(&u.maplock_);
    return u.nested_;
  }
  static int64_t CountAllocated(Uvm& u, uint64_t nslots) {
    MutexLock l(&u.swap_lock_);
    int64_t n = 0;
    for (uint64_t s = 1; s <= nslots; s++) n += u.swap_bit(s) ? 1 : 0;
    return n;
  }
  // The per-group free counts agree with the bitmap.
  static bool GroupSummaryConsistent(Uvm& u) {
    MutexLock l(&u.swap_lock_);
    constexpr uint64_t kGroup = Uvm::kSwapGroup;
    const uint64_t nbits = u.swap_map_.size() * 64;
    for (uint64_t g = 0; g < u.swap_group_free_.size(); g++) {
      uint32_t nfree = 0;
      for (uint64_t s = g * kGroup; s < std::min((g + 1) * kGroup, nbits); s++) {
        nfree += u.swap_bit(s) ? 0 : 1;
      }
      if (nfree != u.swap_group_free_[g]) return false;
    }
    return true;
  }

  // ---- page queues ----
  struct Walk {
    std::vector<vm_page*> pages;  // real pages, in queue order
    std::vector<vm_page*> markers;
    bool links_ok = true;  // every pq_next->pq_prev points back
  };

  static Walk WalkActive(Uvm& u) {
    MutexLock l(&u.pageqlock_);
    return WalkList(u.page_active_);
  }
  static Walk WalkInactive(Uvm& u) {
    MutexLock l(&u.pageqlock_);
    return WalkList(u.page_inactive_);
  }
  static Walk WalkFree(Uvm& u) {
    MutexLock l(&u.fpageqlock_);
    return WalkList(u.page_free_);
  }

  // Puts a marker (a PQ_ITER vm_page) after `pos`, or at the head if pos is
  // null, in the active or inactive queue.
  static void InsertMarker(Uvm& u, bool active, vm_page* pos, vm_page* marker) {
    MutexLock l(&u.pageqlock_);
    pglist& q = active ? u.page_active_ : u.page_inactive_;
    if (pos == nullptr) {
      q.insert_head(marker);
    } else {
      q.insert_after(pos, marker);
    }
  }
  static void RemoveMarker(Uvm& u, bool active, vm_page* marker) {
    MutexLock l(&u.pageqlock_);
    (active ? u.page_active_ : u.page_inactive_).remove(marker);
  }

  // The queued page of (r, idx), found by walking a queue (no owner lock
  // needed: uobject and offset are stable while a page is queued).
  static vm_page* Find(Uvm& u, bool active, const Region* r, uint64_t idx) {
    MutexLock l(&u.pageqlock_);
    pglist& q = active ? u.page_active_ : u.page_inactive_;
    for (vm_page* p = q.first(); p != nullptr; p = pglist::next(p)) {
      if (!(p->flags() & PQ_ITER) && p->uobject == r && p->offset == idx) return p;
    }
    return nullptr;
  }
  // The first real page after pg in its queue.
  static vm_page* NextPage(Uvm& u, vm_page* pg) {
    MutexLock l(&u.pageqlock_);
    vm_page* p = pglist::next(pg);
    while (p != nullptr && (p->flags() & PQ_ITER)) p = pglist::next(p);
    return p;
  }

  // => the caller stands in for the page's owner-lock holder.
  static void Activate(Uvm& u, vm_page* pg) {
    MutexLock l(&u.pageqlock_);
    u.uvm_pageactivate(pg);
  }
  static void Deactivate(Uvm& u, vm_page* pg) {
    MutexLock l(&u.pageqlock_);
    u.uvm_pagedeactivate(pg);
  }

  static void SetDeactivationBatch(Uvm& u, size_t pages) { u.deact_pages_ = pages; }
  static void SetRemapWait(Uvm& u, absl::Duration d) { u.remap_wait_ = d; }
  static void ScanActive(Uvm& u, int inactive_shortage, int swap_shortage) {
    u.uvmpd_scan_active(inactive_shortage, swap_shortage);
  }

 private:
  static Walk WalkList(const pglist& q) {
    Walk w;
    vm_page* prev = nullptr;
    for (vm_page* p = q.first(); p != nullptr; p = pglist::next(p)) {
      if (p->pq_prev != prev) w.links_ok = false;
      if (p->flags() & PQ_ITER) {
        w.markers.push_back(p);
      } else {
        w.pages.push_back(p);
      }
      prev = p;
      if (w.pages.size() + w.markers.size() > (1u << 24)) {  // a cycle
        w.links_ok = false;
        break;
      }
    }
    return w;
  }
};

}  // namespace uvmrt::uvm

#endif  // UVMRT_TESTS_UVM_TEST_PEER_H_
