// uvmexp.h: the one statistics structure the subsystems share, as UVM's
// struct uvmexp.
//
// Every field is an atomic so that GetStats() reads a snapshot without taking
// a lock.  The tag after each field names what orders its updates:
//   [I] constant after initialization   [L] written under the page-queue lock
//   [F] written under the free-queue lock   [S] written under the swap lock
//   [a] atomic updates from several threads without a common lock
#ifndef UVMRT_UVM_UVMEXP_H_
#define UVMRT_UVM_UVMEXP_H_

#include <atomic>
#include <cstdint>

#include "uvmrt/uvmrt_types.h"

namespace uvmrt::uvm {

using counter = std::atomic<int64_t>;

struct uvmexp_t {
  counter npages{0};    // [I] frames in the budget
  counter free{0};      // [F] free frames
  counter active{0};    // [L] active frames
  counter inactive{0};  // [L] inactive frames
  counter paging{0};    // [a] frames in pageout I/O
  counter wired{0};     // [a] wired frames
  counter freemin{0};   // [I] uvmpd_tune
  counter freetarg{0};  // [I] uvmpd_tune
  counter inactarg{0};  // [L] recomputed by every daemon pass
  counter wiredmax{0};  // [I] uvmpd_tune

  counter swpages{0};    // [I] swap slots
  counter swpginuse{0};  // [S] slots allocated (bad ones included)
  counter swpgonly{0};   // [a] pages only in swap
  counter swpgbad{0};    // [S] slots marked bad

  counter pdwoke{0};          // [a] daemon wakeups
  counter pdrevs{0};          // [a] uvmpd_scan passes
  counter pdscans{0};         // [a] pages scanned by uvmpd_scan_inactive
  counter pdfreed{0};         // [a] clean pages freed
  counter pdreact{0};         // [a] referenced pages reactivated
  counter pdbusy{0};          // [a] busy pages skipped
  counter pdpageouts{0};      // [a] cluster writes started
  counter pdpending{0};       // [a] cluster writes pending
  counter pddeact{0};         // [a] pages deactivated
  counter pdreacts_dirty{0};  // [a] dirtyreacts: dirty pages reactivated, swap full
  counter pgswapin{0};        // [a] pages read from swap
  counter pgswapout{0};       // [a] pages written to swap
  counter swapouterr{0};      // [a] pages whose pageout failed
  counter swapinerr{0};       // [a] failed swap-in reads

  counter faults{0};        // [a] faults handled
  counter flt_zfill{0};     // [a] zero-fill
  counter flt_swapin{0};    // [a] swap-in
  counter flt_react{0};     // [a] resident page remapped
  counter flt_around{0};    // [a] extra pages brought in by fault-around and read-ahead
  counter flt_wp{0};        // [a] first write to a clean page
  counter flt_busywait{0};  // [a] waits on PG_BUSY
  counter flt_uvmwait{0};   // [a] uvm_wait calls

  counter mapped_bytes{0};  // [a] bytes in live regions
  counter regions{0};       // [a] live regions

  // Copies every counter into the C structure.
  void snapshot(uvmrt_stats* out) const;
};

inline void inc(counter& c, int64_t n = 1) {
  c.fetch_add(n, std::memory_order_relaxed);
}
inline void dec(counter& c, int64_t n = 1) {
  c.fetch_sub(n, std::memory_order_relaxed);
}
inline int64_t get(const counter& c) {
  return c.load(std::memory_order_relaxed);
}

}  // namespace uvmrt::uvm

#endif  // UVMRT_UVM_UVMEXP_H_
