// capi.cc: the C interface (uvmrt/uvmrt.h) over uvmrt::Runtime.
//
// C's `uvmrt` handle type and the C++ namespace uvmrt cannot both be named in
// one C++ file, so this file defines the functions of uvmrt.h over its own
// handle struct; C linkage matches them by name, and a C handle is only ever
// a pointer to this struct.
#include <errno.h>

#include <string>

#include "uvmrt/runtime.h"
#include "uvmrt/uvmrt_types.h"

struct uvmrt_handle {
  std::unique_ptr<uvmrt::Runtime> rt;
};

namespace {

thread_local std::string last_error;

int set_error(const absl::Status& st) {
  last_error = std::string(st.message());
  switch (st.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return -EINVAL;
    case absl::StatusCode::kPermissionDenied:
      return -EPERM;
    case absl::StatusCode::kResourceExhausted:
      return -ENOMEM;
    case absl::StatusCode::kAlreadyExists:
      return -EEXIST;
    case absl::StatusCode::kNotFound:
      return -ENOENT;
    case absl::StatusCode::kUnimplemented:
      return -ENOSYS;
    default:
      return -EIO;
  }
}

}  // namespace

extern "C" {

void uvmrt_options_init(uvmrt_options* opts) {
  const uvmrt::Options d;
  opts->budget_bytes = d.budget_bytes;
  opts->swap_path = nullptr;
  opts->swap_bytes = d.swap_bytes;
  opts->cluster_pages = d.cluster_pages;
  opts->fault_threads = d.fault_threads;
  opts->overcommit = d.overcommit ? 1 : 0;
  opts->allow_buffered_swap = d.allow_buffered_swap ? 1 : 0;
  opts->in_thread_faults = d.in_thread_faults ? 1 : 0;
}

int uvmrt_create(const uvmrt_options* opts, uvmrt_handle** out) {
  if (opts == nullptr || out == nullptr) {
    return set_error(absl::InvalidArgumentError("uvmrt_create: opts and out must not be NULL"));
  }
  uvmrt::Options o;
  o.budget_bytes = opts->budget_bytes;
  o.swap_path = opts->swap_path != nullptr ? opts->swap_path : "";
  o.swap_bytes = opts->swap_bytes;
  o.cluster_pages = opts->cluster_pages;
  o.fault_threads = opts->fault_threads;
  o.overcommit = opts->overcommit != 0;
  o.allow_buffered_swap = opts->allow_buffered_swap != 0;
  o.in_thread_faults = opts->in_thread_faults != 0;
  auto rt = uvmrt::Runtime::Create(o);
  if (!rt.ok()) return set_error(rt.status());
  *out = new uvmrt_handle{std::move(*rt)};
  last_error.clear();
  return 0;
}

const char* uvmrt_last_error(void) {
  return last_error.c_str();
}

void* uvmrt_map(uvmrt_handle* rt, size_t bytes) {
  if (rt == nullptr) {
    set_error(absl::InvalidArgumentError("uvmrt_map: runtime is NULL"));
    return nullptr;
  }
  auto p = rt->rt->Map(bytes);
  if (!p.ok()) {
    set_error(p.status());
    return nullptr;
  }
  return *p;
}

int uvmrt_unmap(uvmrt_handle* rt, void* addr, size_t bytes) {
  if (rt == nullptr) return set_error(absl::InvalidArgumentError("uvmrt_unmap: runtime is NULL"));
  absl::Status st = rt->rt->Unmap(addr, bytes);
  return st.ok() ? 0 : set_error(st);
}

int uvmrt_advise(uvmrt_handle* rt, void* addr, int advice) {
  if (rt == nullptr) return set_error(absl::InvalidArgumentError("uvmrt_advise: runtime is NULL"));
  if (advice < 0 || advice > 2) {
    return set_error(absl::InvalidArgumentError(
        "uvmrt_advise: unknown advice: use UVMRT_ADV_NORMAL, _RANDOM or _SEQUENTIAL"));
  }
  absl::Status st = rt->rt->Advise(addr, static_cast<uvmrt::Runtime::Advice>(advice));
  return st.ok() ? 0 : set_error(st);
}

int uvmrt_get_stats(uvmrt_handle* rt, uvmrt_stats* out) {
  if (rt == nullptr || out == nullptr) {
    return set_error(absl::InvalidArgumentError("uvmrt_get_stats: NULL argument"));
  }
  *out = rt->rt->GetStats();
  return 0;
}

void uvmrt_destroy(uvmrt_handle* rt) {
  delete rt;
}

}  // extern "C"
