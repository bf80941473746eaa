// uvm_upmap.h: the real user pmap, over userfaultfd and one memfd.
//
// All regions are ranges of one backing memfd.  The application view of a
// region is a MAP_SHARED mapping of its range, registered with userfaultfd
// in MISSING | MINOR (| WP) modes; the direct view is one unregistered
// mapping of the whole memfd.  A frame is a memfd page in the page cache:
// zero-fill is UFFDIO_ZEROPAGE, mapping a resident page UFFDIO_CONTINUE,
// deactivation MADV_DONTNEED on the application view, freeing a frame a hole
// punch (design.md, section 4).
//
// Thread safety: all methods may be called from any thread.
#ifndef UVMRT_UVM_UVM_UPMAP_H_
#define UVMRT_UVM_UVM_UPMAP_H_

#include <linux/userfaultfd.h>

#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/statusor.h"
#include "uvm/uvm_lock.h"
#include "uvm/uvm_pmap.h"

namespace uvmrt::uvm {

class UffdPmap final : public Pmap {
 public:
  // Opens userfaultfd (a full one where permitted, else user-mode-only with
  // a warning), probes its features and creates the backing memfd.  With
  // `sigbus`, a fault raises SIGBUS in the touching thread instead of
  // queueing a message (UFFD_FEATURE_SIGBUS); events are still queued.
  static absl::StatusOr<std::unique_ptr<UffdPmap>> Create(bool sigbus = false);
  ~UffdPmap() override;

  absl::Status create_view(Region& r) override;
  void destroy_view(Region& r) override;
  void free_range(Region& r) override;
  char* direct(const Region& r, uint64_t idx) override {
    return direct_ + ((r.pgoff() + idx) << PAGE_SHIFT);
  }
  absl::Status enter(const Region& r, uint64_t idx, bool wp) override;
  absl::Status zerofill(const Region& r, uint64_t idx) override;
  absl::Status enter_run(const Region& r, uint64_t idx, uint64_t n, bool wp) override;
  uint64_t enter_prefix(const Region& r, uint64_t idx, uint64_t n, bool wp) override;
  absl::Status zerofill_run(const Region& r, uint64_t idx, uint64_t n, uint64_t* done) override;
  absl::Status copy_run(const Region& r, uint64_t idx, uint64_t n, const char* src,
                        bool wp) override;
  void place_run(const Region& r, uint64_t idx, uint64_t n, const char* src) override;
  bool read_run(const Region& r, uint64_t idx, uint64_t n, char* dst) override;
  void remove(const Region& r, uint64_t idx, uint64_t n) override;
  absl::Status unprotect(const Region& r, uint64_t idx) override;
  void release(const Region& r, uint64_t idx, uint64_t n) override;
  void wake(const Region& r, uint64_t idx) override;
  absl::Status poison(const Region& r, uint64_t idx) override;
  bool tracks_modify() const override { return wp_; }
  // Faults raise SIGBUS in the touching thread (Create(sigbus)).
  bool sigbus() const { return sigbus_; }

  int uffd() const { return uffd_; }
  int memfd() const { return memfd_; }
  bool user_mode_only() const { return user_mode_only_; }

  // The backing memfd's allocated bytes, from the kernel (st_blocks).
  int64_t kernel_resident_bytes() const;

  // True if UFFD_EVENT_REMOVE/UNMAP/REMAP are delivered.
  bool has_events() const { return events_; }

  // The userfaultfd reader calls this for each REMOVE event: true if the
  // event is the runtime's own unmapping (remove()), which it then forgets.
  bool consume_self_remove(uint64_t start, uint64_t end) ABSL_LOCKS_EXCLUDED(self_lock_);

 private:
  UffdPmap() = default;
  absl::StatusOr<uint64_t> alloc_range(uint64_t npages) ABSL_LOCKS_EXCLUDED(range_lock_);

  int uffd_ = -1;
  int memfd_ = -1;
  char* direct_ = nullptr;
  uint64_t backing_pages_ = 0;
  bool wp_ = false;
  bool poison_ = false;
  bool user_mode_only_ = false;
  bool events_ = false;
  bool sigbus_ = false;

  // The runtime's own MADV_DONTNEED calls whose REMOVE event is not yet read.
  Mutex self_lock_;
  std::vector<std::pair<uint64_t, uint64_t>> self_removes_ ABSL_GUARDED_BY(self_lock_);

  // Free ranges of the backing object: first page -> length.
  Mutex range_lock_;
  absl::btree_map<uint64_t, uint64_t> free_ranges_ ABSL_GUARDED_BY(range_lock_);
};

}  // namespace uvmrt::uvm

#endif  // UVMRT_UVM_UVM_UPMAP_H_
