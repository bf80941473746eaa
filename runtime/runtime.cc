// runtime.cc: the Runtime object: it creates the user pmap, the swap device
// and the paging core, and runs their threads:
//   fault handlers (uffd messages -> uvm_fault), the page daemon
//   (uvm_pageout) and aiodone (uvm_aiodone_daemon).
#include "uvmrt/runtime.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "io/uring_swapdev.h"
#include "runtime/inthread_fault.h"
#include "runtime/log.h"
#include "runtime/runtime_internal.h"
#include "uvm/uvm.h"
#include "uvm/uvm_lock.h"
#include "uvm/uvm_upmap.h"
#include "uvm/uvmexp_shm.h"

namespace uvmrt {

using uvm::PAGE_SHIFT;
using uvm::PAGE_SIZE;

class RuntimeImpl final : public internal::InThreadFaults {
 public:
  ~RuntimeImpl();
  absl::Status Init(const Options& o, const internal::SwapDevWrapper& wrap);
  void reader_loop();
  void handle_msg(const uffd_msg& m);
  void dispatch_fault(const uffd_msg& m);
  void defer_fault(uvm::deferred_fault d);
  bool hand_off_swapin(uvm::swapin_io* io, int64_t result);
  void worker_loop();
  void drain_faults();
  bool signal_reader(int phase);
  bool fault_in_thread(uintptr_t addr, uvm::fault_access access) override;
  std::shared_ptr<uvm::Region> region_page(uintptr_t addr, uint64_t* idx);

  std::unique_ptr<uvm::UvmexpChannel> stats;
  std::unique_ptr<uvm::UffdPmap> pmap;
  std::unique_ptr<io::SwapDev> dev;
  std::unique_ptr<uvm::Uvm> uvm;
  int stopfd = -1;
  std::thread reader;
  std::vector<std::thread> handlers;
  // Faults that wait (busy pages, no free frame, swap-ins that cannot be
  // started asynchronously) and faults the swap-in completion defers, for
  // the workers.  A fault the reader hands over is a deferred_fault of kind
  // FAULT.  Completed read-ahead reads the reader hands over
  // (hand_off_swapin, kind SWAPIN_DONE) go to the front.
  Mutex work_lock;
  std::deque<uvm::deferred_fault> work ABSL_GUARDED_BY(work_lock);
  bool stopping_workers ABSL_GUARDED_BY(work_lock) = false;
  int busy_workers ABSL_GUARDED_BY(work_lock) = 0;
  int nworkers = 0;  // set before any thread starts
  // Destroy: 1 = the reader drains the userfaultfd and goes on; 2 = it
  // drains and exits.  `drained` says phase 1 is done.
  std::atomic<int> stop_phase{0};
  bool drained ABSL_GUARDED_BY(work_lock) = false;
  CondVar work_cv;  // work queued
  CondVar idle_cv;  // the reader drained, or the workers went idle
  std::thread pagedaemon;
  std::thread aiodone;
  int inthread_slot = -1;  // with in_thread_faults: inthread_attach's slot
  // With in_thread_faults, the reader's event batches: odd while it reads
  // and applies one.  An in-thread fault waits for the batch in progress,
  // so an event read before the fault (the MADV_DONTNEED that returned
  // before the touch) is applied before the fault looks at the page, as
  // the order of the userfaultfd's messages ensures for queued faults.
  std::atomic<uint64_t> event_epoch{0};
  Mutex epoch_lock;
  CondVar epoch_cv;  // event_epoch became even
  void wait_for_events() ABSL_LOCKS_EXCLUDED(epoch_lock);
};

namespace {

absl::Status ValidateOptions(const Options& o) {
  if (o.budget_bytes < UVMRT_MIN_BUDGET) {
    return absl::InvalidArgumentError(
        absl::StrFormat("uvmrt: budget_bytes %d is below the minimum of %d bytes (1 MiB): raise it",
                        o.budget_bytes, UVMRT_MIN_BUDGET));
  }
  if (o.cluster_pages < 1 || o.cluster_pages > UVMRT_MAX_CLUSTER_PAGES) {
    return absl::InvalidArgumentError(
        absl::StrFormat("uvmrt: cluster_pages %d is out of range: give 1 to %d", o.cluster_pages,
                        UVMRT_MAX_CLUSTER_PAGES));
  }
  if (o.fault_threads < 1 || o.fault_threads > 64) {
    return absl::InvalidArgumentError(
        absl::StrFormat("uvmrt: fault_threads %d is out of range: give 1 to 64", o.fault_threads));
  }
  const uint64_t swap = o.swap_bytes != 0 ? o.swap_bytes : 4 * o.budget_bytes;
  // Slot 0 is never used, so the file needs one page more than a cluster.
  if (swap / PAGE_SIZE < static_cast<uint64_t>(o.cluster_pages) + 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "uvmrt: swap_bytes %d is smaller than one cluster (%d pages) plus a header page: give "
        "at least %d bytes",
        swap, o.cluster_pages, (o.cluster_pages + 1) * PAGE_SIZE));
  }
  return absl::OkStatus();
}

}  // namespace

// The live region holding the page at addr, and the page's index in *idx;
// null if addr is outside every region, or in a hole the application
// unmapped or moved out with mremap.
// => a fault handler (the reader, or an in-thread fault); holds no lock.
std::shared_ptr<uvm::Region> RuntimeImpl::region_page(uintptr_t addr, uint64_t* idx) {
  addr &= ~(PAGE_SIZE - 1);
  std::shared_ptr<uvm::Region> r = uvm->uvm_map_lookup(addr);
  if (r == nullptr) return nullptr;
  *idx = (addr - r->base()) >> PAGE_SHIFT;
  if (r->in_hole(*idx)) return nullptr;
  return r;
}

// => a SIGBUS handler on an application thread; holds no runtime lock.
void RuntimeImpl::wait_for_events() {
  const uint64_t e = event_epoch.load();
  if ((e & 1) == 0) return;
  MutexLock l(&epoch_lock);
  while (event_epoch.load() == e) epoch_cv.Wait(&epoch_lock);
}

// Resolves, on the touching thread, a fault its SIGBUS handler caught
// (inthread_fault.h).
// => a SIGBUS handler on an application thread; holds no runtime lock.
bool RuntimeImpl::fault_in_thread(uintptr_t addr, uvm::fault_access access) {
  wait_for_events();
  uint64_t idx = 0;
  std::shared_ptr<uvm::Region> r = region_page(addr, &idx);
  // A page the runtime poisoned: the SIGBUS is the poison's, for the
  // application.  Neither it nor memory outside the regions is ours.
  if (r == nullptr || r->poisoned(idx)) return false;
  absl::Status st = uvm->uvm_fault(*r, idx, access);
  if (!st.ok()) logger()->warn("uvmrt: fault at {:#x}: {}", addr, st.ToString());
  return true;
}

absl::Status RuntimeImpl::Init(const Options& o, const internal::SwapDevWrapper& wrap) {
  if (absl::Status st = ValidateOptions(o); !st.ok()) return st;
  if (absl::Status st = io::ProbeUring(); !st.ok()) return st;
  absl::StatusOr<std::unique_ptr<uvm::UffdPmap>> p = uvm::UffdPmap::Create(o.in_thread_faults);
  if (!p.ok()) return p.status();
  pmap = std::move(*p);
  io::SwapFileOptions so;
  so.path = o.swap_path;
  so.bytes = o.swap_bytes != 0 ? o.swap_bytes : 4 * o.budget_bytes;
  so.allow_buffered = o.allow_buffered_swap;
  absl::StatusOr<std::unique_ptr<io::UringSwapDev>> d = io::UringSwapDev::Open(so);
  if (!d.ok()) return d.status();
  dev = std::move(*d);
  if (wrap) dev = wrap(std::move(dev));
  uvm::uvm_params params;
  // The budget holds the frames and the bounce pages of swap-in reads.
  params.bounce_pages = uvm::bounce_pages_for(o.budget_bytes >> PAGE_SHIFT);
  params.npages = (o.budget_bytes >> PAGE_SHIFT) - params.bounce_pages;
  params.cluster_pages = o.cluster_pages;
  params.overcommit = o.overcommit;
  params.inactarg_div = uvm::kInactargDiv;
  stats = uvm::UvmexpChannel::Create();
  uvm = std::make_unique<uvm::Uvm>(params, pmap.get(), dev.get(), stats->exp());
  uvm->uvm_enable_async_swapin(
      [this](uvm::deferred_fault d) { defer_fault(std::move(d)); },
      [this](uvm::swapin_io* io, int64_t result) { return hand_off_swapin(io, result); });
  if (o.in_thread_faults) {
    absl::StatusOr<int> slot = internal::inthread_attach(this);
    if (!slot.ok()) return slot.status();
    inthread_slot = *slot;
  }

  nworkers = o.fault_threads;
  stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stopfd < 0) return absl::InternalError("uvmrt: eventfd failed");
  pagedaemon = std::thread([this] {
    pthread_setname_np(pthread_self(), "uvm_pagedaemon");
    uvm->uvm_pageout();
  });
  aiodone = std::thread([this] {
    pthread_setname_np(pthread_self(), "uvm_aiodoned");
    uvm->uvm_aiodone_daemon();
  });
  reader = std::thread([this] {
    pthread_setname_np(pthread_self(), "uvm_faultrd");
    reader_loop();
  });
  for (int i = 0; i < o.fault_threads; i++) {
    handlers.emplace_back([this, i] {
      pthread_setname_np(pthread_self(), absl::StrFormat("uvm_fault%d", i).c_str());
      worker_loop();
    });
  }
  logger()->info("uvmrt: budget {} pages, swap {} slots, {} fault threads",
                 uvm->exp().npages.load(), dev->nslots(), o.fault_threads);
  return absl::OkStatus();
}

void RuntimeImpl::dispatch_fault(const uffd_msg& m) {
  const uintptr_t addr = m.arg.pagefault.address & ~(PAGE_SIZE - 1);
  uint64_t idx = 0;
  std::shared_ptr<uvm::Region> r = region_page(addr, &idx);
  if (r == nullptr) {
    // Not part of a live region, yet registered with this userfaultfd:
    // memory the application moved or grew with mremap.  Fail loudly
    // (SIGBUS); if the address is gone altogether, let the thread retry and
    // take SIGSEGV.
    uvm::Region probe(addr, 1, 0);
    if (!pmap->poison(probe, 0).ok()) pmap->wake(probe, 0);
    logger()->warn("uvmrt: fault at {:#x} outside any region", addr);
    return;
  }
  const uint64_t flags = m.arg.pagefault.flags;
  uvm::fault_access access = uvm::FAULT_READ;
  if (flags & UFFD_PAGEFAULT_FLAG_WP) {
    access = uvm::FAULT_WP;
  } else if (flags & UFFD_PAGEFAULT_FLAG_WRITE) {
    access = uvm::FAULT_WRITE;
  }
  absl::Status st;
  // Faults that need no waiting are resolved here; the rest go to the
  // workers, so that this thread is always free to read the next event.
  if (uvm->uvm_fault_try(*r, idx, access, &st)) {
    if (!st.ok()) logger()->warn("uvmrt: fault at {:#x}: {}", addr, st.ToString());
    return;
  }
  MutexLock l(&work_lock);
  uvm::deferred_fault d;
  d.region = std::move(r);
  d.idx = idx;
  d.access = access;
  work.push_back(std::move(d));
  work_cv.Signal();
}

// Queues for the workers a fault that the swap-in completion could not
// finish without waiting.  Once the workers are gone (destroy), the thread
// is woken to retry instead.
// => the thread that reaps swap-in reads (the reader, or aiodone); holds no
//    lock.
void RuntimeImpl::defer_fault(uvm::deferred_fault d) {
  MutexLock l(&work_lock);
  if (stopping_workers) {
    pmap->wake(*d.region, d.idx);
    return;
  }
  work.push_back(std::move(d));
  work_cv.Signal();
}

// Hands a completed read-ahead read to an idle worker, which maps its run:
// the copy (UFFDIO_COPY, about 3 us a page) is most of a completion's cost,
// and the reader meanwhile reads faults and starts reads.  Only to an idle
// worker, and ahead of the queued faults: a busy worker may be waiting for
// these very pages, so the completion must never queue behind it.  Returns
// false if no worker is idle; the reader finishes the read itself.
// => the reader (Uvm::uvm_swapin_reap); holds no lock.
bool RuntimeImpl::hand_off_swapin(uvm::swapin_io* io, int64_t result) {
  MutexLock l(&work_lock);
  if (stopping_workers || busy_workers >= nworkers) return false;
  uvm::deferred_fault d;
  d.kind = uvm::deferred_fault::SWAPIN_DONE;
  d.done = io;
  d.result = result;
  work.push_front(std::move(d));
  work_cv.Signal();
  return true;
}

// The userfaultfd reader: reads fault messages and events, resolves what
// needs no waiting, and starts swap-ins; it also reaps the swap-in reads it
// started (Uvm::uvm_swapin_reaper): io_uring runs a read's completion
// in the thread that submitted it, so handing it to aiodone would cost a
// wakeup of both threads.
// => the reader thread.
void RuntimeImpl::reader_loop() {
  constexpr int kBatch = 64;
  uffd_msg msgs[kBatch];
  // With in-thread faults the reader starts no swap-in: those the faulting
  // threads start asynchronously (read-ahead) are reaped by aiodone.
  const int readfd = pmap->sigbus() ? -1 : uvm->uvm_swapin_reaper();
  auto end_batch = [this] {
    if (!pmap->sigbus()) return;
    MutexLock l(&epoch_lock);
    event_epoch.fetch_add(1);  // even: the batch is applied
    epoch_cv.SignalAll();
  };
  // A negative descriptor is ignored by poll.
  pollfd fds[3] = {{pmap->uffd(), POLLIN, 0}, {stopfd, POLLIN, 0}, {readfd, POLLIN, 0}};
  for (;;) {
    // A swap-in read a refused submission left queued on the reader's ring
    // would wait for the ring's next submission, which may never come: it
    // is submitted again every millisecond until the kernel takes it.
    const int timeout = readfd >= 0 && uvm->uvm_swapin_submit_queued() ? 1 : -1;
    int pr = poll(fds, 3, timeout);
    if (pr < 0) {
      if (errno == EINTR) continue;
      logger()->critical("uvmrt: userfaultfd reader: poll: {}", strerror(errno));
      return;
    }
    if (fds[2].revents != 0) uvm->uvm_swapin_reap();
    // On stop, whatever is queued is still read and handled (drained), so a
    // thread that faulted before destroy began is served, not left for the
    // views' removal to kill.
    const bool stop = fds[1].revents != 0;
    if (stop) {
      uint64_t v;
      if (read(stopfd, &v, sizeof(v)) < 0 && errno != EAGAIN) {
        logger()->error("uvmrt: userfaultfd reader: reading the stop event: {}", strerror(errno));
      }
    }
    // Woken only by swap-in reads completing: no message to read.
    if (fds[0].revents == 0 && !stop) continue;
    if (pmap->sigbus()) event_epoch.fetch_add(1);  // odd: a batch in progress
    bool failed = false;
    for (;;) {
      // Held from the read until the batch's events are applied
      // (Uvm::uvm_event_lock), during which no other thread maps a page's
      // data: an madvise(MADV_DONTNEED) returns once its event is read.
      uvm->uvm_event_lock().Lock();
      pmap->begin_self_remove_batch();
      ssize_t n = read(pmap->uffd(), msgs, sizeof(msgs));
      if (n < 0) {
        uvm->uvm_event_lock().Unlock();
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        logger()->critical("uvmrt: userfaultfd reader: read: {}", strerror(errno));
        failed = true;
        break;
      }
      // The batch's events are applied before any of its faults, those
      // read before an event too: the reader maps no page whose discard it
      // has read and not applied (design.md: a stale MINOR fault must not
      // map a discarded page).  A fault read before an event raced with
      // it, and may see the memory as before the event or after.
      const ssize_t count = n / static_cast<ssize_t>(sizeof(uffd_msg));
      bool events = false;
      for (ssize_t i = 0; i < count; i++) {
        if (msgs[i].event == UFFD_EVENT_PAGEFAULT) continue;
        handle_msg(msgs[i]);
        events = true;
      }
      // Only a batch with events can have finished a call's events; a call
      // that sent none waits for the next such batch, harmlessly.
      if (events) pmap->retire_self_removes();
      uvm->uvm_event_lock().Unlock();
      for (ssize_t i = 0; i < count; i++) {
        if (msgs[i].event == UFFD_EVENT_PAGEFAULT) handle_msg(msgs[i]);
      }
      if (!stop) break;
    }
    end_batch();
    if (failed) return;
    if (stop) {
      if (stop_phase.load() >= 2) {
        // Reads still in flight finish here, bounded by the device.
        const absl::Time deadline = absl::Now() + absl::Seconds(10);
        while (readfd >= 0 && uvm->swapins_pending() > 0 && absl::Now() < deadline) {
          uvm->uvm_swapin_reap_wait(10);
        }
        return;
      }
      MutexLock l(&work_lock);
      drained = true;
      idle_cv.SignalAll();
    }
  }
}

void RuntimeImpl::handle_msg(const uffd_msg& m) {
  switch (m.event) {
    case UFFD_EVENT_PAGEFAULT:
      dispatch_fault(m);
      break;
    case UFFD_EVENT_REMOVE:
      if (!pmap->consume_self_remove(m.arg.remove.start, m.arg.remove.end)) {
        uvm->uvm_map_discard(m.arg.remove.start, m.arg.remove.end);
      }
      break;
    case UFFD_EVENT_UNMAP:
      uvm->uvm_map_unmapped(m.arg.remove.start, m.arg.remove.end);
      break;
    case UFFD_EVENT_REMAP:
      uvm->uvm_map_remapped(m.arg.remap.from, m.arg.remap.to, m.arg.remap.len);
      break;
    default:
      logger()->warn("uvmrt: unexpected userfaultfd event {}", m.event);
  }
}

void RuntimeImpl::worker_loop() {
  for (;;) {
    uvm::deferred_fault w;
    {
      MutexLock l(&work_lock);
      while (work.empty() && !stopping_workers) work_cv.Wait(&work_lock);
      if (work.empty()) return;
      w = std::move(work.front());
      work.pop_front();
      busy_workers++;
    }
    absl::Status st;
    switch (w.kind) {
      case uvm::deferred_fault::FAULT:
        st = uvm->uvm_fault(*w.region, w.idx, w.access);
        break;
      case uvm::deferred_fault::MAPRUN:
        st = uvm->uvm_fault_maprun(*w.region, w.idx, w.n, w.access, w.readahead);
        break;
      case uvm::deferred_fault::READERR:
        st = uvm->uvm_fault_readerr(*w.region, w.idx, w.slot, absl::DataLossError(w.failed));
        break;
      case uvm::deferred_fault::SWAPIN_DONE:
        uvm->uvm_aio_swapin_done(w.done, w.result);  // never waits
        break;
    }
    if (!st.ok()) logger()->warn("uvmrt: fault on page {}: {}", w.idx, st.ToString());
    MutexLock l(&work_lock);
    if (--busy_workers == 0 && work.empty()) idle_cv.SignalAll();
  }
}

// Phase 1 of destroy: the reader drains the userfaultfd and finishes the
// swap-ins started, and the workers finish every fault queued, while
// the page daemon still frees frames for them.  Bounded: a fault that cannot finish (out of swap)
// gives up in uvm_wait after 5 s.
// => destroying thread; holds no lock.
void RuntimeImpl::drain_faults() {
  if (!reader.joinable() || !signal_reader(1)) return;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  MutexLock l(&work_lock);
  while (!(drained && work.empty() && busy_workers == 0 && uvm->swapins_pending() == 0)) {
    if (absl::Now() >= deadline) {
      logger()->warn("uvmrt: destroy: faults still in progress after 10 s; stopping anyway");
      return;
    }
    // aiodone does not signal idle_cv: swap-ins in flight are polled.
    idle_cv.WaitWithTimeout(&work_lock, std::min(deadline - absl::Now(), absl::Milliseconds(1)));
  }
}

// Tells the reader to drain the userfaultfd and then go on (phase 1) or
// exit (phase 2).
// => destroying thread.
bool RuntimeImpl::signal_reader(int phase) {
  stop_phase.store(phase);
  uint64_t one = 1;
  if (stopfd >= 0 && write(stopfd, &one, sizeof(one)) == sizeof(one)) return true;
  logger()->error("uvmrt: cannot signal the fault handlers to stop");
  return false;
}

RuntimeImpl::~RuntimeImpl() {
  // Faults already raised are served first (drain_faults).  Then the page
  // daemon: its unmapping calls need the reader to read their events.  Then
  // the reader and the workers; workers in uvm_wait see the stop.  aiodone
  // last, once no write is in flight.
  if (inthread_slot >= 0) {
    // In-thread faults raised before destroy began are served (the page
    // daemon still runs); later ones get the previous SIGBUS handler's
    // outcome.
    internal::inthread_detach(inthread_slot, [this] { uvm->stop(); });
  }
  drain_faults();
  if (uvm != nullptr) uvm->stop();
  if (pagedaemon.joinable()) pagedaemon.join();
  if (reader.joinable()) {
    signal_reader(2);
    reader.join();
  }
  {
    MutexLock l(&work_lock);
    stopping_workers = true;
    work_cv.SignalAll();
  }
  for (auto& t : handlers) t.join();
  if (aiodone.joinable()) {
    uvm->stop_aiodone();
    aiodone.join();
  }
  if (uvm != nullptr) uvm->uao_detach_all();
  uvm.reset();
  dev.reset();
  pmap.reset();
  if (stopfd >= 0) close(stopfd);
}

Runtime::Runtime(std::unique_ptr<RuntimeImpl> impl) : impl_(std::move(impl)) {}
Runtime::~Runtime() = default;

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(const Options& options) {
  return internal::CreateWithSwapDev(options, nullptr);
}

namespace internal {
class RuntimeAccess {
 public:
  static std::unique_ptr<Runtime> Make(std::unique_ptr<RuntimeImpl> impl) {
    return std::unique_ptr<Runtime>(new Runtime(std::move(impl)));
  }
};

absl::StatusOr<std::unique_ptr<Runtime>> CreateWithSwapDev(const Options& options,
                                                           const SwapDevWrapper& wrap) {
  auto impl = std::make_unique<RuntimeImpl>();
  if (absl::Status st = impl->Init(options, wrap); !st.ok()) return st;
  return RuntimeAccess::Make(std::move(impl));
}
}  // namespace internal

absl::StatusOr<void*> Runtime::Map(size_t bytes) {
  if (bytes == 0) {
    return absl::InvalidArgumentError("uvmrt: cannot map zero bytes: ask for at least one byte");
  }
  if (bytes > SIZE_MAX - PAGE_SIZE) {
    return absl::InvalidArgumentError("uvmrt: mapping size overflows: map less");
  }
  const uint64_t npages = (bytes + PAGE_SIZE - 1) >> PAGE_SHIFT;
  absl::StatusOr<std::shared_ptr<uvm::Region>> r = impl_->uvm->uao_create(npages);
  if (!r.ok()) return r.status();
  return reinterpret_cast<void*>((*r)->base());
}

absl::Status Runtime::Unmap(void* addr, size_t bytes) {
  return impl_->uvm->uao_detach(reinterpret_cast<uintptr_t>(addr), bytes);
}

absl::Status Runtime::Advise(void* addr, Advice advice) {
  std::shared_ptr<uvm::Region> r = impl_->uvm->uvm_map_lookup(reinterpret_cast<uintptr_t>(addr));
  if (r == nullptr || r->base() != reinterpret_cast<uintptr_t>(addr)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "uvmrt: %p is not the start of a mapped region: pass the address Map returned", addr));
  }
  r->set_advice(static_cast<uvm::Region::advice>(advice));
  return absl::OkStatus();
}

Stats Runtime::GetStats() const {
  Stats s{};
  impl_->uvm->exp().snapshot(&s);
  return s;
}

int64_t Runtime::KernelResidentBytes() const {
  return impl_->pmap->kernel_resident_bytes();
}

std::string Runtime::StatsPath() const {
  return impl_->stats->path();
}

}  // namespace uvmrt
