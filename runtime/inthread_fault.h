// inthread_fault.h: in-thread fault handling (Options::in_thread_faults).
//
// The userfaultfd of such a runtime raises SIGBUS in the touching thread
// instead of queueing a message for the fault reader (UFFD_FEATURE_SIGBUS).
// One process-wide SIGBUS handler finds the runtime whose region holds the
// faulting address and lets it resolve the fault right there, as UVM runs
// uvm_fault in the faulting thread: the thread sleeps only for its own read,
// where a fault handed to the reader costs a wakeup of the reader and one of
// the application thread besides.  Returning from the handler re-executes
// the access, which finds the page mapped (or raises SIGBUS again if an
// event kept it from being mapped, and is handled again).
//
// A SIGBUS that is no such fault (a poisoned page, a file mapping beyond its
// end, a signal sent with kill) goes to the handler that was installed
// before the first in-thread runtime, or gets the default action.
#ifndef UVMRT_INTHREAD_FAULT_H_
#define UVMRT_INTHREAD_FAULT_H_

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "uvm/uvm.h"

namespace uvmrt::internal {

class InThreadFaults {
 public:
  // Resolves a fault at addr, on the faulting thread.  False if addr is in
  // none of this runtime's live regions (the SIGBUS is someone else's).
  // => a SIGBUS handler on an application thread, which holds no runtime
  //    lock (the runtime never touches the application view).
  virtual bool fault_in_thread(uintptr_t addr, uvm::fault_access access) = 0;

 protected:
  ~InThreadFaults() = default;
};

// Makes the SIGBUS handler send faults to h, installing the handler on first
// use.  Returns h's slot.  x86-64 only (the handler reads the page-fault
// error code for the access type).
// => any thread; before h maps a region.
absl::StatusOr<int> inthread_attach(InThreadFaults* h);

// Stops sending faults to the slot's handler, then waits until none of its
// calls is in progress.  `give_up`, called once if that takes longer than
// 10 s, must make the calls in progress return (it stops the runtime's waits
// for frames).
// => any thread; once per inthread_attach.
void inthread_detach(int slot, absl::FunctionRef<void()> give_up);

}  // namespace uvmrt::internal

#endif  // UVMRT_INTHREAD_FAULT_H_
