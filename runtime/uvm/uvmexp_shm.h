// uvmexp_shm.h: the read-only channel through which other processes
// (uvmstat) read a runtime's uvmexp counters.
//
// Each runtime publishes its counters in a small shared-memory file,
// /dev/shm/uvmrt.<pid>.<n> (n counts the runtimes of the process), laid out
// as uvmexp_shm.  The runtime updates the counters in place, with no lock;
// readers map the file read-only and load the atomics.  The file is removed
// when the runtime is destroyed; files left by processes that died without
// destroying their runtimes are removed by the next runtime started by the
// same user.
#ifndef UVMRT_UVM_UVMEXP_SHM_H_
#define UVMRT_UVM_UVMEXP_SHM_H_

#include <charconv>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "uvm/uvmexp.h"

namespace uvmrt::uvm {

inline constexpr char kUvmexpShmMagic[8] = {'U', 'V', 'M', 'E', 'X', 'P', '0', '1'};

struct uvmexp_shm {
  char magic[8];          // kUvmexpShmMagic
  uint32_t header_bytes;  // offsetof(uvmexp_shm, exp)
  uint32_t exp_bytes;     // sizeof(uvmexp_t)
  int64_t pid;            // the publishing process
  int64_t start_unix_ns;  // when the runtime started
  uvmexp_t exp;           // the counters, in uvmexp.h's field order
};

// Parses a counters file's name, "uvmrt.<pid>.<n>" (decimal digits only);
// false for any other name.
inline bool parse_uvmexp_shm_name(std::string_view name, int64_t* pid, uint32_t* n) {
  constexpr std::string_view kPrefix = "uvmrt.";
  if (name.substr(0, kPrefix.size()) != kPrefix) return false;
  name.remove_prefix(kPrefix.size());
  const size_t dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == name.size()) return false;
  const char* end = name.data() + name.size();
  auto [p1, e1] = std::from_chars(name.data(), name.data() + dot, *pid);
  auto [p2, e2] = std::from_chars(name.data() + dot + 1, end, *n);
  return e1 == std::errc() && p1 == name.data() + dot && e2 == std::errc() && p2 == end && *pid > 0;
}

// The published counters of one runtime.
class UvmexpChannel {
 public:
  // Creates /dev/shm/uvmrt.<pid>.<n>; on failure (no /dev/shm) returns a
  // channel backed by ordinary memory, which nobody else can read.
  static std::unique_ptr<UvmexpChannel> Create();
  ~UvmexpChannel();

  uvmexp_t* exp() { return &shm_->exp; }
  const std::string& path() const { return path_; }

 private:
  UvmexpChannel() = default;
  uvmexp_shm* shm_ = nullptr;
  bool mapped_ = false;
  std::string path_;
};

}  // namespace uvmrt::uvm

#endif  // UVMRT_UVM_UVMEXP_SHM_H_
