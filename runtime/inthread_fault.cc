// inthread_fault.cc: the SIGBUS handler of in-thread fault handling.
#include "runtime/inthread_fault.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ucontext.h>

#include <atomic>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "runtime/log.h"

namespace uvmrt::internal {

namespace {

// One slot per attached runtime.  A handler counts itself in `users` before
// it reads `h`, and inthread_detach clears `h` before it waits for `users`
// to drain, so no call can start on a detached runtime.
struct slot {
  std::atomic<InThreadFaults*> h{nullptr};
  std::atomic<int> users{0};
};
constexpr int kSlots = 8;
slot g_slots[kSlots];

std::mutex g_install_lock;
bool g_installed = false;
struct sigaction g_prev;  // written once, under g_install_lock, before use

// The access that faulted, from the page-fault error code the kernel saves
// in the signal frame (X86_PF_PROT = 1, X86_PF_WRITE = 2).  A write to a
// present page is a write-protect fault.
uvm::fault_access fault_access_of(const void* uctx) {
#if defined(__x86_64__)
  const greg_t err = static_cast<const ucontext_t*>(uctx)->uc_mcontext.gregs[REG_ERR];
  if (err & 2) return (err & 1) ? uvm::FAULT_WP : uvm::FAULT_WRITE;
#else
  (void)uctx;
#endif
  return uvm::FAULT_READ;
}

// Not ours: what would have happened without this handler.
void chain(int sig, siginfo_t* si, void* uctx) {
  if (g_prev.sa_flags & SA_SIGINFO) {
    g_prev.sa_sigaction(sig, si, uctx);
    return;
  }
  if (g_prev.sa_handler == SIG_IGN && si->si_code <= 0) return;  // sent, and ignored
  if (g_prev.sa_handler == SIG_DFL || g_prev.sa_handler == SIG_IGN) {
    // The default action (a fault cannot be ignored).  A fault raises the
    // signal again when the access is retried on return; a sent signal is
    // raised again here, and is delivered once this handler returns.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGBUS, &dfl, nullptr);
    if (si->si_code <= 0) raise(SIGBUS);
    return;
  }
  g_prev.sa_handler(sig);
}

void uvm_sigbus(int sig, siginfo_t* si, void* uctx) {
  const int saved_errno = errno;
  // A userfaultfd fault is BUS_ADRERR; a poisoned page is BUS_MCEERR_AR.
  if (si->si_code == BUS_ADRERR) {
    const uintptr_t addr = reinterpret_cast<uintptr_t>(si->si_addr);
    const uvm::fault_access access = fault_access_of(uctx);
    for (slot& s : g_slots) {
      s.users.fetch_add(1);
      InThreadFaults* h = s.h.load();
      const bool handled = h != nullptr && h->fault_in_thread(addr, access);
      s.users.fetch_sub(1);
      if (handled) {
        errno = saved_errno;
        return;
      }
    }
  }
  errno = saved_errno;
  chain(sig, si, uctx);
}

}  // namespace

absl::StatusOr<int> inthread_attach(InThreadFaults* h) {
#if !defined(__x86_64__)
  (void)h;
  return absl::UnimplementedError(
      "uvmrt: in_thread_faults is supported on x86-64 only: turn it off");
#else
  std::lock_guard<std::mutex> l(g_install_lock);
  if (!g_installed) {
    // No SA_ONSTACK: the fault is handled on the thread's own stack, which
    // has room for it, where an alternate signal stack may not.  No
    // SA_NODEFER: a SIGBUS inside the handler is a bug, and kills.
    struct sigaction sa {};
    sa.sa_sigaction = uvm_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &g_prev) != 0) {
      return absl::InternalError(absl::StrCat("uvmrt: sigaction(SIGBUS): ", strerror(errno)));
    }
    g_installed = true;
  }
  for (int i = 0; i < kSlots; i++) {
    InThreadFaults* none = nullptr;
    if (g_slots[i].h.compare_exchange_strong(none, h)) return i;
  }
  return absl::ResourceExhaustedError(absl::StrFormat(
      "uvmrt: at most %d runtimes may use in_thread_faults at once: destroy one, or turn "
      "in_thread_faults off for this one",
      kSlots));
#endif
}

void inthread_detach(int i, absl::FunctionRef<void()> give_up) {
  slot& s = g_slots[i];
  s.h.store(nullptr);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  bool gave_up = false;
  while (s.users.load() != 0) {
    // Another runtime's calls count here too while they scan the slots,
    // but only for the moment it takes to look at this one.
    if (!gave_up && absl::Now() >= deadline) {
      logger()->warn("uvmrt: destroy: in-thread faults still in progress after 10 s; stopping");
      give_up();
      gave_up = true;
    }
    absl::SleepFor(absl::Microseconds(100));
  }
}

}  // namespace uvmrt::internal
