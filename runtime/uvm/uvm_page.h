// uvm_page.h: frames (UVM's struct vm_page) and the page queues.
//
// A frame is one page of the resident budget: a page of the backing memfd
// that currently exists in its page cache.  Frame descriptors sit in one
// array sized to the budget (Uvm::frames_).
//
// Locking, as in UVM:
//   pg_flags PG_*   owner lock (the region chunk's vmobjlock); atomic so the
//                   page daemon may peek at PG_BUSY before trylocking.
//   pg_flags PQ_*   owner lock AND page-queue lock to change; either to read.
//   uobject/offset  owner lock AND free-queue lock to change; stable while the
//                   page sits on a page queue.
//   pageq links     page-queue lock (or free-queue lock while free).
#ifndef UVMRT_UVM_UVM_PAGE_H_
#define UVMRT_UVM_UVM_PAGE_H_

#include <atomic>
#include <cstdint>

namespace uvmrt::uvm {

class Region;

inline constexpr uint64_t PAGE_SHIFT = 12;
inline constexpr uint64_t PAGE_SIZE = uint64_t{1} << PAGE_SHIFT;

// pg_flags
inline constexpr uint32_t PG_BUSY = 0x0001;        // page is being paged in or out
inline constexpr uint32_t PG_WANTED = 0x0002;      // someone sleeps on PG_BUSY
inline constexpr uint32_t PG_CLEAN = 0x0004;       // page matches its swap slot
inline constexpr uint32_t PG_RELEASED = 0x0008;    // free when un-busied
inline constexpr uint32_t PG_PMAP_REF = 0x0010;    // pmap reference bit (soft)
inline constexpr uint32_t PG_DEACT = 0x0020;       // being unmapped by the active scan
inline constexpr uint32_t PG_SWAPIN = 0x0040;      // swapped in clean, not written since
inline constexpr uint32_t PQ_ACTIVE = 0x0100;      // on the active queue
inline constexpr uint32_t PQ_INACTIVE = 0x0200;    // on the inactive queue
inline constexpr uint32_t PQ_SWAPBACKED = 0x0400;  // backed by swap (always, here)
inline constexpr uint32_t PQ_ITER = 0x0800;        // a marker, not a page
inline constexpr uint32_t PQ_FREE = 0x1000;        // on the free list

struct vm_page {
  std::atomic<uint32_t> pg_flags{0};
  uint32_t wire_count = 0;
  Region* uobject = nullptr;  // owner
  uint64_t offset = 0;        // page index in the owner
  vm_page* pq_next = nullptr;
  vm_page* pq_prev = nullptr;
  // When the page was last put on the active queue's tail (Uvm::act_seq_,
  // wrapping): its age in the queue, for uvmpd_deactivate_window.
  std::atomic<uint32_t> pq_stamp{0};

  uint32_t flags() const { return pg_flags.load(std::memory_order_acquire); }
  void setbits(uint32_t b) { pg_flags.fetch_or(b, std::memory_order_acq_rel); }
  void clearbits(uint32_t b) { pg_flags.fetch_and(~b, std::memory_order_acq_rel); }
};

// The memory target: at most 64 bytes per frame.
static_assert(sizeof(vm_page) <= 64);

// pglist: an intrusive tail queue (UVM's TAILQ of vm_page).  Not locked
// itself; the owner of the list holds the right lock.
class pglist {
 public:
  vm_page* first() const { return head_; }
  static vm_page* next(const vm_page* p) { return p->pq_next; }
  bool empty() const { return head_ == nullptr; }

  void insert_tail(vm_page* p) {
    p->pq_next = nullptr;
    p->pq_prev = tail_;
    if (tail_ != nullptr) {
      tail_->pq_next = p;
    } else {
      head_ = p;
    }
    tail_ = p;
  }
  void insert_head(vm_page* p) {
    p->pq_prev = nullptr;
    p->pq_next = head_;
    if (head_ != nullptr) {
      head_->pq_prev = p;
    } else {
      tail_ = p;
    }
    head_ = p;
  }
  void insert_after(vm_page* pos, vm_page* p) {
    p->pq_prev = pos;
    p->pq_next = pos->pq_next;
    if (pos->pq_next != nullptr) {
      pos->pq_next->pq_prev = p;
    } else {
      tail_ = p;
    }
    pos->pq_next = p;
  }
  void remove(vm_page* p) {
    if (p->pq_prev != nullptr) {
      p->pq_prev->pq_next = p->pq_next;
    } else {
      head_ = p->pq_next;
    }
    if (p->pq_next != nullptr) {
      p->pq_next->pq_prev = p->pq_prev;
    } else {
      tail_ = p->pq_prev;
    }
    p->pq_next = p->pq_prev = nullptr;
  }

 private:
  vm_page* head_ = nullptr;
  vm_page* tail_ = nullptr;
};

}  // namespace uvmrt::uvm

#endif  // UVMRT_UVM_UVM_PAGE_H_
