// runtime_internal.h: hooks for the runtime's own tests; not installed.
//
// Tests wrap the real swap device in one that injects I/O faults (EIO,
// transient errors, short transfers, latency), below the page daemon, as
// LevelDB's fault_injection_test wraps its Env.
#ifndef UVMRT_RUNTIME_INTERNAL_H_
#define UVMRT_RUNTIME_INTERNAL_H_

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "io/swapdev.h"
#include "uvmrt/runtime.h"

namespace uvmrt::internal {

// Receives the real swap device and returns the one the runtime will use.
using SwapDevWrapper =
    std::function<std::unique_ptr<io::SwapDev>(std::unique_ptr<io::SwapDev> real)>;

// Runtime::Create, with the swap device wrapped by `wrap` (if set).
absl::StatusOr<std::unique_ptr<Runtime>> CreateWithSwapDev(const Options& options,
                                                           const SwapDevWrapper& wrap);

}  // namespace uvmrt::internal

#endif  // UVMRT_RUNTIME_INTERNAL_H_
