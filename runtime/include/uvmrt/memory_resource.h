// uvmrt/memory_resource.h: a std::pmr::memory_resource over uvmrt regions.
//
// RegionResource hands out memory from regions of one Runtime:
//   - a block of at least Config::own_region_bytes (or aligned beyond a page)
//     gets a region of its own, unmapped when the block is deallocated;
//   - smaller blocks are carved, in order, from shared regions, the first
//     one of 2 MiB and each next one twice as large, up to
//     Config::region_bytes; a region counts against budget + swap once it
//     is mapped, touched or not, so where the next size does not fit a
//     smaller region is mapped.  Deallocating a small block discards the
//     whole pages inside it once they add up to Config::discard_bytes
//     (MADV_DONTNEED: the runtime frees their frames and swap slots), and a
//     shared region whose blocks are all deallocated is unmapped.
// It does not reuse the space of small deallocated blocks: put a std::pmr
// pool resource on top for that,
//
//   uvmrt::RegionResource regions(rt.get());
//   std::pmr::synchronized_pool_resource pool(&regions);
//   std::pmr::vector<Item> v(&pool);
//
// or use uvmrt::Allocator<T> (uvmrt/allocator.h) with either resource.
//
// Thread safety: all members may be called from any thread.  The Runtime
// must outlive the resource.  Exhaustion (Map failing: budget + swap used up
// without overcommit) throws std::bad_alloc.
//
// Header-only; link the uvmrt library.
#ifndef UVMRT_MEMORY_RESOURCE_H_
#define UVMRT_MEMORY_RESOURCE_H_

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory_resource>
#include <mutex>
#include <new>

#include "uvmrt/runtime.h"

namespace uvmrt {

class RegionResource : public std::pmr::memory_resource {
 public:
  struct Config {
    size_t region_bytes = size_t{64} << 20;     // shared regions that small blocks come from
    size_t own_region_bytes = size_t{1} << 20;  // blocks this large get their own region
    size_t discard_bytes = size_t{64} << 10;    // discard a freed small block's pages from this
  };

  explicit RegionResource(Runtime* rt) : RegionResource(rt, Config()) {}
  RegionResource(Runtime* rt, const Config& config)
      : rt_(rt),
        config_(Normalized(config)),
        next_region_bytes_(std::min(config_.region_bytes, kFirstRegionBytes)) {}
  ~RegionResource() override { release(); }
  RegionResource(const RegionResource&) = delete;
  RegionResource& operator=(const RegionResource&) = delete;

  // Unmaps every region, whether or not its blocks were deallocated.
  void release() {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [base, r] : regions_) {
      rt_->Unmap(reinterpret_cast<void*>(base), r.bytes).IgnoreError();
    }
    regions_.clear();
    cur_ = end_ = 0;
    cur_base_ = 0;
  }

  Runtime* runtime() const { return rt_; }

  // Live regions and their bytes.
  size_t regions() const {
    std::lock_guard<std::mutex> l(mu_);
    return regions_.size();
  }
  size_t mapped_bytes() const {
    std::lock_guard<std::mutex> l(mu_);
    size_t n = 0;
    for (const auto& [base, r] : regions_) n += r.bytes;
    return n;
  }

 protected:
  void* do_allocate(size_t bytes, size_t alignment) override {
    if (bytes == 0) bytes = 1;
    if (alignment == 0) alignment = alignof(std::max_align_t);
    std::lock_guard<std::mutex> l(mu_);
    if (bytes >= config_.own_region_bytes || alignment > kPage) {
      const size_t extra = alignment > kPage ? alignment : 0;
      if (bytes > SIZE_MAX - extra - kPage) throw std::bad_alloc();
      const size_t len = RoundUp(bytes, kPage) + extra;
      const uintptr_t base = MapOrThrow(len);
      regions_[base] = Region{len, 1, true};
      return reinterpret_cast<void*>(RoundUp(base, alignment));
    }
    uintptr_t p = RoundUp(cur_, alignment);
    if (cur_ == 0 || p + bytes > end_) {
      // A smaller region if budget + swap has no room for the next one.
      const size_t need = RoundUp(bytes + alignment, kPage);
      size_t len = next_region_bytes_;
      absl::StatusOr<void*> m = rt_->Map(len);
      while (!m.ok() && len / 2 >= need) {
        len /= 2;
        m = rt_->Map(len);
      }
      if (!m.ok()) throw std::bad_alloc();
      const uintptr_t base = reinterpret_cast<uintptr_t>(*m);
      regions_[base] = Region{len, 0, false};
      if (next_region_bytes_ < config_.region_bytes) {
        next_region_bytes_ = std::min(2 * next_region_bytes_, config_.region_bytes);
      }
      RetireCurrent();
      cur_base_ = base;
      cur_ = base;
      end_ = base + len;
      p = RoundUp(cur_, alignment);
    }
    cur_ = p + bytes;
    regions_[cur_base_].live++;
    return reinterpret_cast<void*>(p);
  }

  void do_deallocate(void* ptr, size_t bytes, size_t /*alignment*/) override {
    if (ptr == nullptr) return;
    if (bytes == 0) bytes = 1;
    const uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
    std::lock_guard<std::mutex> l(mu_);
    auto it = regions_.upper_bound(p);
    if (it == regions_.begin()) return;
    --it;
    const uintptr_t base = it->first;
    Region& r = it->second;
    if (p >= base + r.bytes) return;
    if (r.own) {
      rt_->Unmap(reinterpret_cast<void*>(base), r.bytes).IgnoreError();
      regions_.erase(it);
      return;
    }
    r.live--;
    if (r.live == 0 && base != cur_base_) {
      rt_->Unmap(reinterpret_cast<void*>(base), r.bytes).IgnoreError();
      regions_.erase(it);
      return;
    }
    if (r.live == 0) {
      // The current region emptied: discard what was carved and start over.
      madvise(reinterpret_cast<void*>(base), RoundUp(cur_, kPage) - base, MADV_DONTNEED);
      cur_ = base;
      return;
    }
    const uintptr_t lo = RoundUp(p, kPage), hi = (p + bytes) & ~(kPage - 1);
    if (hi > lo && hi - lo >= config_.discard_bytes) {
      madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
    }
  }

  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }

 private:
  static constexpr size_t kPage = 4096;
  static constexpr size_t kFirstRegionBytes = size_t{2} << 20;

  struct Region {
    size_t bytes = 0;
    size_t live = 0;   // blocks not yet deallocated
    bool own = false;  // one block's own region
  };

  static uintptr_t RoundUp(uintptr_t v, size_t a) { return (v + a - 1) & ~(uintptr_t{a} - 1); }

  static Config Normalized(Config c) {
    c.region_bytes = RoundUp(c.region_bytes < kPage ? kPage : c.region_bytes, kPage);
    // Every carved block fits in the first shared region.
    const size_t first = std::min(c.region_bytes, kFirstRegionBytes);
    if (c.own_region_bytes > first / 2) c.own_region_bytes = first / 2;
    if (c.discard_bytes < kPage) c.discard_bytes = kPage;
    return c;
  }

  uintptr_t MapOrThrow(size_t len) {
    absl::StatusOr<void*> m = rt_->Map(len);
    if (!m.ok()) throw std::bad_alloc();
    return reinterpret_cast<uintptr_t>(*m);
  }

  // The current shared region is being replaced: unmap it if it holds no
  // live block.
  void RetireCurrent() {
    if (cur_base_ == 0) return;
    auto it = regions_.find(cur_base_);
    if (it != regions_.end() && it->second.live == 0) {
      rt_->Unmap(reinterpret_cast<void*>(it->first), it->second.bytes).IgnoreError();
      regions_.erase(it);
    }
  }

  Runtime* const rt_;
  const Config config_;
  mutable std::mutex mu_;
  std::map<uintptr_t, Region> regions_;  // by base address
  uintptr_t cur_base_ = 0;               // the shared region being carved
  uintptr_t cur_ = 0;                    // its next free byte
  uintptr_t end_ = 0;                    // its end
  size_t next_region_bytes_;             // size of the next shared region
};

}  // namespace uvmrt

#endif  // UVMRT_MEMORY_RESOURCE_H_
