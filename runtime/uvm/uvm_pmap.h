// uvm_pmap.h: the user pmap, the calls that map, unmap and write-protect a
// page in the application's view of a region.
//
// A region has two views of one backing memfd: the application view, which
// userfaultfd watches, and the direct view, an unwatched mapping the runtime
// uses for I/O, as the kernel uses its direct map.  Pmap is an interface so
// that the page daemon and the fault logic can be driven deterministically in
// tests with a fake (tests/fake_pmap.h); UffdPmap is the real one.
//
// Thread safety: every method may be called from any thread; callers hold
// the owner lock of the pages they name (=> notes on each method).
#ifndef UVMRT_UVM_UVM_PMAP_H_
#define UVMRT_UVM_UVM_PMAP_H_

#include <cstdint>
#include <cstring>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "uvm/uvm_aobj.h"
#include "uvm/uvm_page.h"

namespace uvmrt::uvm {

// The mapping calls return Unavailable when the address space is changing
// (a userfaultfd event not yet read): the caller drops its locks and retries.
class Pmap {
 public:
  virtual ~Pmap() = default;

  // Whether [start, start + bytes) holds a page the runtime still counts as
  // mapped in a region (Uvm::uvm_map_taken).
  using AddressTaken = absl::FunctionRef<bool(uintptr_t start, uint64_t bytes)>;

  // Creates the application view of `r` (sets its base) and reserves its
  // range of the backing object.  The view is never placed where `taken`
  // says: addresses the application has freed (munmap, mremap) whose event
  // the runtime has not applied yet still belong to the old region.
  // => r is not yet visible to other threads.
  virtual absl::Status create_view(Region& r, AddressTaken taken) = 0;

  // Removes the application view of `r`; its pages stay in the backing
  // object until release().
  // => r is dead: no new mapping will be made in it.
  virtual void destroy_view(Region& r) = 0;

  // Gives the backing range of `r` back for reuse.
  // => every page of r has been released.
  virtual void free_range(Region& r) = 0;

  // The page's address in the direct view, for I/O.
  virtual char* direct(const Region& r, uint64_t idx) = 0;

  // pmap_enter: maps the resident page into the application view and wakes
  // the threads faulting on it; `wp` maps it write-protected (a clean page).
  // => caller holds the owner lock.
  virtual absl::Status enter(const Region& r, uint64_t idx, bool wp) = 0;

  // Allocates a zeroed page in the backing object and maps it writable.
  // => caller holds the owner lock.
  virtual absl::Status zerofill(const Region& r, uint64_t idx) = 0;

  // enter() and zerofill() for the run [idx, idx+n) (fault-around): one
  // call where the pmap can.  zerofill_run sets *done to the pages it
  // filled, a prefix of the run, and fails only if it filled none.
  // => caller holds the owner lock of every page in the run.
  virtual absl::Status enter_run(const Region& r, uint64_t idx, uint64_t n, bool wp) {
    for (uint64_t i = 0; i < n; i++) {
      absl::Status st = enter(r, idx + i, wp);
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }
  // Maps the resident pages [idx, idx+n) as enter_run does, but only up to
  // the first one that is mapped already or cannot be mapped now; returns
  // how many it mapped.  This one maps none.
  // => caller holds the owner lock of every page in the run.
  virtual uint64_t enter_prefix(const Region& r, uint64_t idx, uint64_t n, bool wp) {
    (void)r, (void)idx, (void)n, (void)wp;
    return 0;
  }
  virtual absl::Status zerofill_run(const Region& r, uint64_t idx, uint64_t n, uint64_t* done) {
    *done = 0;
    for (uint64_t i = 0; i < n; i++) {
      absl::Status st = zerofill(r, idx + i);
      if (!st.ok()) return i == 0 ? st : absl::OkStatus();
      *done = i + 1;
    }
    return absl::OkStatus();
  }

  // Places the run [idx, idx+n), read from swap into `src` (n pages), in the
  // backing object and maps it as enter_run does, waking the threads
  // faulting on it.  Every page is resident afterwards, even where mapping
  // failed (with enter_run's outcome: Unavailable if it mapped none).
  // => caller holds the owner lock of every page in the run; the pages hold
  //    no data yet.
  virtual absl::Status copy_run(const Region& r, uint64_t idx, uint64_t n, const char* src,
                                bool wp) {
    place_run(r, idx, n, src);
    return enter_run(r, idx, n, wp);
  }

  // Places the run in the backing object, unmapped: resident, as copy_run
  // leaves what it cannot map.  This one writes the direct view.
  // => as copy_run.
  virtual void place_run(const Region& r, uint64_t idx, uint64_t n, const char* src) {
    std::memcpy(direct(r, idx), src, n << PAGE_SHIFT);
  }

  // Copies the backing pages of [idx, idx+n) to dst without mapping them
  // anywhere.  False if it could not.
  // => caller holds the pages PG_BUSY.
  virtual bool read_run(const Region& r, uint64_t idx, uint64_t n, char* dst) {
    std::memcpy(dst, direct(r, idx), n << PAGE_SHIFT);
    return true;
  }

  // pmap_page_protect(PROT_NONE) on [idx, idx+n): the pages stay resident
  // in the backing object.  A later touch takes a fault (the reference bit).
  // False if some page outside the region's holes may still be mapped (the
  // region's view was not where the call looked: moved by an mremap whose
  // event is not yet read).
  // => caller holds no owner lock: the userfaultfd event this sends is read
  //    before the call returns, and its reader may need those locks.
  virtual bool remove(const Region& r, uint64_t idx, uint64_t n) = 0;

  // Whether the page's address holds r's own view of it: a mapping of the
  // backing object at the page's offset.  An unmapping event there then
  // belongs to an older mapping of that address (a region the application
  // unmapped or moved away), not to r.  A pmap without an address space of
  // its own has no view to find.
  // => any thread; holds no owner lock.
  virtual bool view_at(const Region& /*r*/, uint64_t /*idx*/) { return false; }

  // Lifts write protection after the first write to a clean page, waking
  // the writer.
  // => caller holds the owner lock.
  virtual absl::Status unprotect(const Region& r, uint64_t idx) = 0;

  // Frees the backing pages of [idx, idx+n) (hole punch): the frames go
  // back to the kernel.
  // => caller holds the owner lock of every page in the range.
  virtual void release(const Region& r, uint64_t idx, uint64_t n) = 0;

  // Wakes threads faulting on the page without mapping it (they retry).
  virtual void wake(const Region& r, uint64_t idx) = 0;

  // Makes the page raise SIGBUS in whoever touches it (UFFDIO_POISON).
  // => caller holds the owner lock.
  virtual absl::Status poison(const Region& r, uint64_t idx) = 0;

  // pmap_is_referenced.  Pages on the inactive queue are unmapped, so a touch
  // faults and the fault sets PG_PMAP_REF; the real pmap reads that bit.
  virtual bool is_referenced(const vm_page* pg) { return (pg->flags() & PG_PMAP_REF) != 0; }

  // True if clean pages can be mapped write-protected, so that the first
  // write is seen (UFFDIO_CONTINUE_MODE_WP).  Without it every resident page
  // counts as dirty.
  virtual bool tracks_modify() const = 0;
};

}  // namespace uvmrt::uvm

#endif  // UVMRT_UVM_UVM_PMAP_H_
