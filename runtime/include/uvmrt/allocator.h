// uvmrt/allocator.h: uvmrt::Allocator<T>, a standard allocator over a
// std::pmr::memory_resource, for standard and abseil containers.
//
//   uvmrt::RegionResource regions(rt.get());        // uvmrt/memory_resource.h
//   std::vector<uint64_t, uvmrt::Allocator<uint64_t>> v{uvmrt::Allocator<uint64_t>(&regions)};
//   absl::flat_hash_map<K, V, absl::Hash<K>, std::equal_to<K>,
//                       uvmrt::Allocator<std::pair<const K, V>>> m(0, {}, {}, &regions);
//
// It is std::pmr::polymorphic_allocator's typed interface with one change:
// the resource travels with the container.  Copying a container (copy
// construction or assignment), moving and swapping keep the source's
// resource, so a copy of a uvmrt-backed container is uvmrt-backed too
// (polymorphic_allocator would copy into the default resource).
//
// A default-constructed Allocator uses std::pmr::get_default_resource().
// Header-only.
#ifndef UVMRT_ALLOCATOR_H_
#define UVMRT_ALLOCATOR_H_

#include <cstddef>
#include <limits>
#include <memory_resource>
#include <new>
#include <type_traits>

namespace uvmrt {

template <class T>
class Allocator {
 public:
  using value_type = T;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using propagate_on_container_copy_assignment = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  using is_always_equal = std::false_type;

  Allocator() noexcept : r_(std::pmr::get_default_resource()) {}
  // Implicit, so that a resource pointer converts to an allocator argument.
  Allocator(std::pmr::memory_resource* r) noexcept : r_(r) {}  // NOLINT
  template <class U>
  Allocator(const Allocator<U>& other) noexcept : r_(other.resource()) {}  // NOLINT

  [[nodiscard]] T* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(r_->allocate(n * sizeof(T), alignof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { r_->deallocate(p, n * sizeof(T), alignof(T)); }

  Allocator select_on_container_copy_construction() const noexcept { return *this; }
  std::pmr::memory_resource* resource() const noexcept { return r_; }

  template <class U>
  friend bool operator==(const Allocator& a, const Allocator<U>& b) noexcept {
    return a.resource() == b.resource() || a.resource()->is_equal(*b.resource());
  }

 private:
  std::pmr::memory_resource* r_;
};

}  // namespace uvmrt

#endif  // UVMRT_ALLOCATOR_H_
