// uvm_aiodone.cc: the aiodone daemon, which finishes cluster writes, and
// the completion of asynchronous swap-ins.
//
// UVM queues finished bufs on uvm.aio_done for uvm_aiodone_daemon; here the
// io_uring completion queue is that queue, and this thread reaps it.  UVM
// reads swap synchronously in the faulting thread; here the userfaultfd
// reader starts the read and, on the real device, reaps it too: io_uring
// completes a read in the thread that submitted it, so a reader that handed
// the completion on to aiodone would cost one more wakeup per fault.  With a
// device that cannot do that (the tests' fault-injecting device), aiodone
// reaps the reads with the writes.
#include <errno.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"

#include "runtime/log.h"
#include "uvm/uvm.h"

namespace uvmrt::uvm {

namespace {
// ENOMEM and EAGAIN say "try again later"; anything else is a hard error.
bool transient(int error) {
  return error == ENOMEM || error == EAGAIN;
}
}  // namespace

/*
 * uvm_aiodone_daemon: main loop for the aiodone daemon.
 */
void Uvm::uvm_aiodone_daemon() {
  std::vector<io::Completion> done;
  for (;;) {
    done.clear();
    dev_->Reap(&done);
    for (const io::Completion& c : done) {
      if (c.read) {
        uvm_aio_swapin_done(static_cast<swapin_io*>(c.cookie), c.result);
      } else {
        uvm_aio_aiodone(static_cast<swapio*>(c.cookie), c.result);
      }
    }
    // Stop only once no I/O is left in flight.
    if (aiodone_stopping_.load(std::memory_order_acquire) && get(uvmexp_.paging) == 0 &&
        swapins_pending() == 0) {
      break;
    }
  }
}

void Uvm::stop_aiodone() {
  aiodone_stopping_.store(true, std::memory_order_release);
  dev_->Kick();
}

/*
 * uvm_aio_aiodone: finish one cluster write.
 *
 * => called by the aiodone thread; holds no lock.
 */
void Uvm::uvm_aio_aiodone(swapio* io, int64_t result) {
  const int64_t want = static_cast<int64_t>(io->npages) * static_cast<int64_t>(PAGE_SIZE);
  int error = 0;
  if (result < 0) {
    error = static_cast<int>(-result);
  } else if (result != want) {
    // A short write is the error it is, never success.
    error = EIO;
  }
  if (error) {
    logger()->warn("uvmrt: swap write of {} pages at slot {} failed: {} ({})", io->npages, io->slot,
                   result < 0 ? strerror(error) : "short write",
                   transient(error) ? "will retry" : "slots marked bad");
    inc(uvmexp_.swapouterr, io->npages);
  }
  int slot = uvm_swap_dropcluster(io->pages.data(), io->npages, transient(error) ? ENOMEM : error);
  if (error) {
    if (transient(error)) {
      // for transient failures, free all the swslots
      uvm_swap_free(io->slot, io->npages);
    } else {
      // for hard errors on swap-backed pageouts, mark the swslots as bad.
      // note that we do not free swslots that we mark bad.
      if (slot <= 0) slot = io->slot;
      uvm_swap_markbad(slot, io->npages);
    }
  }
  uvm_swap_freewritepages(io);
  dec(uvmexp_.paging, io->npages);
  delete io;
  // wake the daemon if memory is short, else the frame waiters.
  if (get(uvmexp_.free) <= get(uvmexp_.freemin)) {
    wakeup_pagedaemon();
  } else {
    MutexLock l(&fpageqlock_);
    free_cv_.SignalAll();
  }
}

void Uvm::uvm_aio_swapin_done(swapin_io* io, int64_t result) {
  std::unique_ptr<swapin_io> owned(io);
  Region& r = *io->region;
  const int64_t want = static_cast<int64_t>(io->n) * static_cast<int64_t>(PAGE_SIZE);
  absl::Status st;
  if (result < 0) {
    st = absl::DataLossError(absl::StrFormat("swap read of slot %d failed: %s", io->slot0,
                                             strerror(static_cast<int>(-result))));
  } else if (result != want) {
    // A short read is the error it is, never success.
    st = absl::DataLossError(
        absl::StrFormat("short swap read at slot %d: %d of %d bytes", io->slot0, result, want));
  }
  swapin_retry retry = SWAPIN_DONE;
  absl::Status out;
  {
    Chunk& c = r.chunk_of(io->idx);
    MutexLock l(&c.vmobjlock);
    out = uvm_fault_swapin_finish(r, c, io->idx, io->run, io->n, io->write, io->readahead,
                                  io->bounce, st, &retry);
  }
  uvm_swap_freepages(io->bounce, io->n);
  if (retry != SWAPIN_DONE) {
    // Mapping must wait for an event to be read, or the read failed: a
    // fault-handler thread takes over, as it may wait.
    deferred_fault d;
    d.region = std::move(io->region);
    d.idx = io->idx;
    // SWAPIN_RETRY_MAP: map the run; otherwise fault again on its first page.
    d.n = retry == SWAPIN_RETRY_MAP ? io->n : 1;
    d.access = io->write ? FAULT_WRITE : FAULT_READ;
    d.readahead = io->readahead;
    d.slot = io->slot0;
    if (retry == SWAPIN_FAILED) {
      d.kind = deferred_fault::READERR;
      d.failed = std::string(st.message());
    } else if (retry == SWAPIN_RETRY_MAP) {
      d.kind = deferred_fault::MAPRUN;
    }
    defer_fault_(std::move(d));
  } else if (absl::IsFailedPrecondition(out)) {
    // The mapping changed under the call; a touch faults again.
    logger()->debug("uvmrt: swap-in at slot {}: {}", io->slot0, out.ToString());
  } else if (!out.ok()) {
    logger()->warn("uvmrt: swap-in at slot {}: {}", io->slot0, out.ToString());
  }
  // Counted out last, so that destroy, which waits for this to reach zero,
  // finds any deferred fault already queued.
  swapins_pending_.fetch_sub(1, std::memory_order_acq_rel);
}

}  // namespace uvmrt::uvm
