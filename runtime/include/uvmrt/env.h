// uvmrt/env.h: runtime options from the environment, for programs that cannot
// pass Options themselves (the link-time malloc, tools, examples).
//
//   UVMRT_BUDGET         resident budget (size)                   budget_bytes
//   UVMRT_SWAP_PATH      swap file or directory                   swap_path
//   UVMRT_SWAP_SIZE      swap file size (size)                    swap_bytes
//   UVMRT_LOG            trace|debug|info|warn|error|off          (read by the logger)
//   UVMRT_CLUSTER_PAGES  pages per swap cluster, 1..256           cluster_pages
//   UVMRT_FAULT_THREADS  fault handler threads, 1..64             fault_threads
//   UVMRT_OVERCOMMIT     boolean                                  overcommit
//   UVMRT_BUFFERED_SWAP  boolean                                  allow_buffered_swap
//   UVMRT_IN_THREAD_FAULTS  boolean                               in_thread_faults
//   UVMRT_RESERVE        address space of the link-time malloc (size; see
//                        uvmrt/uvmrt_malloc.h), checked by ReserveFromEnv
//
// A size is a decimal number of bytes with an optional K, M, G or T suffix
// (powers of 1024, either case): 512M, 4G, 65536.  A boolean is 1/0, yes/no,
// on/off or true/false.  A bad value is an InvalidArgumentError whose message
// is one line naming the variable, for example
//   uvmrt: UVMRT_BUDGET="12Q": not a size; use a number with an optional K, M
//   or G suffix (e.g. 512M)
// Unset variables leave the base options as they are.  A set but unknown
// UVMRT_* variable (a misspelling) is reported with a one-line warning on
// stderr and otherwise ignored.
//
// Built into the uvmrt_env library (libuvmrt_env.a); the link-time malloc
// library contains it.
#ifndef UVMRT_ENV_H_
#define UVMRT_ENV_H_

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "uvmrt/runtime.h"

namespace uvmrt {

// `base` with every UVMRT_* variable that is set applied on top.
absl::StatusOr<Options> OptionsFromEnv(Options base = Options());

// UVMRT_RESERVE, if set: the bytes of address space the link-time malloc
// hands to its allocator.
absl::StatusOr<std::optional<size_t>> ReserveFromEnv();

// Parses a size as described above; `name` only labels the error message.
absl::StatusOr<size_t> ParseSize(absl::string_view name, absl::string_view text);

// The UVMRT_* variables that are set but unknown, in environment order.
std::vector<std::string> UnknownEnvVariables();

}  // namespace uvmrt

#endif  // UVMRT_ENV_H_
