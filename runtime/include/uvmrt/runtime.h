// uvmrt/runtime.h: the C++ interface of uvmrt.
//
// A Runtime owns a resident budget, a swap file, the userfaultfd handler
// threads, the page daemon and the aiodone thread.  Map() returns memory that
// the application reads and writes as ordinary memory; pages beyond the
// budget are paged to swap and brought back when touched.
//
// Thread safety: Map, Unmap and GetStats may be called from any thread.
// Destroying the Runtime must not race with other calls.
//
// C++ code uses either this header or the C header uvmrt/uvmrt.h, not both in
// one file: C's `uvmrt` type and this namespace share a name.
#ifndef UVMRT_RUNTIME_H_
#define UVMRT_RUNTIME_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "uvmrt/uvmrt_types.h"

namespace uvmrt {

using Stats = uvmrt_stats;

struct Options {
  size_t budget_bytes = size_t{256} << 20;  // resident budget
  std::string swap_path;                    // file or directory; empty: $TMPDIR
  size_t swap_bytes = 0;                    // 0: 4 x budget_bytes
  int cluster_pages = 16;                   // SWCLUSTPAGES
  int fault_threads = 2;                    // userfaultfd handler threads
  bool overcommit = false;                  // allow mapping beyond budget + swap
  bool allow_buffered_swap = false;         // fall back when O_DIRECT is refused
  // Resolve faults on the touching thread, in a SIGBUS handler, instead of
  // handing them to the fault threads: one wakeup per fault instead of two
  // or three.  System calls that touch a non-resident page then fail with
  // EFAULT; see docs/integration.md before turning it on.  x86-64 only.
  bool in_thread_faults = false;
};

class RuntimeImpl;
class Runtime;
namespace internal {
class RuntimeAccess;
}

class Runtime {
 public:
  // Creates a runtime.  Errors name the cause and what to do about it.
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(const Options& options);

  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Maps a region of `bytes`, rounded up to whole pages.  Refuses a zero size,
  // and, unless overcommit is set, a total beyond budget + swap.
  absl::StatusOr<void*> Map(size_t bytes);

  // Unmaps the region that starts at `addr`, releasing its frames and swap
  // slots.  `bytes`, if nonzero, must match the size given to Map.
  absl::Status Unmap(void* addr, size_t bytes = 0);

  // Access advice for the region starting at `addr`, as madvise(2):
  // kNormal looks ahead on sequential access, kSequential always brings in
  // the following pages with a fault, kRandom never does.
  enum class Advice { kNormal = 0, kRandom = 1, kSequential = 2 };
  absl::Status Advise(void* addr, Advice advice);

  // A snapshot of the uvmexp counters.
  Stats GetStats() const;

  // Bytes of the backing memfd that the kernel reports allocated (st_blocks):
  // the kernel's own count of resident frames.
  int64_t KernelResidentBytes() const;

  // The shared-memory file where the counters are published for uvmstat
  // (/dev/shm/uvmrt.<pid>.<n>), or "" if they could not be.
  std::string StatsPath() const;

 private:
  friend class internal::RuntimeAccess;
  explicit Runtime(std::unique_ptr<RuntimeImpl> impl);
  std::unique_ptr<RuntimeImpl> impl_;
};

}  // namespace uvmrt

#endif  // UVMRT_RUNTIME_H_
