// swapdev.h: the swap device, the one narrow interface between the paging
// code and the operating system's I/O, as LevelDB's Env.
//
// Slot s lives at byte offset s * 4096 of the device; slot 0 is never used
// (it means "no slot").  Writes are asynchronous and their completions are
// reaped by the aiodone thread; reads are synchronous in the calling thread.
// The real device is UringSwapDev (io_uring, O_DIRECT); tests substitute
// devices that inject errors, short transfers and latency.
//
// Thread safety: SubmitWrite, PlugWrites and UnplugWrites are called by one
// thread at a time (the page daemon); Reap by the aiodone thread only; Read,
// Kick and SubmitQueued by any thread; SubmitRead, once TakeReadCompletions
// took its completions, ReapReads and SubmitQueuedReads by one thread (the
// fault reader).
#ifndef UVMRT_IO_SWAPDEV_H_
#define UVMRT_IO_SWAPDEV_H_

#include <sys/uio.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace uvmrt::io {

struct Completion {
  void* cookie;       // as given to SubmitWrite or SubmitRead
  int64_t result;     // bytes transferred, or -errno
  bool read = false;  // a SubmitRead's completion
};

class SwapDev {
 public:
  virtual ~SwapDev() = default;

  // Usable slots: 1 .. nslots().
  virtual uint64_t nslots() const = 0;

  // Starts writing the pages in iov[0..iovcnt) to slots slot, slot+1, ...
  // Returns OK once queued; Unavailable if the queue is full for now (a
  // transient failure: VM_PAGER_AGAIN).  The completion carries `cookie`.
  // => one caller at a time; iov stays valid until the completion is reaped.
  virtual absl::Status SubmitWrite(uint64_t slot, const iovec* iov, int iovcnt, void* cookie) = 0;

  // Between PlugWrites and UnplugWrites, the device may hold writes and
  // start several with one submission (one notification of the device),
  // as the block layer's plug; UnplugWrites starts every write held.
  // Optional: by default every write starts at once.
  // => the thread that calls SubmitWrite.
  virtual void PlugWrites() {}
  virtual void UnplugWrites() {}

  // An I/O is started once queued: a submission the kernel refuses for want
  // of memory leaves it queued for the next one, never handed back as not
  // started.  SubmitQueued submits what is left queued on the shared ring
  // (writes, and reads whose completions Reap returns), so that it starts
  // though no other I/O comes to carry it; writes held while plugged stay
  // held.  Optional.
  // => any thread but the aiodone thread (the page daemon, at every wake).
  virtual void SubmitQueued() {}

  // Waits until at least one I/O completes or Kick() is called, then
  // appends every available completion to *out.
  // => called by the aiodone thread only.
  virtual void Reap(std::vector<Completion>* out) = 0;

  // Makes a Reap in progress (or the next one) return.
  virtual void Kick() = 0;

  // Reads slots slot, slot+1, ... into iov[0..iovcnt).  A short read is an
  // error (DataLoss), never success.
  // => any thread; blocks the caller until the data is in memory.
  virtual absl::Status Read(uint64_t slot, const iovec* iov, int iovcnt) = 0;

  // Whether SubmitRead is supported.
  virtual bool async_reads() const { return false; }

  // Starts reading slots slot, slot+1, ... into iov[0..iovcnt); the
  // completion, reaped by Reap with read set, carries `cookie`.  A short
  // read completes with its byte count: the caller treats it as the error it
  // is.  Unavailable if the queue is full for now.
  // => any thread; iov stays valid until the completion is reaped.
  virtual absl::Status SubmitRead(uint64_t slot, const iovec* iov, int iovcnt, void* cookie) {
    (void)slot, (void)iov, (void)iovcnt, (void)cookie;
    return absl::UnimplementedError("asynchronous reads are not supported");
  }
  // Hands the completions of SubmitRead to the thread that submits them:
  // from now on they are reaped with ReapReads, not Reap, and the returned
  // descriptor polls readable while some are waiting.  -1: not supported
  // (Reap keeps returning them).
  // => the one thread that calls SubmitRead, before its first call.
  virtual int TakeReadCompletions() { return -1; }
  // Appends every read completion available now to *out; never waits.
  // => the thread that called TakeReadCompletions.
  virtual void ReapReads(std::vector<Completion>* out) { (void)out; }
  // SubmitQueued for the reads whose completions ReapReads returns; true
  // if some are still queued, refused again: the caller comes back soon.
  // => the thread that called TakeReadCompletions.
  virtual bool SubmitQueuedReads() { return false; }

  // Names the memory most reads and writes use (the bounce pages), which
  // stays mapped as long as the device is used: a device may register it
  // once (io_uring's fixed buffers) instead of pinning its pages for each
  // I/O.  Optional.
  // => before the first I/O.
  virtual void RegisterBuffer(void* base, size_t len) { (void)base, (void)len; }
};

}  // namespace uvmrt::io

#endif  // UVMRT_IO_SWAPDEV_H_
