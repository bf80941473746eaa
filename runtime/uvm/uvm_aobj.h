// uvm_aobj.h: regions, UVM's anonymous objects (uvm_aobj).
//
// A region is a run of pages the application sees at [base, base + size).
// Each page has an 8-byte entry: its swap slot (0: none, as uao_find_swslot)
// and the frame that holds it when resident.  The owner lock (UVM's
// vmobjlock) is striped: one lock per chunk of kChunkPages pages, so one big
// region is not one big lock.  A chunk's entries are allocated on its first
// fault, so a sparse, overcommitted region costs only its chunk headers
// (about 0.2 bytes per virtual page) until it is touched.
//
// Thread safety: entries are guarded by their chunk's lock; the geometry is
// constant after construction; `dead` is set once by uao_detach.
#ifndef UVMRT_UVM_UVM_AOBJ_H_
#define UVMRT_UVM_UVM_AOBJ_H_

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "uvm/uvm_lock.h"
#include "uvm/uvm_page.h"

namespace uvmrt::uvm {

inline constexpr uint32_t kNoFrame = UINT32_MAX;
inline constexpr uint64_t kChunkShift = 9;  // 512 pages (2 MiB) per owner lock
inline constexpr uint64_t kChunkPages = uint64_t{1} << kChunkShift;
inline constexpr uint64_t kChunkMask = kChunkPages - 1;

struct pgent {
  uint32_t swslot = 0;        // swap slot, 0 if none
  uint32_t frame = kNoFrame;  // frame index, kNoFrame if not resident
};

struct Chunk {
  Chunk() = default;
  ~Chunk() { delete[] ent; }
  Chunk(const Chunk&) = delete;
  Chunk& operator=(const Chunk&) = delete;

  Mutex vmobjlock;
  CondVar wanted;  // PG_WANTED sleepers on this chunk's pages
  // kChunkPages entries, or nullptr while no page of the chunk was ever
  // touched (every page then has no frame and no slot).
  // A raw pointer: clang's analysis checks PT_GUARDED_BY on raw pointers only.
  pgent* ent ABSL_PT_GUARDED_BY(vmobjlock) = nullptr;

  // Allocates the entries on first use; false if memory is short.
  // => caller holds vmobjlock.
  bool ensure_ent() ABSL_EXCLUSIVE_LOCKS_REQUIRED(vmobjlock) {
    if (ent == nullptr) ent = new (std::nothrow) pgent[kChunkPages];
    return ent != nullptr;
  }
};

// Drops the owner lock for a moment so a pending userfaultfd event can be
// read and handled (a mapping call refused for it), then takes it again.
inline void retry_later(Chunk& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c.vmobjlock) {
  c.vmobjlock.Unlock();
  sched_yield();
  c.vmobjlock.Lock();
}

class Region : public std::enable_shared_from_this<Region> {
 public:
  // Check valid() after construction: the chunk headers are allocated
  // without throwing, so a huge region fails with a Status, not an abort.
  Region(uintptr_t base, uint64_t npages, uint64_t pgoff);
  bool valid() const { return chunks_ != nullptr; }

  uintptr_t base() const { return base_.load(std::memory_order_acquire); }
  uint64_t npages() const { return npages_; }
  uint64_t bytes() const { return npages_ << PAGE_SHIFT; }
  uint64_t pgoff() const { return pgoff_; }  // first page in the backing memfd
  uint64_t nchunks() const { return (npages_ + kChunkMask) >> kChunkShift; }
  Chunk& chunk_of(uint64_t idx) const { return chunks_[idx >> kChunkShift]; }
  // The end of idx's chunk: the first page after it, or the region's end.
  uint64_t chunk_end(uint64_t idx) const { return std::min(npages_, (idx | kChunkMask) + 1); }
  Chunk& chunk(uint64_t c) const { return chunks_[c]; }
  uintptr_t addr(uint64_t idx) const { return base() + (idx << PAGE_SHIFT); }
  bool contains(uintptr_t a) const { return a >= base() && a < base() + bytes(); }

  bool dead() const { return dead_.load(std::memory_order_acquire); }

  // Access advice (UVM's uvm_advice, as madvise): how far faults look ahead.
  enum advice { ADV_NORMAL = 0, ADV_RANDOM = 1, ADV_SEQUENTIAL = 2 };
  advice get_advice() const { return static_cast<advice>(advice_.load(std::memory_order_relaxed)); }
  void set_advice(advice a) { advice_.store(a, std::memory_order_relaxed); }
  // The last page a fault brought in: the sequential-access detector.
  uint64_t last_fault() const { return last_fault_.load(std::memory_order_relaxed); }
  void set_last_fault(uint64_t idx) { last_fault_.store(idx, std::memory_order_relaxed); }

  // Write prediction for swap-ins.  UVM maps a page read on a read fault
  // and lets the first write take a cheap hardware fault; here that write
  // is a second userfaultfd round trip.  So a region whose swapped-in pages
  // mostly get written (first-write faults) has its swap-ins mapped
  // writable, as dirty, while one whose swapped-in pages mostly leave
  // clean (freed by the daemon without a write) keeps mapping them clean.
  // Every 16th swap-in is mapped clean regardless (a probe), so the score
  // keeps learning after the workload changes; every 64th while the score
  // is saturated, since each probe that gets written is a write fault.  The
  // first probe evicted clean takes the score off its maximum, and the
  // probes back to every 16th.
  void note_written_after_swapin() { bump_wscore(+1); }
  void note_evicted_clean() { bump_wscore(-1); }
  bool swapin_map_dirty() {
    const uint32_t n = swapins_.fetch_add(1, std::memory_order_relaxed);
    const int w = wscore_.load(std::memory_order_relaxed);
    const uint32_t probe = w >= kWscoreMax ? kProbeSaturated : kProbeLearning;
    return (n & (probe - 1)) != 0 && w > 0;
  }

  // Pages the application unmapped (munmap, or mremap away) while the region
  // lives: [first, first + n).  They have no frame and no slot, and the
  // region's view there is gone.
  void add_hole(uint64_t first, uint64_t n) ABSL_LOCKS_EXCLUDED(hole_lock_);
  bool in_hole(uint64_t idx) ABSL_LOCKS_EXCLUDED(hole_lock_);
  // The first page of [idx, end) that is not in a hole, or end; and the
  // first page from there that is, or end: the live run that begins the
  // range.  Lock-free while the region has no holes.
  uint64_t live_from(uint64_t idx, uint64_t end) const ABSL_LOCKS_EXCLUDED(hole_lock_);
  uint64_t live_end(uint64_t idx, uint64_t end) const ABSL_LOCKS_EXCLUDED(hole_lock_);
  // The parts of [0, npages) that are still mapped, as (first, n) runs.
  std::vector<std::pair<uint64_t, uint64_t>> live_runs() ABSL_LOCKS_EXCLUDED(hole_lock_);
  void set_dead() { dead_.store(true, std::memory_order_release); }

  // Pages the runtime poisoned (UFFDIO_POISON after a failed swap-in, or
  // out of memory and swap): touching one raises SIGBUS until the
  // application discards it.  The in-thread fault handler must tell that
  // SIGBUS from a fault, and a kernel without CONFIG_MEMORY_FAILURE gives
  // both the same si_code.  Rare, so a short list.
  void add_poisoned(uint64_t idx) ABSL_LOCKS_EXCLUDED(poison_lock_);
  bool poisoned(uint64_t idx) ABSL_LOCKS_EXCLUDED(poison_lock_);
  void clear_poisoned(uint64_t first, uint64_t n) ABSL_LOCKS_EXCLUDED(poison_lock_);

  // Set by the pmap when it creates the application view, before the
  // region is visible to other threads.
  // Also set when the application moves the whole region with mremap.
  void set_base(uintptr_t base) { base_.store(base, std::memory_order_release); }
  void set_pgoff(uint64_t pgoff) { pgoff_ = pgoff; }

 private:
  std::atomic<uintptr_t> base_;
  const uint64_t npages_;
  uint64_t pgoff_;
  std::unique_ptr<Chunk[]> chunks_;
  std::atomic<bool> dead_{false};
  std::atomic<int> advice_{ADV_NORMAL};
  std::atomic<uint64_t> last_fault_{UINT64_MAX - 1};
  std::atomic<int> wscore_{0};  // in [-kWscoreMax, kWscoreMax]
  std::atomic<uint32_t> swapins_{0};
  static constexpr int kWscoreMax = 64;
  // Swap-ins per clean probe (powers of two): while the score is below its
  // maximum, and at it.
  static constexpr uint32_t kProbeLearning = 16;
  static constexpr uint32_t kProbeSaturated = 64;
  void bump_wscore(int d) {
    const int v = wscore_.load(std::memory_order_relaxed);
    if ((d > 0 && v < kWscoreMax) || (d < 0 && v > -kWscoreMax)) {
      wscore_.store(v + d, std::memory_order_relaxed);  // a lost update is harmless
    }
  }
  mutable Mutex hole_lock_;
  std::vector<std::pair<uint64_t, uint64_t>> holes_ ABSL_GUARDED_BY(hole_lock_);
  std::atomic<bool> has_holes_{false};  // holes_ is not empty: a lock-free fast path
  Mutex poison_lock_;
  std::vector<uint64_t> poisoned_ ABSL_GUARDED_BY(poison_lock_);
  std::atomic<bool> has_poisoned_{false};
};

}  // namespace uvmrt::uvm

#endif  // UVMRT_UVM_UVM_AOBJ_H_
