// uvm_aiodone.cc: the aiodone daemon, which finishes cluster writes.
//
// UVM queues finished bufs on uvm.aio_done for uvm_aiodone_daemon; here the
// io_uring completion queue is that queue, and this thread reaps it.
#include <errno.h>

#include <vector>

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
  std::vector<io::WriteCompletion> done;
  for (;;) {
    done.clear();
    dev_->ReapWrites(&done);
    for (const io::WriteCompletion& wc : done) {
      uvm_aio_aiodone(static_cast<swapio*>(wc.cookie), wc.result);
    }
    // Stop only once no write is left in flight.
    if (aiodone_stopping_.load(std::memory_order_acquire) && get(uvmexp_.paging) == 0) break;
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

}  // namespace uvmrt::uvm
