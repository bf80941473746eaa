// fake_pmap.h: an in-memory user pmap for deterministic tests of the page
// daemon and the fault paths, with no userfaultfd and no memfd.
//
// Each region gets a heap buffer that is both its backing memory and its
// direct view (direct() points into it), a fake base address and a pgoff.
// The fake keeps, per page, the application view's state: mapped or not,
// write-protected or not, poisoned or not; and counts every call by kind.
//   - zerofill memsets the page to 0 and maps it writable;
//   - enter maps it (write-protected if asked), enter_prefix a run up to
//     the first page mapped already; enter and zerofill fail as
//     mapping calls do while a userfaultfd event is unread
//     (FailNextMappings); remove and release unmap it;
//   - release fills the page with kPoisonByte, as a hole punch loses the
//     data: a test notices stale data being read back after a free.  A new
//     region's buffer starts out filled with kPoisonByte for the same reason.
// is_referenced keeps the Pmap default (the PG_PMAP_REF bit): a test sets the
// bit on a page to simulate a reference.  enter_run and zerofill_run keep the
// defaults too (one enter or zerofill per page), so counts are per page.
//
// A hook, if set, runs after each call is recorded, in the calling thread,
// without the fake's lock: tests use it to change the page queues in the
// middle of a scan.
//
// Thread safety: every method may be called from any thread.
#ifndef UVMRT_TESTS_FAKE_PMAP_H_
#define UVMRT_TESTS_FAKE_PMAP_H_

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "uvm/uvm_aobj.h"
#include "uvm/uvm_lock.h"
#include "uvm/uvm_page.h"
#include "uvm/uvm_pmap.h"

namespace uvmrt::testing {

class FakePmap final : public uvm::Pmap {
 public:
  static constexpr unsigned char kPoisonByte = 0xEE;
  static constexpr uintptr_t kFirstBase = uintptr_t{0x7f0000000000};

  enum Kind {
    kCreateView,
    kDestroyView,
    kFreeRange,
    kEnter,
    kEnterPrefix,
    kZerofill,
    kRemove,
    kUnprotect,
    kRelease,
    kWake,
    kPoison,
    kPlace,
    kNumKinds
  };

  struct Call {
    Kind kind;
    const uvm::Region* region;
    uint64_t idx;
    uint64_t n;
    bool wp;
  };

  // The application view's state of one page.
  struct PageState {
    bool mapped = false;
    bool wp = false;        // mapped write-protected
    bool poisoned = false;  // touching it raises SIGBUS
  };

  explicit FakePmap(bool tracks_modify = true) : tracks_modify_(tracks_modify) {}

  // ---- Pmap ----

  absl::Status create_view(uvm::Region& r, AddressTaken /*taken*/) override {
    {
      uvmrt::MutexLock l(&mu_);
      auto v = std::make_unique<View>();
      v->npages = r.npages();
      v->mem.reset(new char[r.npages() * uvm::PAGE_SIZE]);
      std::memset(v->mem.get(), kPoisonByte, r.npages() * uvm::PAGE_SIZE);
      v->pages.resize(r.npages());
      r.set_base(next_base_);
      r.set_pgoff(next_pgoff_);
      next_base_ += (r.npages() + 1) * uvm::PAGE_SIZE;  // a guard page between views
      next_pgoff_ += r.npages();
      views_[&r] = std::move(v);
    }
    record({kCreateView, &r, 0, r.npages(), false});
    return absl::OkStatus();
  }

  void destroy_view(uvm::Region& r) override {
    {
      uvmrt::MutexLock l(&mu_);
      View* v = view(r);
      if (v != nullptr) {
        if (v->destroyed) ADD_FAILURE() << "FakePmap: destroy_view twice";
        v->destroyed = true;
        for (PageState& p : v->pages) p = PageState{};
      }
    }
    record({kDestroyView, &r, 0, r.npages(), false});
  }

  void free_range(uvm::Region& r) override {
    {
      uvmrt::MutexLock l(&mu_);
      View* v = view(r);
      if (v != nullptr) {
        if (!v->destroyed) ADD_FAILURE() << "FakePmap: free_range before destroy_view";
        views_.erase(&r);
      }
    }
    record({kFreeRange, &r, 0, r.npages(), false});
  }

  char* direct(const uvm::Region& r, uint64_t idx) override {
    uvmrt::MutexLock l(&mu_);
    View* v = view(r);
    if (v == nullptr || idx >= v->npages) {
      ADD_FAILURE() << "FakePmap: direct() on page " << idx << " outside any live view";
      return nullptr;
    }
    return v->mem.get() + idx * uvm::PAGE_SIZE;
  }

  absl::Status enter(const uvm::Region& r, uint64_t idx, bool wp) override {
    absl::Status st;
    {
      uvmrt::MutexLock l(&mu_);
      PageState* p = app_page(r, idx, "enter");
      if (fail_enters_ > 0) {
        st = injected_failure();
      } else if (p != nullptr) {
        p->mapped = true;
        p->wp = wp;
      }
    }
    record({kEnter, &r, idx, 1, wp});
    return st;
  }

  // Maps up to the first page mapped already, as UFFDIO_CONTINUE stops at
  // it; nothing while a mapping call would be refused.
  uint64_t enter_prefix(const uvm::Region& r, uint64_t idx, uint64_t n, bool wp) override {
    uint64_t done = 0;
    {
      uvmrt::MutexLock l(&mu_);
      if (fail_enters_ == 0) {
        for (; done < n; done++) {
          PageState* p = app_page(r, idx + done, "enter_prefix");
          if (p == nullptr || p->mapped) break;
          p->mapped = true;
          p->wp = wp;
        }
      }
    }
    record({kEnterPrefix, &r, idx, n, wp});
    return done;
  }

  absl::Status zerofill(const uvm::Region& r, uint64_t idx) override {
    absl::Status st;
    {
      uvmrt::MutexLock l(&mu_);
      PageState* p = app_page(r, idx, "zerofill");
      if (fail_enters_ > 0) {
        st = injected_failure();
      } else if (p != nullptr) {
        std::memset(view(r)->mem.get() + idx * uvm::PAGE_SIZE, 0, uvm::PAGE_SIZE);
        p->mapped = true;
        p->wp = false;
      }
    }
    record({kZerofill, &r, idx, 1, false});
    return st;
  }

  bool remove(const uvm::Region& r, uint64_t idx, uint64_t n) override {
    bool all = true;
    {
      uvmrt::MutexLock l(&mu_);
      if (miss_removes_ > 0) {
        miss_removes_--;
        all = false;
      }
      for (uint64_t i = idx; i < idx + n && all; i++) {
        PageState* p = app_page(r, i, "remove");
        if (p != nullptr) p->mapped = p->wp = false;
      }
    }
    record({kRemove, &r, idx, n, false});
    return all;
  }

  absl::Status unprotect(const uvm::Region& r, uint64_t idx) override {
    {
      uvmrt::MutexLock l(&mu_);
      PageState* p = app_page(r, idx, "unprotect");
      if (p != nullptr) p->wp = false;
    }
    record({kUnprotect, &r, idx, 1, false});
    return absl::OkStatus();
  }

  void release(const uvm::Region& r, uint64_t idx, uint64_t n) override {
    {
      uvmrt::MutexLock l(&mu_);
      View* v = view(r);
      if (v == nullptr || idx + n > v->npages) {
        ADD_FAILURE() << "FakePmap: release of pages " << idx << ".." << idx + n
                      << " outside any live view";
      } else {
        std::memset(v->mem.get() + idx * uvm::PAGE_SIZE, kPoisonByte, n * uvm::PAGE_SIZE);
        for (uint64_t i = idx; i < idx + n; i++) v->pages[i].mapped = v->pages[i].wp = false;
      }
    }
    record({kRelease, &r, idx, n, false});
  }

  void wake(const uvm::Region& r, uint64_t idx) override { record({kWake, &r, idx, 1, false}); }

  absl::Status poison(const uvm::Region& r, uint64_t idx) override {
    {
      uvmrt::MutexLock l(&mu_);
      PageState* p = app_page(r, idx, "poison");
      if (p != nullptr) *p = PageState{false, false, true};
    }
    record({kPoison, &r, idx, 1, false});
    return absl::OkStatus();
  }

  // Writes the pages into the direct view, as the base does (copy_run
  // places, then maps with enter_run).
  void place_run(const uvm::Region& r, uint64_t idx, uint64_t n, const char* src) override {
    uvm::Pmap::place_run(r, idx, n, src);
    record({kPlace, &r, idx, n, false});
  }

  bool tracks_modify() const override { return tracks_modify_; }

  // ---- test controls and observations ----

  // Calls of one kind so far.
  int count(Kind k) const {
    uvmrt::MutexLock l(&mu_);
    return counts_[k];
  }
  // Pages named by calls of one kind so far (remove and release name ranges).
  uint64_t pages(Kind k) const {
    uvmrt::MutexLock l(&mu_);
    return page_counts_[k];
  }
  // The application view's state of page idx of r (all false once r's view is gone).
  PageState page(const uvm::Region& r, uint64_t idx) const {
    uvmrt::MutexLock l(&mu_);
    auto it = views_.find(&r);
    if (it == views_.end() || idx >= it->second->npages) return PageState{};
    return it->second->pages[idx];
  }
  bool mapped(const uvm::Region& r, uint64_t idx) const { return page(r, idx).mapped; }
  bool write_protected(const uvm::Region& r, uint64_t idx) const { return page(r, idx).wp; }
  // Every call so far, in order.
  std::vector<Call> calls() const {
    uvmrt::MutexLock l(&mu_);
    return calls_;
  }
  // The ranges (idx, n) of the calls of one kind, after the first `skip` of
  // them, in order.
  std::vector<std::pair<uint64_t, uint64_t>> ranges(Kind k, int skip = 0) const {
    uvmrt::MutexLock l(&mu_);
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (const Call& c : calls_) {
      if (c.kind == k && skip-- <= 0) out.emplace_back(c.idx, c.n);
    }
    return out;
  }
  // The next n mapping calls (enter, zerofill) map nothing and return
  // Unavailable, as they do while a userfaultfd event is unread.
  void FailNextMappings(int n) {
    uvmrt::MutexLock l(&mu_);
    fail_enters_ = n;
    broken_ = false;
  }
  // The next n mapping calls map nothing and fail for good (Internal), as
  // a mapping call the kernel refuses for another reason.
  void BreakNextMappings(int n) {
    uvmrt::MutexLock l(&mu_);
    fail_enters_ = n;
    broken_ = true;
  }
  // The next n unmapping calls unmap nothing and say so, as a call made
  // where the region no longer is (moved by an mremap not yet read).
  void MissNextRemoves(int n) {
    uvmrt::MutexLock l(&mu_);
    miss_removes_ = n;
  }
  void set_hook(std::function<void(const Call&)> hook) {
    uvmrt::MutexLock l(&mu_);
    hook_ = std::move(hook);
  }

 private:
  struct View {
    uint64_t npages = 0;
    bool destroyed = false;
    std::unique_ptr<char[]> mem;
    std::vector<PageState> pages;
  };

  View* view(const uvm::Region& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = views_.find(&r);
    return it == views_.end() ? nullptr : it->second.get();
  }

  // The app-view state of a page the runtime is about to change; a call on a
  // destroyed view or outside the region is a contract violation.
  PageState* app_page(const uvm::Region& r, uint64_t idx, const char* what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    View* v = view(r);
    if (v == nullptr || idx >= v->npages) {
      ADD_FAILURE() << "FakePmap: " << what << " on page " << idx << " outside any live view";
      return nullptr;
    }
    if (v->destroyed && std::strcmp(what, "remove") != 0) {
      ADD_FAILURE() << "FakePmap: " << what << " on page " << idx << " after destroy_view";
      return nullptr;
    }
    return &v->pages[idx];
  }

  void record(const Call& c) ABSL_LOCKS_EXCLUDED(mu_) {
    std::function<void(const Call&)> hook;
    {
      uvmrt::MutexLock l(&mu_);
      counts_[c.kind]++;
      page_counts_[c.kind] += c.n;
      calls_.push_back(c);
      hook = hook_;
    }
    if (hook) hook(c);
  }

  const bool tracks_modify_;
  mutable uvmrt::Mutex mu_;
  std::map<const uvm::Region*, std::unique_ptr<View>> views_ ABSL_GUARDED_BY(mu_);
  uintptr_t next_base_ ABSL_GUARDED_BY(mu_) = kFirstBase;
  uint64_t next_pgoff_ ABSL_GUARDED_BY(mu_) = 0;
  int counts_[kNumKinds] ABSL_GUARDED_BY(mu_) = {};
  uint64_t page_counts_[kNumKinds] ABSL_GUARDED_BY(mu_) = {};
  std::vector<Call> calls_ ABSL_GUARDED_BY(mu_);
  std::function<void(const Call&)> hook_ ABSL_GUARDED_BY(mu_);
  int fail_enters_ ABSL_GUARDED_BY(mu_) = 0;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;  // fail_enters_ fail for good
  // One of the next fail_enters_ mapping calls fails, as the last of
  // FailNextMappings or BreakNextMappings said.
  absl::Status injected_failure() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    fail_enters_--;
    return broken_ ? absl::InternalError("FakePmap: injected: the mapping call failed")
                   : absl::UnavailableError("FakePmap: injected: userfaultfd event pending");
  }
  int miss_removes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace uvmrt::testing

#endif  // UVMRT_TESTS_FAKE_PMAP_H_
