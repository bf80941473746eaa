// uring_swapdev.cc: the io_uring swap device.
#include "io/uring_swapdev.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "runtime/log.h"

namespace uvmrt::io {

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kKickCookie = ~uint64_t{0};
constexpr uint64_t kReadTag = 1;
// Asynchronous reads in flight at most (fault-around and read-ahead runs).
constexpr unsigned kReadRingDepth = 128;
// How long a refused submission is retried.  io_uring_enter refuses one
// when the kernel has no memory for a request (EAGAIN, ENOMEM) or its
// completions have overflowed (EBUSY): a shortage that passes.
constexpr absl::Duration kSubmitRetry = absl::Milliseconds(100);
// Plugged writes are held until they add up to this much: short writes
// (random pageouts, a few pages each) share one notification of the device,
// while a full cluster, for which the daemon would hold back its frees, goes
// at once.
constexpr uint64_t kWritePlugBytes = 64 << 10;

std::string errstr(int e) {
  return strerror(e);
}

absl::Status uring_error(int err) {
  if (err == EPERM || err == EACCES) {
    return absl::PermissionDeniedError(
        "uvmrt: io_uring is disabled for this process (kernel.io_uring_disabled): run "
        "'sysctl -w kernel.io_uring_disabled=0', or run as a member of "
        "kernel.io_uring_group");
  }
  if (err == ENOSYS) {
    return absl::UnimplementedError(
        "uvmrt: this kernel has no io_uring: use Linux 6.1 or later built with CONFIG_IO_URING");
  }
  return absl::InternalError("uvmrt: io_uring_queue_init failed: " + errstr(err));
}

}  // namespace

absl::Status ProbeUring() {
  io_uring ring;
  int ret = io_uring_queue_init(2, &ring, 0);
  if (ret < 0) return uring_error(-ret);
  io_uring_queue_exit(&ring);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<UringSwapDev>> UringSwapDev::Open(const SwapFileOptions& opts) {
  if (opts.bytes < kPage * 2) {
    return absl::InvalidArgumentError("uvmrt: swap file too small: give at least two pages");
  }
  std::unique_ptr<UringSwapDev> dev(new UringSwapDev());
  std::string path = opts.path;
  if (path.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    path = (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
  }
  struct stat st;
  const bool is_dir = stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  if (!is_dir && stat(path.c_str(), &st) == 0) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "uvmrt: swap path %s already exists: remove it, or name a new file or a directory", path));
  }
  auto open_swap = [&](int extra) {
    if (is_dir) return open(path.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC | extra, 0600);
    return open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | extra, 0600);
  };
  int fd = open_swap(O_DIRECT);
  if (fd < 0 && errno == EINVAL) {
    if (!opts.allow_buffered) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "uvmrt: the filesystem of swap path %s does not support O_DIRECT (tmpfs?): put the "
          "swap file on a disk filesystem such as ext4 or xfs, or allow buffered swap",
          path));
    }
    logger()->warn("uvmrt: {} does not support O_DIRECT; swap uses buffered I/O", path);
    dev->direct_ = false;
    fd = open_swap(0);
  }
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) {
      return absl::NotFoundError(absl::StrFormat(
          "uvmrt: cannot create swap file at %s: %s: create the directory, or choose a path in an "
          "existing writable directory",
          path, errstr(e)));
    }
    return absl::PermissionDeniedError(absl::StrFormat(
        "uvmrt: cannot create swap file at %s: %s: choose a writable directory or file path", path,
        errstr(e)));
  }
  dev->fd_ = fd;
  struct statfs sfs;
  if (fstatfs(fd, &sfs) == 0 &&
      (sfs.f_type == 0x01021994 /* TMPFS_MAGIC */ || sfs.f_type == 0x858458f6 /* RAMFS_MAGIC */) &&
      !opts.allow_buffered) {
    if (!is_dir) unlink(path.c_str());
    return absl::FailedPreconditionError(absl::StrFormat(
        "uvmrt: swap path %s is on tmpfs, which keeps swap in memory: put the swap file on a "
        "disk filesystem such as ext4 or xfs",
        path));
  }
  dev->path_ = is_dir ? std::string() : path;
  dev->unlink_at_close_ = !is_dir;
  const uint64_t bytes = opts.bytes & ~(kPage - 1);
  // Slot 0 is never used, so the file holds one page more than nslots.
  dev->nslots_ = bytes / kPage - 1;
  if (fallocate(fd, 0, 0, static_cast<off_t>(bytes)) != 0) {
    const int e = errno;
    if (e == ENOSPC) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "uvmrt: no space for a %d-byte swap file at %s: free space or give a smaller swap size",
          bytes, path));
    }
    if (e != EOPNOTSUPP || ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      return absl::InternalError(
          absl::StrFormat("uvmrt: cannot size swap file %s: %s", path, errstr(e)));
    }
  }
  dev->depth_ = opts.queue_depth;
  {
    MutexLock l(&dev->sq_lock_);
    int ret = io_uring_queue_init(opts.queue_depth, &dev->wring_, 0);
    if (ret < 0) return uring_error(-ret);
    dev->wring_ok_ = true;
    dev->wring_regs_ = dev->register_ring(&dev->wring_);
  }
  logger()->info("uvmrt: swap file {} ({} slots, {})", is_dir ? path + "/<O_TMPFILE>" : path,
                 dev->nslots_, dev->direct_ ? "O_DIRECT" : "buffered");
  return dev;
}

UringSwapDev::~UringSwapDev() {
  {
    MutexLock l(&sq_lock_);
    if (wring_ok_) io_uring_queue_exit(&wring_);
  }
  {
    MutexLock l(&rring_lock_);
    if (rring_ok_) io_uring_queue_exit(&rring_);
  }
  {
    MutexLock l(&read_lock_);
    for (auto& r : read_all_) io_uring_queue_exit(&r->ring);
  }
  if (fd_ >= 0) close(fd_);
  if (unlink_at_close_ && !path_.empty()) unlink(path_.c_str());
}

absl::Status UringSwapDev::SubmitWrite(uint64_t slot, const iovec* iov, int iovcnt, void* cookie) {
  return submit(/*write=*/true, slot, iov, iovcnt, reinterpret_cast<uint64_t>(cookie));
}

absl::Status UringSwapDev::SubmitRead(uint64_t slot, const iovec* iov, int iovcnt, void* cookie) {
  if (slot == 0 || slot + static_cast<uint64_t>(iovcnt) > nslots_ + 1) {
    return absl::OutOfRangeError(absl::StrFormat("swap read of slot %d out of range", slot));
  }
  const uint64_t data = reinterpret_cast<uint64_t>(cookie);
  if (data & kReadTag) return absl::InvalidArgumentError("unaligned read cookie");
  if (!rring_ok_) return submit(/*write=*/false, slot, iov, iovcnt, data | kReadTag);
  MutexLock l(&rring_lock_);
  if (rring_inflight_ >= kReadRingDepth) return absl::UnavailableError("swap read queue full");
  absl::Status st = queue_io(&rring_, rring_regs_, /*write=*/false, slot, iov, iovcnt, data);
  if (st.ok()) rring_inflight_++;
  return st;
}

UringSwapDev::RingRegs UringSwapDev::register_ring(io_uring* ring) {
  RingRegs regs;
  const int ret = io_uring_register_files(ring, &fd_, 1);
  if (ret < 0) {
    logger()->debug("uvmrt: io_uring file registration unavailable: {}", errstr(-ret));
  } else {
    regs.file = true;
  }
  if (buf_ != nullptr) regs.buf = register_buf(ring);
  return regs;
}

bool UringSwapDev::register_buf(io_uring* ring) {
  iovec v{buf_, buf_len_};
  const int ret = io_uring_register_buffers(ring, &v, 1);
  // Registered pages count against RLIMIT_MEMLOCK: without room there, the
  // pages are pinned for each I/O instead.
  if (ret < 0) logger()->debug("uvmrt: io_uring buffer registration unavailable: {}", errstr(-ret));
  return ret == 0;
}

void UringSwapDev::RegisterBuffer(void* base, size_t len) {
  buf_ = static_cast<char*>(base);
  buf_len_ = len;
  // The rings made from now on register it as they are made
  // (register_ring); the pool of synchronous read rings is still empty, as
  // no I/O has been done.
  {
    MutexLock l(&sq_lock_);
    if (wring_ok_) wring_regs_.buf = register_buf(&wring_);
  }
  MutexLock l(&rring_lock_);
  if (rring_ok_) rring_regs_.buf = register_buf(&rring_);
}

void UringSwapDev::prep_io(io_uring_sqe* sqe, const RingRegs& regs, bool write, uint64_t slot,
                           const iovec* iov, int iovcnt) const {
  const int fd = regs.file ? 0 : fd_;
  const uint64_t off = slot * kPage;
  // Pages in a row within the registered buffer go as one fixed-buffer I/O.
  bool fixed = regs.buf;
  size_t len = 0;
  for (int i = 0; fixed && i < iovcnt; i++) {
    const char* b = static_cast<const char*>(iov[i].iov_base);
    fixed = b == static_cast<const char*>(iov[0].iov_base) + len && b >= buf_ &&
            b + iov[i].iov_len <= buf_ + buf_len_;
    len += iov[i].iov_len;
  }
  if (fixed && write) {
    io_uring_prep_write_fixed(sqe, fd, iov[0].iov_base, static_cast<unsigned>(len), off, 0);
  } else if (fixed) {
    io_uring_prep_read_fixed(sqe, fd, iov[0].iov_base, static_cast<unsigned>(len), off, 0);
  } else if (write) {
    io_uring_prep_writev(sqe, fd, iov, static_cast<unsigned>(iovcnt), off);
  } else {
    io_uring_prep_readv(sqe, fd, iov, static_cast<unsigned>(iovcnt), off);
  }
  if (regs.file) sqe->flags |= IOSQE_FIXED_FILE;
}

absl::Status UringSwapDev::queue_io(io_uring* ring, const RingRegs& regs, bool write, uint64_t slot,
                                    const iovec* iov, int iovcnt, uint64_t data, bool hold) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (sqe == nullptr) {
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
    if (sqe == nullptr) return absl::UnavailableError("swap submission queue full");
  }
  prep_io(sqe, regs, write, slot, iov, iovcnt);
  io_uring_sqe_set_data64(sqe, data);
  if (hold) return absl::OkStatus();
  // Once queued, the I/O is started: a refused submission leaves it in the
  // queue, for the ring's next submission or SubmitQueued(Reads), so it is
  // never given back to the caller as not started.
  const int ret = submit_retrying(ring, 0);
  if (ret < 0) {
    logger()->error("uvmrt: io_uring_submit: {}; the I/O stays queued, to be submitted again",
                    errstr(-ret));
  }
  return absl::OkStatus();
}

int UringSwapDev::submit_once(io_uring* ring, unsigned wait_nr) {
  if (int n = fail_submits_.load(std::memory_order_relaxed); n > 0) {
    fail_submits_.store(n - 1, std::memory_order_relaxed);
    return -EAGAIN;
  }
  return wait_nr > 0 ? io_uring_submit_and_wait(ring, wait_nr) : io_uring_submit(ring);
}

int UringSwapDev::submit_retrying(io_uring* ring, unsigned wait_nr) {
  int ret = submit_once(ring, wait_nr);
  const absl::Time deadline = absl::Now() + kSubmitRetry;
  while ((ret == -EAGAIN || ret == -EBUSY || ret == -ENOMEM || ret == -EINTR) &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Microseconds(100));
    ret = submit_once(ring, wait_nr);
  }
  return ret;
}

void UringSwapDev::SubmitQueued() {
  MutexLock l(&sq_lock_);
  // While plugged, the page daemon's UnplugWrites submits what is queued.
  if (!wring_ok_ || wplugged_ || io_uring_sq_ready(&wring_) == 0) return;
  const int ret = submit_once(&wring_, 0);
  if (ret < 0) logger()->debug("uvmrt: io_uring_submit of queued I/O: {}", errstr(-ret));
}

bool UringSwapDev::SubmitQueuedReads() {
  MutexLock l(&rring_lock_);
  if (!rring_ok_ || io_uring_sq_ready(&rring_) == 0) return false;
  // One try: the reader must not wait here.  It comes back while this
  // returns true.
  const int ret = submit_once(&rring_, 0);
  if (ret < 0) logger()->debug("uvmrt: io_uring_submit of queued reads: {}", errstr(-ret));
  return io_uring_sq_ready(&rring_) > 0;
}

int UringSwapDev::TakeReadCompletions() {
  MutexLock l(&rring_lock_);
  if (rring_ok_) return rring_.ring_fd;
  const int ret = io_uring_queue_init(kReadRingDepth, &rring_, 0);
  if (ret < 0) {
    logger()->info("uvmrt: no ring for swap-in reads ({}); aiodone reaps them", errstr(-ret));
    return -1;
  }
  rring_ok_ = true;
  rring_regs_ = register_ring(&rring_);
  return rring_.ring_fd;
}

void UringSwapDev::ReapReads(std::vector<Completion>* out) {
  MutexLock l(&rring_lock_);
  if (!rring_ok_) return;
  // A read's completion is posted by its task work, which this thread runs
  // on its way back from any system call: a poll of the ring's descriptor
  // returns once it has.
  io_uring_cqe* cqe = nullptr;
  unsigned head, n = 0;
  io_uring_for_each_cqe(&rring_, head, cqe) {
    n++;
    out->push_back(Completion{reinterpret_cast<void*>(io_uring_cqe_get_data64(cqe)),
                              static_cast<int64_t>(cqe->res), true});
  }
  io_uring_cq_advance(&rring_, n);
  rring_inflight_ -= n;
}

absl::Status UringSwapDev::submit(bool write, uint64_t slot, const iovec* iov, int iovcnt,
                                  uint64_t data) {
  MutexLock l(&sq_lock_);
  if (inflight_ >= depth_) {
    return absl::UnavailableError("swap queue full");
  }
  // A plugged write is held while the writes held add up to less than
  // kWritePlugBytes; the write that is not held submits those that were.
  uint64_t len = 0;
  for (int i = 0; i < iovcnt; i++) len += iov[i].iov_len;
  const bool hold = write && wplugged_ && wheld_ + len < kWritePlugBytes;
  absl::Status st = queue_io(&wring_, wring_regs_, write, slot, iov, iovcnt, data, hold);
  if (st.ok()) {
    inflight_++;
    wheld_ = hold ? wheld_ + len : 0;
  }
  return st;
}

void UringSwapDev::PlugWrites() {
  MutexLock l(&sq_lock_);
  wplugged_ = true;
}

void UringSwapDev::UnplugWrites() {
  MutexLock l(&sq_lock_);
  wplugged_ = false;
  wheld_ = 0;
  // The writes held, and any a refused submission left queued.
  if (io_uring_sq_ready(&wring_) == 0) return;
  const int ret = submit_retrying(&wring_, 0);
  if (ret < 0) {
    logger()->error(
        "uvmrt: io_uring_submit of held writes: {}; they stay queued, to be submitted again",
        errstr(-ret));
  }
}

void UringSwapDev::Reap(std::vector<Completion>* out) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  // The completion side of the ring belongs to this (the aiodone) thread;
  // only the submission side is shared, under sq_lock_.
  io_uring_cqe* cqe = nullptr;
  int ret;
  do {
    ret = io_uring_wait_cqe(&wring_, &cqe);
  } while (ret == -EINTR);
  if (ret < 0) {
    logger()->error("uvmrt: io_uring_wait_cqe: {}", errstr(-ret));
    return;
  }
  unsigned head, n = 0, ios = 0;
  io_uring_for_each_cqe(&wring_, head, cqe) {
    n++;
    const uint64_t data = io_uring_cqe_get_data64(cqe);
    if (data == kKickCookie) continue;
    ios++;
    // Reads are told from writes by the low bit of their (aligned) cookie.
    const bool read = data & kReadTag;
    out->push_back(Completion{reinterpret_cast<void*>(data & ~kReadTag),
                              static_cast<int64_t>(cqe->res), read});
  }
  io_uring_cq_advance(&wring_, n);
  MutexLock l(&sq_lock_);
  inflight_ -= ios;
}

void UringSwapDev::Kick() {
  MutexLock l(&sq_lock_);
  io_uring_sqe* sqe = io_uring_get_sqe(&wring_);
  if (sqe == nullptr) {
    io_uring_submit(&wring_);
    sqe = io_uring_get_sqe(&wring_);
    if (sqe == nullptr) return;
  }
  io_uring_prep_nop(sqe);
  io_uring_sqe_set_data64(sqe, kKickCookie);
  if (submit_retrying(&wring_, 0) < 0) logger()->error("uvmrt: io_uring_submit of a kick failed");
  wheld_ = 0;  // submitted with the kick
}

absl::StatusOr<UringSwapDev::ReadRing*> UringSwapDev::get_read_ring() {
  MutexLock l(&read_lock_);
  if (!read_free_.empty()) {
    ReadRing* r = read_free_.back();
    read_free_.pop_back();
    return r;
  }
  auto ring = std::make_unique<ReadRing>();
  int ret = io_uring_queue_init(8, &ring->ring, 0);
  if (ret < 0) return uring_error(-ret);
  ring->regs = register_ring(&ring->ring);
  ReadRing* r = ring.get();
  read_all_.push_back(std::move(ring));
  return r;
}

void UringSwapDev::put_read_ring(ReadRing* ring) {
  MutexLock l(&read_lock_);
  read_free_.push_back(ring);
}

void UringSwapDev::discard_read_ring(ReadRing* ring) {
  MutexLock l(&read_lock_);
  io_uring_queue_exit(&ring->ring);
  std::erase_if(read_all_, [ring](const std::unique_ptr<ReadRing>& r) { return r.get() == ring; });
}

void UringSwapDev::InjectSubmitFailures(int n) {
  fail_submits_.store(n, std::memory_order_relaxed);
}

absl::Status UringSwapDev::Read(uint64_t slot, const iovec* iov, int iovcnt) {
  if (slot == 0 || slot + static_cast<uint64_t>(iovcnt) > nslots_ + 1) {
    return absl::OutOfRangeError(absl::StrFormat("swap read of slot %d out of range", slot));
  }
  absl::StatusOr<ReadRing*> rr = get_read_ring();
  if (!rr.ok()) return rr.status();
  io_uring* ring = &(*rr)->ring;
  uint64_t want = 0;
  for (int i = 0; i < iovcnt; i++) want += iov[i].iov_len;
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  prep_io(sqe, (*rr)->regs, /*write=*/false, slot, iov, iovcnt);
  int ret = submit_retrying(ring, 1);
  io_uring_cqe* cqe = nullptr;
  if (ret >= 0) {
    do {
      ret = io_uring_wait_cqe(ring, &cqe);
    } while (ret == -EINTR);
  }
  int64_t res = ret < 0 ? ret : cqe->res;
  if (ret >= 0) {
    io_uring_cqe_seen(ring, cqe);
    put_read_ring(*rr);
  } else {
    // A read still queued goes with its ring and never runs into memory
    // the caller has moved on from.  (One in flight, after a failed wait,
    // cannot be stopped, but its completion is handed to no other read.)
    discard_read_ring(*rr);
  }
  if (res < 0) {
    return absl::DataLossError(
        absl::StrFormat("swap read of slot %d failed: %s", slot, errstr(static_cast<int>(-res))));
  }
  if (static_cast<uint64_t>(res) != want) {
    return absl::DataLossError(
        absl::StrFormat("short swap read at slot %d: %d of %d bytes", slot, res, want));
  }
  return absl::OkStatus();
}

}  // namespace uvmrt::io
