// uvmrt_malloc_ctor.cc: the constructor and destructor of libuvmrt-malloc.
//
// This file is linked into the library after the uvmrt runtime library, so
// that its constructor runs after the runtime's own static initializers (a
// library's constructors run in link order).
#include "runtime/malloc/uvmrt_malloc_internal.h"

namespace {

__attribute__((constructor)) void UvmrtMallocInit() {
  uvmrt::malloc_internal::Start();
}

__attribute__((destructor)) void UvmrtMallocFini() {
  uvmrt::malloc_internal::AtExit();
}

}  // namespace
