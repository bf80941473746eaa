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

#include <chrono>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/statusor.h"
#include "uvm/uvm_lock.h"
#include "uvm/uvm_pmap.h"

struct procmap_query;  // uvm_compat.h, or <linux/fs.h> from Linux 6.11

namespace uvmrt::uvm {

// The REMOVE events that the runtime's own MADV_DONTNEED calls (the page
// daemon's deactivation, UffdPmap::remove) have yet to send, told apart
// from the application's.  One call sends an event per mapping (VMA) its
// range spans, in address order, skipping unmapped gaps, and each is read
// before the next is sent.  So the next event of a call recorded as
// [a, b) is exactly [s, e): s the first mapped address from a, e the end
// of that mapping or b.  The application may discard pages inside [a, b)
// meanwhile: an event that merely falls inside it is the application's.
// Taken for the runtime's, it would leave the application's pages with
// their data, and the runtime's own event, coming later and matching no
// record, would discard every page of its range.  An application event
// equal to the next one expected cannot be told from it, and need not be:
// either way, one of the two discards the pages and the other does not.
//
// A mapping split or partly unmapped while a call waits for its event to
// be read (the application's mprotect or munmap) makes the kernel go on
// from the new end of the mapping: the call's next event then begins
// inside the range of the one before (the kernel calls it a repetition).
// Such an event, from a call still in progress when the batch that holds
// it was read, beginning where a mapping now begins, is the call's too;
// taken for the application's, it would discard live pages.  What is left
// to chance: a mapping changed back before the reader looks at it (the
// application's mprotect of a page and back again within tens of
// microseconds), or an application discard that begins exactly where a
// mapping begins, inside a range the call has just unmapped.
class SelfRemoves {
 public:
  // Sets *start and *end to the mapping that covers addr, or else the
  // first one above it; false if there is none.
  using MappingQuery = std::function<bool(uint64_t addr, uint64_t* start, uint64_t* end)>;
  explicit SelfRemoves(MappingQuery query) : query_(std::move(query)) {}

  // Before each read of the userfaultfd: the calls not returned now are the
  // only ones whose events the read can return.
  // => the userfaultfd reader.
  void begin_batch() ABSL_LOCKS_EXCLUDED(lock_);
  // Before a call over [start, end); returns its number.
  uint64_t add(uint64_t start, uint64_t end) ABSL_LOCKS_EXCLUDED(lock_);
  // After call number `call` has returned: every event it sent has been
  // read (though maybe not yet consumed).
  void returned(uint64_t call) ABSL_LOCKS_EXCLUDED(lock_);
  // Forgets what is left of the calls that have returned: parts of their
  // ranges no longer mapped, for which no event was sent.
  // => the userfaultfd reader, once it has applied the events it has read
  //    (then every event of those calls has been consumed).
  void retire() ABSL_LOCKS_EXCLUDED(lock_);
  // For each REMOVE event read: true if it is one of a recorded call's.
  // => the userfaultfd reader.
  bool consume(uint64_t start, uint64_t end) ABSL_LOCKS_EXCLUDED(lock_);
  // Calls not yet retired.
  size_t pending() const ABSL_LOCKS_EXCLUDED(lock_);

 private:
  static constexpr uint64_t kNone = ~uint64_t{0};
  struct Call {
    uint64_t next = 0;  // the range still to be sent: [next, last)
    uint64_t last = 0;
    uint64_t number = 0;
    bool returned = false;
    bool live = true;             // not returned when the batch was read
    uint64_t prev_start = kNone;  // where its last event began
  };
  const MappingQuery query_;
  mutable Mutex lock_;
  std::vector<Call> pending_ ABSL_GUARDED_BY(lock_);
  uint64_t calls_ ABSL_GUARDED_BY(lock_) = 0;
};

// The mapping of this process that covers addr, or else the first one
// above it (PROCMAP_QUERY on /proc/self/maps, or reading that file where
// the kernel lacks it).
// => maps_fd is /proc/self/maps, open.
bool uvm_mapping_from(int maps_fd, uint64_t addr, uint64_t* start, uint64_t* end);
// True if the kernel answers uvm_mapping_from with PROCMAP_QUERY (Linux
// 6.11), a cheap ioctl, rather than by a read of the whole file.
bool uvm_mapping_query_fast(int maps_fd);

class UffdPmap final : public Pmap {
 public:
  // Opens userfaultfd (a full one where permitted, else user-mode-only with
  // a warning), probes its features and creates the backing memfd.  With
  // `sigbus`, a fault raises SIGBUS in the touching thread instead of
  // queueing a message (UFFD_FEATURE_SIGBUS); events are still queued.
  static absl::StatusOr<std::unique_ptr<UffdPmap>> Create(bool sigbus = false);
  ~UffdPmap() override;

  absl::Status create_view(Region& r, AddressTaken taken) override;
  bool view_at(const Region& r, uint64_t idx) override;
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
  bool remove(const Region& r, uint64_t idx, uint64_t n) override;
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
  // event is the runtime's own unmapping (remove()), which it then forgets
  // (SelfRemoves).
  // => the reader.
  bool consume_self_remove(uint64_t start, uint64_t end) {
    return self_removes_.consume(start, end);
  }
  // Before each read of the userfaultfd (SelfRemoves::begin_batch).
  // => the reader.
  void begin_self_remove_batch() { self_removes_.begin_batch(); }
  // After the reader has applied the events it has read (SelfRemoves::retire).
  // => the reader.
  void retire_self_removes() { self_removes_.retire(); }

 private:
  UffdPmap() = default;
  absl::StatusOr<uint64_t> alloc_range(uint64_t npages) ABSL_LOCKS_EXCLUDED(range_lock_);
  uint64_t pages_in_mapping(const Region& r, uint64_t idx, uint64_t n);
  // The mapping that covers addr, or else the first one above it:
  // PROCMAP_QUERY where the kernel has it, else a read of /proc/self/maps.
  bool query_mapping(uint64_t addr, procmap_query* q) const;
  // Whether q, a mapping that covers addr, is r's own view of the page
  // there: the memfd, at the page's offset.
  bool own_view(const procmap_query& q, const Region& r, uint64_t addr) const;
  // One MADV_DONTNEED over [start, end), an address range of r's view;
  // false if part of it was not mapped.
  bool remove_range(const Region& r, uint64_t start, uint64_t end);

  // Offers create_view lets go before it gives up (each one still held by
  // a region whose unmapping event is unread or not yet applied), and how
  // long it waits for one to be let go by the old region.
  static constexpr int kMaxRefusedViews = 16;
  static constexpr std::chrono::seconds kTakenWait{5};
  static bool wait_until_free(AddressTaken taken, uintptr_t start, uint64_t bytes);

  int uffd_ = -1;
  int memfd_ = -1;
  uint64_t memfd_ino_ = 0;  // its inode: the mappings of the regions' views
  char* direct_ = nullptr;
  uint64_t backing_pages_ = 0;
  bool wp_ = false;
  bool poison_ = false;
  bool user_mode_only_ = false;
  bool events_ = false;
  bool sigbus_ = false;

  // The runtime's own MADV_DONTNEED calls whose REMOVE events are not all
  // read, and /proc/self/maps, which tells their events apart.
  int maps_fd_ = -1;
  bool fast_query_ = false;  // PROCMAP_QUERY on maps_fd_ (uvm_mapping_query_fast)
  SelfRemoves self_removes_{[this](uint64_t addr, uint64_t* start, uint64_t* end) {
    return uvm_mapping_from(maps_fd_, addr, start, end);
  }};

  // Free ranges of the backing object: first page -> length.
  Mutex range_lock_;
  absl::btree_map<uint64_t, uint64_t> free_ranges_ ABSL_GUARDED_BY(range_lock_);
};

}  // namespace uvmrt::uvm

#endif  // UVMRT_UVM_UVM_UPMAP_H_
