// fake_swapdev.h: an in-memory swap device for deterministic tests of the
// page daemon, aiodone and the fault paths.
//
// Slots 1..nslots live in memory, allocated on first write (an unwritten slot
// reads as zeros).  Nothing happens on its own:
//   - SubmitWrite copies the data at submit time into a pending write (so a
//     test can check what was written and when) and returns OK, or the next
//     injected submit status (FailNextSubmits: Unavailable is the transient
//     "queue full" failure).
//   - A pending write completes only when the test calls Complete(); its
//     result is the full byte count unless the test gives another one
//     (-EIO, -ENOMEM, -EAGAIN, a short count).  The data reaches the slots
//     only for the pages the result covers (none for an error).
//   - Reap returns the completed writes, blocking until there are some
//     or Kick() is called, as the aiodone thread expects.
//   - Read copies from the slots, or returns the next injected read status
//     (FailNextReads).  A read hook, if set, runs first, in the reading
//     thread, without the fake's lock: tests use it to act in the window
//     where a swap-in holds no lock.
// Every injection is one-shot and queued, so a test can script a sequence of
// outcomes call by call.
//
// Thread safety: every method may be called from any thread.
#ifndef UVMRT_TESTS_FAKE_SWAPDEV_H_
#define UVMRT_TESTS_FAKE_SWAPDEV_H_

#include <sys/uio.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "io/swapdev.h"
#include "uvm/uvm_lock.h"

namespace uvmrt::testing {

class FakeSwapDev final : public io::SwapDev {
 public:
  static constexpr uint64_t kPage = 4096;
  // Complete(): use the write's full byte count as its result.
  static constexpr int64_t kFull = INT64_MIN;

  // One accepted SubmitWrite.
  struct Write {
    uint64_t slot = 0;
    int npages = 0;
    void* cookie = nullptr;
    std::string data;                  // npages * kPage bytes, copied at submit time
    std::vector<const void*> sources;  // where each page was written from

    const char* page(int i) const { return data.data() + static_cast<size_t>(i) * kPage; }
  };

  explicit FakeSwapDev(uint64_t nslots) : nslots_(nslots) {}

  // ---- SwapDev ----

  uint64_t nslots() const override { return nslots_; }

  absl::Status SubmitWrite(uint64_t slot, const iovec* iov, int iovcnt, void* cookie) override {
    uvmrt::MutexLock l(&mu_);
    submit_calls_++;
    if (!submit_faults_.empty()) {
      absl::Status st = submit_faults_.front();
      submit_faults_.pop_front();
      if (!st.ok()) return st;
    }
    if (slot == 0 || iovcnt <= 0 || slot + static_cast<uint64_t>(iovcnt) > nslots_ + 1) {
      ADD_FAILURE() << "FakeSwapDev: SubmitWrite of " << iovcnt << " pages at slot " << slot
                    << " is outside slots 1.." << nslots_;
      return absl::InvalidArgumentError("FakeSwapDev: bad slot range");
    }
    Write w;
    w.slot = slot;
    w.npages = iovcnt;
    w.cookie = cookie;
    for (int i = 0; i < iovcnt; i++) {
      if (iov[i].iov_len != kPage) ADD_FAILURE() << "FakeSwapDev: iov " << i << " is not a page";
      w.data.append(static_cast<const char*>(iov[i].iov_base), kPage);
      w.sources.push_back(iov[i].iov_base);
    }
    submitted_.push_back(w);
    pending_.push_back(std::move(w));
    return absl::OkStatus();
  }

  void Reap(std::vector<io::Completion>* out) override {
    uvmrt::MutexLock l(&mu_);
    while (done_.empty() && !kicked_) cv_.Wait(&mu_);
    kicked_ = false;
    for (const io::Completion& c : done_) out->push_back(c);
    done_.clear();
  }

  void Kick() override {
    uvmrt::MutexLock l(&mu_);
    kicked_ = true;
    cv_.SignalAll();
  }

  absl::Status Read(uint64_t slot, const iovec* iov, int iovcnt) override {
    std::function<void(uint64_t, int)> hook;
    {
      uvmrt::MutexLock l(&mu_);
      hook = read_hook_;
    }
    if (hook) hook(slot, iovcnt);
    uvmrt::MutexLock l(&mu_);
    read_calls_++;
    if (!read_faults_.empty()) {
      absl::Status st = read_faults_.front();
      read_faults_.pop_front();
      if (!st.ok()) return st;
    }
    if (slot == 0 || iovcnt <= 0 || slot + static_cast<uint64_t>(iovcnt) > nslots_ + 1) {
      ADD_FAILURE() << "FakeSwapDev: Read of " << iovcnt << " pages at slot " << slot
                    << " is outside slots 1.." << nslots_;
      return absl::InvalidArgumentError("FakeSwapDev: bad slot range");
    }
    for (int i = 0; i < iovcnt; i++) {
      const std::string& d = slot_ref(slot + static_cast<uint64_t>(i));
      std::memcpy(iov[i].iov_base, d.data(), std::min<size_t>(iov[i].iov_len, kPage));
    }
    return absl::OkStatus();
  }

  // ---- test controls ----

  // The next `count` SubmitWrite calls return `st` (default: the transient
  // Unavailable of a full queue).  Injections queue up in call order.
  void FailNextSubmits(int count = 1,
                       absl::Status st = absl::UnavailableError("FakeSwapDev: queue full")) {
    uvmrt::MutexLock l(&mu_);
    for (int i = 0; i < count; i++) submit_faults_.push_back(st);
  }

  // The next `count` Read calls return `st`.
  void FailNextReads(int count = 1, absl::Status st = absl::DataLossError("FakeSwapDev: EIO")) {
    uvmrt::MutexLock l(&mu_);
    for (int i = 0; i < count; i++) read_faults_.push_back(st);
  }

  // Completes the `n` oldest pending writes (all by default) with `result`:
  // kFull for the full byte count, else bytes written or -errno.  Returns how
  // many writes were completed; they are then returned by Reap.
  size_t Complete(int64_t result = kFull, size_t n = SIZE_MAX) {
    uvmrt::MutexLock l(&mu_);
    size_t done = 0;
    while (done < n && !pending_.empty()) {
      Write w = std::move(pending_.front());
      pending_.pop_front();
      const int64_t full = static_cast<int64_t>(w.npages) * static_cast<int64_t>(kPage);
      const int64_t res = result == kFull ? full : result;
      // The pages the result covers reach the device.
      const int64_t covered = res <= 0 ? 0 : std::min(res, full) / static_cast<int64_t>(kPage);
      for (int64_t i = 0; i < covered; i++) {
        slot_ref(w.slot + static_cast<uint64_t>(i)).assign(w.page(static_cast<int>(i)), kPage);
      }
      done_.push_back(io::Completion{w.cookie, res});
      done++;
    }
    if (done > 0) cv_.SignalAll();
    return done;
  }

  // Runs hook(slot, npages) at the start of every Read, without the lock.
  void set_read_hook(std::function<void(uint64_t, int)> hook) {
    uvmrt::MutexLock l(&mu_);
    read_hook_ = std::move(hook);
  }

  // Writes submitted but not yet completed.
  size_t pending() const {
    uvmrt::MutexLock l(&mu_);
    return pending_.size();
  }
  // Every accepted write, in submit order (completed or not).
  std::vector<Write> submitted() const {
    uvmrt::MutexLock l(&mu_);
    return submitted_;
  }
  int submit_calls() const {
    uvmrt::MutexLock l(&mu_);
    return submit_calls_;
  }
  int read_calls() const {
    uvmrt::MutexLock l(&mu_);
    return read_calls_;
  }
  // A copy of the slot's current contents on the device.
  std::string slot_data(uint64_t slot) const {
    uvmrt::MutexLock l(&mu_);
    auto it = slots_.find(slot);
    return it == slots_.end() ? std::string(kPage, '\0') : it->second;
  }
  // Overwrites a slot directly (e.g. to plant data for a swap-in).
  void set_slot_data(uint64_t slot, const void* data) {
    uvmrt::MutexLock l(&mu_);
    slot_ref(slot).assign(static_cast<const char*>(data), kPage);
  }

 private:
  // The slot's page, created zero-filled on first use.
  std::string& slot_ref(uint64_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::string& d = slots_[slot];
    if (d.empty()) d.assign(kPage, '\0');
    return d;
  }

  const uint64_t nslots_;
  mutable uvmrt::Mutex mu_;
  uvmrt::CondVar cv_;
  std::map<uint64_t, std::string> slots_ ABSL_GUARDED_BY(mu_);  // written slots
  std::deque<Write> pending_ ABSL_GUARDED_BY(mu_);
  std::vector<Write> submitted_ ABSL_GUARDED_BY(mu_);
  std::deque<io::Completion> done_ ABSL_GUARDED_BY(mu_);
  std::deque<absl::Status> submit_faults_ ABSL_GUARDED_BY(mu_);
  std::deque<absl::Status> read_faults_ ABSL_GUARDED_BY(mu_);
  std::function<void(uint64_t, int)> read_hook_ ABSL_GUARDED_BY(mu_);
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  int submit_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int read_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace uvmrt::testing

#endif  // UVMRT_TESTS_FAKE_SWAPDEV_H_
