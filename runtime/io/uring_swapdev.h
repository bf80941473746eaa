// uring_swapdev.h: the swap device on a file, through io_uring with O_DIRECT.
//
// Cluster writes go through one ring that the page daemon submits to and
// the aiodone thread reaps.  Asynchronous swap-in reads go through it too,
// unless TakeReadCompletions gave them a ring of their own, which the fault
// reader both submits to and reaps: io_uring finishes a read in the
// submitting thread (task work), so a read reaped by another thread costs a
// wakeup of each.  Synchronous reads use a small pool of rings, one per
// concurrent reader, each submitted and reaped by the thread that borrowed
// it.
//
// Thread safety: as SwapDev.
#ifndef UVMRT_IO_URING_SWAPDEV_H_
#define UVMRT_IO_URING_SWAPDEV_H_

#include <liburing.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "io/swapdev.h"
#include "uvm/uvm_lock.h"

namespace uvmrt::io {

struct SwapFileOptions {
  std::string path;             // a file to create, or a directory; empty: $TMPDIR
  uint64_t bytes = 0;           // file size (whole pages)
  bool allow_buffered = false;  // fall back to buffered I/O without O_DIRECT
  unsigned queue_depth = 256;   // shared ring entries (writes and asynchronous reads)
};

class UringSwapDev final : public SwapDev {
 public:
  // Creates (0600, or O_TMPFILE in a directory) and preallocates the swap
  // file, and sets up the rings.  Errors say what to do.
  static absl::StatusOr<std::unique_ptr<UringSwapDev>> Open(const SwapFileOptions& opts);
  ~UringSwapDev() override;

  uint64_t nslots() const override { return nslots_; }
  absl::Status SubmitWrite(uint64_t slot, const iovec* iov, int iovcnt, void* cookie) override;
  void Reap(std::vector<Completion>* out) override;
  void Kick() override;
  absl::Status Read(uint64_t slot, const iovec* iov, int iovcnt) override;
  bool async_reads() const override { return true; }
  absl::Status SubmitRead(uint64_t slot, const iovec* iov, int iovcnt, void* cookie) override;
  int TakeReadCompletions() override;
  void ReapReads(std::vector<Completion>* out) override;

  // The file's path ("" for an unnamed O_TMPFILE file) and whether it is
  // opened with O_DIRECT.
  const std::string& path() const { return path_; }
  bool direct() const { return direct_; }

 private:
  UringSwapDev() = default;
  // Queues one read or write on the shared ring (queue_io); `data` is its
  // tagged cookie.
  absl::Status submit(bool write, uint64_t slot, const iovec* iov, int iovcnt, uint64_t data);
  absl::StatusOr<io_uring*> get_read_ring();
  void put_read_ring(io_uring* ring);

  int fd_ = -1;
  bool direct_ = true;
  bool unlink_at_close_ = false;
  std::string path_;
  uint64_t nslots_ = 0;

  // The shared ring: SQ side under sq_lock_, CQ side owned by the aiodone
  // thread.
  Mutex sq_lock_;
  io_uring wring_ ABSL_GUARDED_BY(sq_lock_);
  bool wring_ok_ = false;
  unsigned inflight_ ABSL_GUARDED_BY(sq_lock_) = 0;
  unsigned depth_ = 0;

  // The asynchronous read ring, once TakeReadCompletions made it: one
  // thread submits and reaps (the lock is never contended).
  Mutex rring_lock_;
  io_uring rring_ ABSL_GUARDED_BY(rring_lock_);
  bool rring_ok_ = false;
  unsigned rring_inflight_ ABSL_GUARDED_BY(rring_lock_) = 0;

  Mutex read_lock_;
  std::vector<io_uring*> read_free_ ABSL_GUARDED_BY(read_lock_);
  std::vector<std::unique_ptr<io_uring>> read_all_ ABSL_GUARDED_BY(read_lock_);
};

// Probes whether io_uring may be used here; the error says how to enable it.
absl::Status ProbeUring();

}  // namespace uvmrt::io

#endif  // UVMRT_IO_URING_SWAPDEV_H_
