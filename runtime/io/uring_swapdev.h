// uring_swapdev.h: the swap device on a file, through io_uring with O_DIRECT.
//
// Cluster writes go through one ring that the page daemon submits to
// (short ones several at a time, while it plugs them) and the aiodone
// thread reaps.  Asynchronous swap-in reads go through it too,
// unless TakeReadCompletions gave them a ring of their own, which the fault
// reader both submits to and reaps: io_uring finishes a read in the
// submitting thread (task work), so a read reaped by another thread costs a
// wakeup of each.  Synchronous reads use a small pool of rings, one per
// concurrent reader, each submitted and reaped by the thread that borrowed
// it.  Every ring has the swap file registered, and the bounce pages once
// RegisterBuffer names them, so that an I/O neither looks up the file nor
// pins its buffer's pages when it can use them.
//
// Thread safety: as SwapDev.
#ifndef UVMRT_IO_URING_SWAPDEV_H_
#define UVMRT_IO_URING_SWAPDEV_H_

#include <liburing.h>

#include <atomic>
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
  void PlugWrites() override;
  void UnplugWrites() override;
  void SubmitQueued() override;
  absl::Status Read(uint64_t slot, const iovec* iov, int iovcnt) override;
  bool async_reads() const override { return true; }
  absl::Status SubmitRead(uint64_t slot, const iovec* iov, int iovcnt, void* cookie) override;
  int TakeReadCompletions() override;
  void ReapReads(std::vector<Completion>* out) override;
  bool SubmitQueuedReads() override;
  void RegisterBuffer(void* base, size_t len) override;

  // The file's path ("" for an unnamed O_TMPFILE file) and whether it is
  // opened with O_DIRECT.
  const std::string& path() const { return path_; }
  bool direct() const { return direct_; }

  // Testing: the next `n` submissions are refused as by a kernel short of
  // memory (EAGAIN), before they reach the kernel.
  void InjectSubmitFailures(int n);

 private:
  UringSwapDev() = default;

  // What one ring has registered: the swap file (file index 0), and the
  // bounce pages (buffer index 0).
  struct RingRegs {
    bool file = false;
    bool buf = false;
  };
  // A ring of the pool of synchronous reads.
  struct ReadRing {
    io_uring ring;
    RingRegs regs;
  };
  // Registers the file, and the buffer if one is named, with a new ring.
  // => no I/O on `ring` yet; caller holds its lock, if it has one.
  RingRegs register_ring(io_uring* ring);
  // Registers the named buffer with `ring`; false if the kernel refused.
  // => no I/O on `ring` yet; caller holds its lock, if it has one.
  bool register_buf(io_uring* ring);
  // Prepares `sqe` as one read or write of slots slot, slot + 1, ... using
  // what its ring has registered (`regs`).
  // => caller holds the lock of the ring's submission side.
  void prep_io(io_uring_sqe* sqe, const RingRegs& regs, bool write, uint64_t slot, const iovec* iov,
               int iovcnt) const;
  // Queues one read or write on `ring` and, unless `hold`, submits it with
  // any held before; `data` is its tagged cookie.  Unavailable (try again
  // later) only if the submission queue is full: once queued, the I/O is
  // started, as a refused submission leaves it queued for the next.
  // => caller holds the lock of `ring`'s submission side.
  absl::Status queue_io(io_uring* ring, const RingRegs& regs, bool write, uint64_t slot,
                        const iovec* iov, int iovcnt, uint64_t data, bool hold = false);
  // Queues one read or write on the shared ring (queue_io); `data` is its
  // tagged cookie.
  absl::Status submit(bool write, uint64_t slot, const iovec* iov, int iovcnt, uint64_t data);
  absl::StatusOr<ReadRing*> get_read_ring();
  void put_read_ring(ReadRing* ring);
  // Closes a borrowed ring whose read may still be queued (or, after a
  // failed wait, in flight), so that no later read uses it.
  // => the thread that borrowed it (get_read_ring); takes read_lock_.
  void discard_read_ring(ReadRing* ring) ABSL_LOCKS_EXCLUDED(read_lock_);
  // io_uring_submit (io_uring_submit_and_wait if wait_nr > 0), retried
  // while the kernel refuses it for want of resources, up to kSubmitRetry.
  // => caller holds the lock of `ring`'s submission side, or has borrowed
  //    it.
  int submit_retrying(io_uring* ring, unsigned wait_nr);
  // One io_uring_submit (io_uring_submit_and_wait if wait_nr > 0), or a
  // refusal InjectSubmitFailures asked for.
  // => as submit_retrying.
  int submit_once(io_uring* ring, unsigned wait_nr);

  int fd_ = -1;
  bool direct_ = true;
  bool unlink_at_close_ = false;
  std::string path_;
  uint64_t nslots_ = 0;
  // The buffer RegisterBuffer named: set before the first I/O, then
  // constant.
  char* buf_ = nullptr;
  size_t buf_len_ = 0;

  // The shared ring: SQ side under sq_lock_, CQ side owned by the aiodone
  // thread.
  Mutex sq_lock_;
  io_uring wring_ ABSL_GUARDED_BY(sq_lock_);
  RingRegs wring_regs_ ABSL_GUARDED_BY(sq_lock_);
  bool wring_ok_ = false;
  unsigned inflight_ ABSL_GUARDED_BY(sq_lock_) = 0;
  unsigned depth_ = 0;
  // Whether writes are plugged (PlugWrites), and the bytes of the writes
  // held, queued and not yet submitted, since the last submission.
  bool wplugged_ ABSL_GUARDED_BY(sq_lock_) = false;
  uint64_t wheld_ ABSL_GUARDED_BY(sq_lock_) = 0;

  // The asynchronous read ring, once TakeReadCompletions made it: one
  // thread submits and reaps (the lock is never contended).
  Mutex rring_lock_;
  io_uring rring_ ABSL_GUARDED_BY(rring_lock_);
  RingRegs rring_regs_ ABSL_GUARDED_BY(rring_lock_);
  bool rring_ok_ = false;
  unsigned rring_inflight_ ABSL_GUARDED_BY(rring_lock_) = 0;

  std::atomic<int> fail_submits_{0};  // InjectSubmitFailures

  Mutex read_lock_;
  std::vector<ReadRing*> read_free_ ABSL_GUARDED_BY(read_lock_);
  std::vector<std::unique_ptr<ReadRing>> read_all_ ABSL_GUARDED_BY(read_lock_);
};

// Probes whether io_uring may be used here; the error says how to enable it.
absl::Status ProbeUring();

}  // namespace uvmrt::io

#endif  // UVMRT_IO_URING_SWAPDEV_H_
