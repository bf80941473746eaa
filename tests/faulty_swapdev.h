// faulty_swapdev.h: a swap device that wraps the runtime's real one and
// injects I/O faults, and helpers for the tests that use it.
//
// FaultySwapDev owns the real device (UringSwapDev) and forwards every call
// to it, except where a test has armed a fault:
//   writes  - a completion of -EIO, -EAGAIN, -ENOMEM or a short byte count,
//             either instead of the write (nothing reaches the file) or after
//             it (the data is on the file, the completion still says it
//             failed); or SubmitWrite itself returns Unavailable (transient).
//             Armed for the next N writes, or for every k-th write.
//   reads   - -EIO (DataLoss, nothing read) or a short read (part of the data
//             read, the rest of the buffer scribbled, DataLoss), for the next
//             N reads or for reads of one slot.
//   latency - a delay, drawn uniformly from [min, max], between a write's
//             submission and the delivery of its completion, and before each
//             read.
//
// Completions: a pump thread reaps the real device's completions and queues
// them, each with its due time; Reap (the runtime's aiodone thread)
// returns the ones that are due, sleeping until the next is due, until one
// is, or until Kick().  Injected completions go through the same queue.
//
// Bookkeeping, so that a test can prove its injection fired and check what
// the runtime did about it:
//   - counters() of every injection and every call (they live in a
//     shared_ptr that outlives the device, for tests that destroy the
//     runtime);
//   - the slots of writes that failed hard (EIO or short): a later write to
//     or read from one of them is a violation, counted and described;
//   - the first 8-byte word of each page of every write, so a test can find
//     the slot that holds a page with known content (SlotHolding), and so
//     that pages whose write failed can be tracked until they are written
//     successfully elsewhere (failed_pages_pending()).
//
// Thread safety: every method may be called from any thread.
//
// Also here, for the reliability tests: RunWithWatchdog (a hang becomes a
// clear failure), RunInChild (a forked child with a deadline, for outcomes
// that end the process, such as SIGBUS), and CatchSigbus (SIGBUS caught per
// thread with sigsetjmp/siglongjmp).
#ifndef UVMRT_TESTS_FAULTY_SWAPDEV_H_
#define UVMRT_TESTS_FAULTY_SWAPDEV_H_

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "io/swapdev.h"
#include "runtime/runtime_internal.h"
#include "tests/test_util.h"

namespace uvmrt::testing {

enum class WriteFault {
  kNone,
  kEIO,                // completion -EIO: a hard error
  kEAGAIN,             // completion -EAGAIN: transient
  kENOMEM,             // completion -ENOMEM: transient
  kShort,              // completion with fewer bytes than asked: a hard error
  kSubmitUnavailable,  // SubmitWrite returns Unavailable: transient, no completion
};

// Whether a faulted write reaches the file before its completion lies.
enum class FaultTiming { kInsteadOfWrite, kAfterWrite };

enum class ReadFault { kNone, kEIO, kShort };

inline const char* WriteFaultName(WriteFault f) {
  switch (f) {
    case WriteFault::kNone:
      return "none";
    case WriteFault::kEIO:
      return "EIO";
    case WriteFault::kEAGAIN:
      return "EAGAIN";
    case WriteFault::kENOMEM:
      return "ENOMEM";
    case WriteFault::kShort:
      return "Short";
    case WriteFault::kSubmitUnavailable:
      return "SubmitUnavailable";
  }
  return "?";
}

// Everything the device did, as counts.  Atomics: read them at any time.
struct FaultyCounters {
  std::atomic<int64_t> submits{0};           // SubmitWrite calls
  std::atomic<int64_t> forwarded_writes{0};  // writes handed to the real device
  std::atomic<int64_t> real_unavailable{0};  // the real device said Unavailable
  std::atomic<int64_t> injected_unavailable{0};
  std::atomic<int64_t> injected_eio_writes{0};
  std::atomic<int64_t> injected_eagain_writes{0};
  std::atomic<int64_t> injected_enomem_writes{0};
  std::atomic<int64_t> injected_short_writes{0};
  std::atomic<int64_t> injected_write_pages{0};  // pages in writes given an error
  std::atomic<int64_t> hard_failed_pages{0};     // pages in EIO/short writes
  std::atomic<int64_t> real_write_errors{0};     // errors from the real device
  std::atomic<int64_t> completions_queued{0};    // accepted writes (real or injected)
  std::atomic<int64_t> completions_delivered{0};
  std::atomic<int64_t> delayed_completions{0};  // delivered later than they arrived
  std::atomic<int64_t> reads{0};
  std::atomic<int64_t> async_reads{0};  // of which SubmitRead
  std::atomic<int64_t> injected_eio_reads{0};
  std::atomic<int64_t> injected_short_reads{0};
  std::atomic<int64_t> delayed_reads{0};
  std::atomic<int64_t> bad_slot_writes{0};  // violations: a write to a slot that failed hard
  std::atomic<int64_t> bad_slot_reads{0};   // violations: a read of a slot that failed hard
  std::atomic<int64_t> in_flight_at_destruction{-1};  // set by the destructor

  int64_t injected_write_errors() const {
    return injected_eio_writes + injected_eagain_writes + injected_enomem_writes +
           injected_short_writes;
  }
  std::string ToString() const {
    return absl::StrFormat(
        "submits=%d forwarded=%d unavailable(real=%d injected=%d) injected(eio=%d eagain=%d "
        "enomem=%d short=%d pages=%d hard_pages=%d) real_errors=%d completions(queued=%d "
        "delivered=%d delayed=%d) reads=%d (async %d) injected_reads(eio=%d short=%d) "
        "delayed_reads=%d "
        "violations(writes=%d reads=%d)",
        submits.load(), forwarded_writes.load(), real_unavailable.load(),
        injected_unavailable.load(), injected_eio_writes.load(), injected_eagain_writes.load(),
        injected_enomem_writes.load(), injected_short_writes.load(), injected_write_pages.load(),
        hard_failed_pages.load(), real_write_errors.load(), completions_queued.load(),
        completions_delivered.load(), delayed_completions.load(), reads.load(), async_reads.load(),
        injected_eio_reads.load(), injected_short_reads.load(), delayed_reads.load(),
        bad_slot_writes.load(), bad_slot_reads.load());
  }
};

class FaultySwapDev final : public io::SwapDev {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr int64_t kPageBytes = 4096;

  explicit FaultySwapDev(std::unique_ptr<io::SwapDev> real)
      : real_(std::move(real)), counters_(std::make_shared<FaultyCounters>()) {
    pump_ = std::thread([this] { pump_loop(); });
  }

  ~FaultySwapDev() override {
    stop_.store(true);
    real_->Kick();
    pump_.join();
    std::lock_guard<std::mutex> l(mu_);
    counters_->in_flight_at_destruction =
        static_cast<int64_t>(inflight_.size() + reads_inflight_.size() + queue_.size());
  }

  FaultySwapDev(const FaultySwapDev&) = delete;
  FaultySwapDev& operator=(const FaultySwapDev&) = delete;

  // ---- arming faults ----

  // The next `n` SubmitWrite calls get fault `f`.
  void FailNextWrites(int n, WriteFault f, FaultTiming t = FaultTiming::kInsteadOfWrite) {
    std::lock_guard<std::mutex> l(mu_);
    next_writes_ = n;
    next_write_fault_ = f;
    next_write_timing_ = t;
  }

  // Every k-th SubmitWrite call from now on gets fault `f`, at most `limit`
  // times (-1: no limit).
  void FailEveryKthWrite(int k, WriteFault f, FaultTiming t = FaultTiming::kInsteadOfWrite,
                         int64_t limit = -1) {
    std::lock_guard<std::mutex> l(mu_);
    every_k_ = k;
    every_count_ = 0;
    every_limit_ = limit;
    every_fault_ = f;
    every_timing_ = t;
  }

  void ClearWriteFaults() {
    std::lock_guard<std::mutex> l(mu_);
    next_writes_ = 0;
    every_k_ = 0;
  }

  // Armed write faults not yet fired (FailNextWrites, and FailEveryKthWrite
  // with a limit).
  int64_t pending_write_faults() const {
    std::lock_guard<std::mutex> l(mu_);
    return next_writes_ + (every_k_ > 0 && every_limit_ > 0 ? every_limit_ : 0);
  }

  // Completions are delivered between min and max after submission.
  void SetWriteLatency(std::chrono::microseconds min, std::chrono::microseconds max) {
    std::lock_guard<std::mutex> l(mu_);
    write_lat_min_ = min;
    write_lat_max_ = max;
  }

  // The next `n` reads get fault `f`.
  void FailNextReads(int n, ReadFault f) {
    std::lock_guard<std::mutex> l(mu_);
    next_reads_ = n;
    next_read_fault_ = f;
  }

  // Reads that cover `slot` get fault `f`, `n` times (-1: every time).
  void FailReadsOfSlot(uint64_t slot, ReadFault f, int n = -1) {
    std::lock_guard<std::mutex> l(mu_);
    slot_faults_[slot] = SlotFault{f, n};
  }

  void ClearReadFaults() {
    std::lock_guard<std::mutex> l(mu_);
    next_reads_ = 0;
    slot_faults_.clear();
  }

  int64_t pending_read_faults() const {
    std::lock_guard<std::mutex> l(mu_);
    int64_t n = next_reads_;
    for (const auto& [slot, sf] : slot_faults_) n += sf.remaining > 0 ? sf.remaining : 0;
    return n;
  }

  // Each read sleeps between min and max first.
  void SetReadLatency(std::chrono::microseconds min, std::chrono::microseconds max) {
    std::lock_guard<std::mutex> l(mu_);
    read_lat_min_ = min;
    read_lat_max_ = max;
  }

  // ---- observations ----

  const FaultyCounters& counters() const { return *counters_; }
  std::shared_ptr<const FaultyCounters> shared_counters() const { return counters_; }

  // The slot that holds, from the latest successful write, a page whose
  // first 8-byte word is `first_word`.
  std::optional<uint64_t> SlotHolding(uint64_t first_word) const {
    std::lock_guard<std::mutex> l(mu_);
    auto it = content_slot_.find(first_word);
    if (it == content_slot_.end()) return std::nullopt;
    return it->second;
  }

  // Slots of writes that failed hard (EIO, short).
  std::set<uint64_t> hard_failed_slots() const {
    std::lock_guard<std::mutex> l(mu_);
    return bad_slots_;
  }

  // Pages (by first word) whose write failed and that no successful write
  // has stored since.
  size_t failed_pages_pending() const {
    std::lock_guard<std::mutex> l(mu_);
    return failed_words_.size();
  }
  // Pages whose write failed and that were later written successfully, to a
  // slot that is not one that failed hard.
  int64_t failed_pages_rewritten() const {
    std::lock_guard<std::mutex> l(mu_);
    return failed_rewritten_;
  }

  // What the violations were (empty if none).
  std::string violations() const {
    std::lock_guard<std::mutex> l(mu_);
    return violations_;
  }

  // ---- SwapDev ----

  uint64_t nslots() const override { return real_->nslots(); }

  absl::Status SubmitWrite(uint64_t slot, const iovec* iov, int iovcnt, void* cookie) override {
    counters_->submits++;
    const Clock::time_point now = Clock::now();
    WriteFault fault = WriteFault::kNone;
    FaultTiming timing = FaultTiming::kInsteadOfWrite;
    Inflight info;
    info.slot = slot;
    info.npages = iovcnt;
    info.want = 0;
    for (int i = 0; i < iovcnt; i++) {
      info.want += static_cast<int64_t>(iov[i].iov_len);
      // The pages are busy while they are written: their content is stable.
      uint64_t w;
      memcpy(&w, iov[i].iov_base, sizeof(w));
      info.words.push_back(w);
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      for (uint64_t s = slot; s < slot + static_cast<uint64_t>(iovcnt); s++) {
        if (bad_slots_.count(s) != 0) {
          counters_->bad_slot_writes++;
          violations_ +=
              absl::StrFormat("write of %d pages at slot %d covers bad slot %d; ", iovcnt, slot, s);
          break;
        }
      }
      if (next_writes_ > 0) {
        next_writes_--;
        fault = next_write_fault_;
        timing = next_write_timing_;
      } else if (every_k_ > 0 && every_limit_ != 0 && ++every_count_ % every_k_ == 0) {
        if (every_limit_ > 0) every_limit_--;
        fault = every_fault_;
        timing = every_timing_;
      }
      info.due = now + draw(write_lat_min_, write_lat_max_);
    }
    if (fault == WriteFault::kSubmitUnavailable) {
      counters_->injected_unavailable++;
      note_failed(info, /*hard=*/false);
      return absl::UnavailableError("FaultySwapDev: injected: swap write queue full");
    }
    if (fault != WriteFault::kNone) {
      info.result = injected_result(fault, info.want);
      count_injection(fault, info.npages);
      note_failed(info, /*hard=*/fault == WriteFault::kEIO || fault == WriteFault::kShort);
    }
    if (fault == WriteFault::kNone || timing == FaultTiming::kAfterWrite) {
      {
        // Registered before the real write can complete (the pump may reap
        // it at once).
        std::lock_guard<std::mutex> l(mu_);
        inflight_[cookie] = info;
      }
      absl::Status st = real_->SubmitWrite(slot, iov, iovcnt, cookie);
      if (!st.ok()) {
        std::lock_guard<std::mutex> l(mu_);
        inflight_.erase(cookie);
        if (absl::IsUnavailable(st)) counters_->real_unavailable++;
        // An injected fault that did not reach the device did not happen.
        if (fault != WriteFault::kNone) uncount_injection(fault, info);
        return st;
      }
      counters_->forwarded_writes++;
      counters_->completions_queued++;
      return absl::OkStatus();
    }
    // Instead of the write: only the completion.
    {
      std::lock_guard<std::mutex> l(mu_);
      queue_.emplace(info.due, Queued{cookie, info.result, info, now});
      counters_->completions_queued++;
    }
    cv_.notify_all();
    return absl::OkStatus();
  }

  void Reap(std::vector<io::Completion>* out) override {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      const Clock::time_point now = Clock::now();
      while (!queue_.empty() && queue_.begin()->first <= now) {
        Queued q = std::move(queue_.begin()->second);
        queue_.erase(queue_.begin());
        if (!q.read) deliver_locked(q, now);
        out->push_back(io::Completion{q.cookie, q.result, q.read});
      }
      if (!out->empty() || kicked_) {
        kicked_ = false;
        return;
      }
      if (queue_.empty()) {
        cv_.wait(l);
      } else {
        cv_.wait_until(l, queue_.begin()->first);
      }
    }
  }

  void Kick() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      kicked_ = true;
    }
    cv_.notify_all();
  }

  absl::Status Read(uint64_t slot, const iovec* iov, int iovcnt) override {
    counters_->reads++;
    std::chrono::microseconds lat{0};
    const ReadFault fault = pick_read_fault(slot, iovcnt, &lat);
    if (lat.count() > 0) {
      counters_->delayed_reads++;
      std::this_thread::sleep_for(lat);
    }
    if (fault == ReadFault::kEIO) {
      counters_->injected_eio_reads++;
      return absl::DataLossError(
          absl::StrFormat("swap read of slot %d failed: %s (injected)", slot, strerror(EIO)));
    }
    if (fault == ReadFault::kShort) {
      counters_->injected_short_reads++;
      // Read only the first half of the data; the rest of the buffer holds
      // garbage, as after a real short read.
      std::vector<iovec> part(iov, iov + iovcnt);
      int64_t want = 0;
      for (const iovec& v : part) want += static_cast<int64_t>(v.iov_len);
      int64_t left = (want / 2) & ~int64_t{511};
      std::vector<iovec> head;
      for (const iovec& v : part) {
        if (left <= 0) break;
        const int64_t n = std::min<int64_t>(left, static_cast<int64_t>(v.iov_len));
        head.push_back(iovec{v.iov_base, static_cast<size_t>(n)});
        left -= n;
      }
      if (!head.empty()) {
        // Its own status does not matter: the read is short either way.
        (void)real_->Read(slot, head.data(), static_cast<int>(head.size()));
      }
      int64_t skip = (want / 2) & ~int64_t{511};
      for (const iovec& v : part) {
        const int64_t n = static_cast<int64_t>(v.iov_len);
        if (skip >= n) {
          skip -= n;
          continue;
        }
        memset(static_cast<char*>(v.iov_base) + skip, 0xA5, static_cast<size_t>(n - skip));
        skip = 0;
      }
      return absl::DataLossError(absl::StrFormat("short swap read at slot %d: %d of %d bytes", slot,
                                                 (want / 2) & ~int64_t{511}, want));
    }
    return real_->Read(slot, iov, iovcnt);
  }

  bool async_reads() const override { return real_->async_reads(); }
  void RegisterBuffer(void* base, size_t len) override { real_->RegisterBuffer(base, len); }
  void PlugWrites() override { real_->PlugWrites(); }
  void UnplugWrites() override { real_->UnplugWrites(); }
  void SubmitQueued() override { real_->SubmitQueued(); }

  // The same faults as Read, injected into the completion of a read the
  // real device performs; latency delays the completion.
  absl::Status SubmitRead(uint64_t slot, const iovec* iov, int iovcnt, void* cookie) override {
    counters_->reads++;
    counters_->async_reads++;
    ReadInflight info;
    info.slot = slot;
    for (int i = 0; i < iovcnt; i++) info.want += static_cast<int64_t>(iov[i].iov_len);
    std::chrono::microseconds lat{0};
    info.fault = pick_read_fault(slot, iovcnt, &lat);
    info.due = Clock::now() + lat;
    if (lat.count() > 0) counters_->delayed_reads++;
    {
      std::lock_guard<std::mutex> l(mu_);
      reads_inflight_[cookie] = info;
    }
    absl::Status st = real_->SubmitRead(slot, iov, iovcnt, cookie);
    if (!st.ok()) {
      std::lock_guard<std::mutex> l(mu_);
      reads_inflight_.erase(cookie);
      if (lat.count() > 0) counters_->delayed_reads--;
    }
    return st;
  }

 private:
  struct ReadInflight {
    uint64_t slot = 0;
    int64_t want = 0;
    ReadFault fault = ReadFault::kNone;
    Clock::time_point due;
  };

  // Which fault a read of slots slot..slot+iovcnt-1 gets, and its latency.
  ReadFault pick_read_fault(uint64_t slot, int iovcnt, std::chrono::microseconds* lat) {
    ReadFault fault = ReadFault::kNone;
    std::lock_guard<std::mutex> l(mu_);
    for (uint64_t s = slot; s < slot + static_cast<uint64_t>(iovcnt); s++) {
      if (bad_slots_.count(s) != 0) {
        counters_->bad_slot_reads++;
        violations_ += absl::StrFormat("read of slot %d, which failed hard; ", s);
        break;
      }
      auto it = slot_faults_.find(s);
      if (fault == ReadFault::kNone && it != slot_faults_.end() && it->second.remaining != 0) {
        fault = it->second.fault;
        if (it->second.remaining > 0) it->second.remaining--;
      }
    }
    if (fault == ReadFault::kNone && next_reads_ > 0) {
      next_reads_--;
      fault = next_read_fault_;
    }
    *lat = draw(read_lat_min_, read_lat_max_);
    return fault;
  }

  struct Inflight {
    uint64_t slot = 0;
    int npages = 0;
    int64_t want = 0;
    int64_t result = INT64_MIN;  // INT64_MIN: the real result
    Clock::time_point due;
    std::vector<uint64_t> words;  // first word of each page
  };
  struct Queued {
    void* cookie;
    int64_t result;
    Inflight info;
    Clock::time_point arrived;
    bool read = false;
  };
  struct SlotFault {
    ReadFault fault;
    int remaining;
  };

  static int64_t injected_result(WriteFault f, int64_t want) {
    switch (f) {
      case WriteFault::kEIO:
        return -EIO;
      case WriteFault::kEAGAIN:
        return -EAGAIN;
      case WriteFault::kENOMEM:
        return -ENOMEM;
      case WriteFault::kShort:
        // All but the last page, or half of a one-page write.
        return want > kPageBytes ? want - kPageBytes : want / 2;
      default:
        return want;
    }
  }

  void count_injection(WriteFault f, int npages) {
    switch (f) {
      case WriteFault::kEIO:
        counters_->injected_eio_writes++;
        counters_->hard_failed_pages += npages;
        break;
      case WriteFault::kEAGAIN:
        counters_->injected_eagain_writes++;
        break;
      case WriteFault::kENOMEM:
        counters_->injected_enomem_writes++;
        break;
      case WriteFault::kShort:
        counters_->injected_short_writes++;
        counters_->hard_failed_pages += npages;
        break;
      default:
        break;
    }
    counters_->injected_write_pages += npages;
  }

  // => mu_ held.
  void uncount_injection(WriteFault f, const Inflight& info) {
    switch (f) {
      case WriteFault::kEIO:
        counters_->injected_eio_writes--;
        counters_->hard_failed_pages -= info.npages;
        break;
      case WriteFault::kEAGAIN:
        counters_->injected_eagain_writes--;
        break;
      case WriteFault::kENOMEM:
        counters_->injected_enomem_writes--;
        break;
      case WriteFault::kShort:
        counters_->injected_short_writes--;
        counters_->hard_failed_pages -= info.npages;
        break;
      default:
        break;
    }
    counters_->injected_write_pages -= info.npages;
    for (uint64_t s = info.slot; s < info.slot + static_cast<uint64_t>(info.npages); s++) {
      bad_slots_.erase(s);
    }
    for (uint64_t w : info.words) failed_words_.erase(w);
  }

  // Records the pages of a write that is going to fail.
  void note_failed(const Inflight& info, bool hard) {
    std::lock_guard<std::mutex> l(mu_);
    if (hard) {
      for (uint64_t s = info.slot; s < info.slot + static_cast<uint64_t>(info.npages); s++) {
        bad_slots_.insert(s);
      }
    }
    for (uint64_t w : info.words) {
      failed_words_.insert(w);
      content_slot_.erase(w);
    }
  }

  // A completion reaches the runtime.
  // => mu_ held.
  void deliver_locked(const Queued& q, Clock::time_point now) {
    counters_->completions_delivered++;
    if (now - q.arrived > std::chrono::milliseconds(1)) counters_->delayed_completions++;
    if (q.result != q.info.want) return;
    for (int i = 0; i < q.info.npages; i++) {
      const uint64_t w = q.info.words[static_cast<size_t>(i)];
      const uint64_t s = q.info.slot + static_cast<uint64_t>(i);
      content_slot_[w] = s;
      if (failed_words_.erase(w) != 0 && bad_slots_.count(s) == 0) failed_rewritten_++;
    }
  }

  // A read completion from the real device, with its injected fault.
  // => mu_ held.
  void queue_read_locked(const io::Completion& rc, Clock::time_point now) {
    auto it = reads_inflight_.find(rc.cookie);
    if (it == reads_inflight_.end()) {
      ADD_FAILURE() << "FaultySwapDev: completion for an unknown read";
      return;
    }
    const ReadInflight info = it->second;
    reads_inflight_.erase(it);
    int64_t result = rc.result;
    if (info.fault == ReadFault::kEIO) {
      counters_->injected_eio_reads++;
      result = -EIO;
    } else if (info.fault == ReadFault::kShort) {
      counters_->injected_short_reads++;
      result = (info.want / 2) & ~int64_t{511};
    }
    queue_.emplace(std::max(info.due, now), Queued{rc.cookie, result, Inflight{}, now, true});
  }

  void pump_loop() {
    std::vector<io::Completion> got;
    while (!stop_.load()) {
      got.clear();
      real_->Reap(&got);
      if (got.empty()) continue;
      const Clock::time_point now = Clock::now();
      {
        std::lock_guard<std::mutex> l(mu_);
        for (const io::Completion& wc : got) {
          if (wc.read) {
            queue_read_locked(wc, now);
            continue;
          }
          auto it = inflight_.find(wc.cookie);
          if (it == inflight_.end()) {
            ADD_FAILURE() << "FaultySwapDev: completion for an unknown write";
            continue;
          }
          Inflight info = std::move(it->second);
          inflight_.erase(it);
          int64_t result = wc.result;
          if (result != info.want) counters_->real_write_errors++;
          if (info.result != INT64_MIN) result = info.result;  // injected after the write
          const Clock::time_point due = std::max(info.due, now);
          queue_.emplace(due, Queued{wc.cookie, result, std::move(info), now});
        }
      }
      cv_.notify_all();
    }
  }

  // => mu_ held.
  std::chrono::microseconds draw(std::chrono::microseconds min, std::chrono::microseconds max) {
    if (max <= min) return min;
    std::uniform_int_distribution<int64_t> d(min.count(), max.count());
    return std::chrono::microseconds(d(rng_));
  }

  std::unique_ptr<io::SwapDev> real_;
  std::shared_ptr<FaultyCounters> counters_;
  std::atomic<bool> stop_{false};
  std::thread pump_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool kicked_ = false;
  std::unordered_map<void*, Inflight> inflight_;            // forwarded to the real device
  std::unordered_map<void*, ReadInflight> reads_inflight_;  // reads forwarded
  std::multimap<Clock::time_point, Queued> queue_;          // completions, by due time
  std::mt19937_64 rng_{12345};
  std::chrono::microseconds write_lat_min_{0}, write_lat_max_{0};
  std::chrono::microseconds read_lat_min_{0}, read_lat_max_{0};

  int next_writes_ = 0;
  WriteFault next_write_fault_ = WriteFault::kNone;
  FaultTiming next_write_timing_ = FaultTiming::kInsteadOfWrite;
  int every_k_ = 0;
  int64_t every_count_ = 0;
  int64_t every_limit_ = -1;
  WriteFault every_fault_ = WriteFault::kNone;
  FaultTiming every_timing_ = FaultTiming::kInsteadOfWrite;

  int next_reads_ = 0;
  ReadFault next_read_fault_ = ReadFault::kNone;
  std::map<uint64_t, SlotFault> slot_faults_;

  std::set<uint64_t> bad_slots_;
  std::set<uint64_t> failed_words_;
  int64_t failed_rewritten_ = 0;
  std::unordered_map<uint64_t, uint64_t> content_slot_;
  std::string violations_;
};

// Creates a runtime whose swap device is a FaultySwapDev; *dev points at it
// while the runtime lives.
// A runtime on a FaultySwapDev wrapping the real device (*dev, owned by the
// runtime), or the status of its creation.
inline absl::StatusOr<std::unique_ptr<Runtime>> create_faulty_runtime(const Options& o,
                                                                      FaultySwapDev** dev) {
  *dev = nullptr;
  return internal::CreateWithSwapDev(o, [dev](std::unique_ptr<io::SwapDev> real) {
    auto f = std::make_unique<FaultySwapDev>(std::move(real));
    *dev = f.get();
    return std::unique_ptr<io::SwapDev>(std::move(f));
  });
}

// As create_faulty_runtime; a failure ends the test program.
inline std::unique_ptr<Runtime> make_faulty_runtime(const Options& o, FaultySwapDev** dev) {
  auto rt = create_faulty_runtime(o, dev);
  EXPECT_TRUE(rt.ok()) << rt.status();
  if (!rt.ok() || *dev == nullptr) std::abort();
  return std::move(*rt);
}

// The first word fill_page writes: identifies a page's content in swap.
inline uint64_t first_word(uint64_t page, uint64_t gen) {
  return page_seed(page, gen);
}

inline std::string StatsString(const Stats& s) {
  return absl::StrFormat(
      "npages=%d free=%d active=%d inactive=%d paging=%d swpages=%d swpginuse=%d swpgonly=%d "
      "swpgbad=%d pdpageouts=%d pgswapout=%d pgswapin=%d swapouterr=%d swapinerr=%d faults=%d "
      "flt_uvmwait=%d pdreacts_dirty=%d regions=%d mapped_bytes=%d",
      s.npages, s.free, s.active, s.inactive, s.paging, s.swpages, s.swpginuse, s.swpgonly,
      s.swpgbad, s.pdpageouts, s.pgswapout, s.pgswapin, s.swapouterr, s.swapinerr, s.faults,
      s.flt_uvmwait, s.pdreacts_dirty, s.regions, s.mapped_bytes);
}

// Reads one byte of `p` for certain (the compiler may not drop the load):
// for touches whose point is the fault they take.
inline char touch_read(const void* p) {
  return *static_cast<const volatile char*>(p);
}

// ---- a watchdog: bounded test bodies ----

// Runs `body` on its own thread.  If it has not returned after `limit`, the
// test fails with `what()` (for example the runtime's stats) and the process
// exits: a hang becomes a clear failure, not a CI timeout.
inline void RunWithWatchdog(std::chrono::seconds limit, const std::function<void()>& body,
                            const std::function<std::string()>& what = nullptr) {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  };
  auto sh = std::make_shared<Shared>();
  std::thread t([sh, &body] {
    body();
    std::lock_guard<std::mutex> l(sh->mu);
    sh->done = true;
    sh->cv.notify_all();
  });
  std::unique_lock<std::mutex> l(sh->mu);
  if (!sh->cv.wait_for(l, limit, [&] { return sh->done; })) {
    const std::string info = what ? what() : std::string();
    ADD_FAILURE() << "watchdog: the test body did not finish within " << limit.count()
                  << " s (a hang in the runtime?) " << info;
    fprintf(stderr, "watchdog: giving up after %lld s; %s\n", static_cast<long long>(limit.count()),
            info.c_str());
    fflush(stdout);
    fflush(stderr);
    _exit(3);
  }
  l.unlock();
  t.join();
}

// ---- child processes: for outcomes that kill the process (SIGBUS) ----

// The exit code of a child whose body threw.
inline constexpr int kChildThrew = 125;

struct ChildResult {
  bool timed_out = false;
  int status = 0;      // from waitpid
  double seconds = 0;  // until it ended (or was killed)
  std::string output;  // its stdout and stderr

  bool exited(int code) const {
    return !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == code;
  }
  bool signaled(int sig) const {
    return !timed_out && WIFSIGNALED(status) && WTERMSIG(status) == sig;
  }
  std::string Describe() const {
    std::string how;
    if (timed_out) {
      how = "timed out and was killed";
    } else if (WIFEXITED(status)) {
      how = absl::StrFormat("exited with code %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
      how =
          absl::StrFormat("died of signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    }
    return absl::StrFormat("child %s after %.1f s; its output:\n%s", how, seconds, output);
  }
};

// Forks; the child runs `body` (which creates its own runtime: a runtime
// never crosses fork) and exits with its return value.  The parent waits at
// most `limit`, then kills the child.  Call with no runtime alive in the
// parent, so that the parent has one thread.
inline ChildResult RunInChild(const std::function<int()>& body, std::chrono::seconds limit) {
  ChildResult res;
  char path[] = "/tmp/uvmrt-child-out-XXXXXX";
  const int out = mkstemp(path);
  if (out < 0) {
    ADD_FAILURE() << "mkstemp: " << strerror(errno);
    return res;
  }
  unlink(path);
  fflush(stdout);
  fflush(stderr);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << strerror(errno);
    close(out);
    return res;
  }
  if (pid == 0) {
    dup2(out, 1);
    dup2(out, 2);
    setvbuf(stderr, nullptr, _IONBF, 0);
    int rc = kChildThrew;
    try {
      rc = body();
    } catch (const std::exception& e) {
      fprintf(stderr, "child: uncaught exception: %s\n", e.what());
    } catch (...) {
      fprintf(stderr, "child: uncaught exception\n");
    }
    fflush(stdout);
    fflush(stderr);
    _exit(rc);
  }
  for (;;) {
    int st = 0;
    const pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      res.status = st;
      break;
    }
    if (std::chrono::steady_clock::now() - start > limit) {
      res.timed_out = true;
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      res.status = st;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Keep the head and the tail of a flood (a child stuck logging in a loop).
  constexpr off_t kKeep = 32 << 10;
  const off_t size = lseek(out, 0, SEEK_END);
  auto append = [&](off_t from, off_t len) {
    std::string buf(static_cast<size_t>(len), '\0');
    const ssize_t n = pread(out, buf.data(), buf.size(), from);
    if (n > 0) res.output.append(buf.data(), static_cast<size_t>(n));
  };
  if (size <= 2 * kKeep) {
    append(0, size);
  } else {
    append(0, kKeep);
    res.output += absl::StrFormat("\n[... %d bytes of output left out ...]\n", size - 2 * kKeep);
    append(size - kKeep, kKeep);
  }
  close(out);
  return res;
}

// ---- SIGBUS (and SIGSEGV), caught per thread, in a child process ----

namespace sigbus_detail {
inline thread_local sigjmp_buf* t_jmp = nullptr;
inline thread_local void* t_addr = nullptr;
inline thread_local int t_sig = 0;
inline std::atomic<int> g_exit_code{0};

inline void handler(int sig, siginfo_t* si, void*) {
  if (t_jmp != nullptr) {
    t_addr = si->si_addr;
    t_sig = sig;
    siglongjmp(*t_jmp, 1);
  }
  // Not expected on this thread: report and end the process with the code
  // the test chose (0: die of the signal).
  char msg[128];
  const int n = snprintf(msg, sizeof(msg), "%s at %p on a thread that did not expect it\n",
                         sig == SIGBUS ? "SIGBUS" : "SIGSEGV", si->si_addr);
  if (n > 0) (void)!write(2, msg, static_cast<size_t>(n));
  const int code = g_exit_code.load();
  if (code != 0) _exit(code);
  signal(sig, SIG_DFL);
  raise(sig);
}
}  // namespace sigbus_detail

// Installs the handler for SIGBUS and SIGSEGV.  One outside CatchSigbus ends
// the process with `exit_code`, or with the signal itself if it is 0.
inline void InstallSigbusHandler(int exit_code = 0) {
  sigbus_detail::g_exit_code = exit_code;
  struct sigaction sa {};
  sa.sa_sigaction = sigbus_detail::handler;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
  sigaction(SIGSEGV, &sa, nullptr);
}

// Runs `f` on this thread; returns true if it took SIGBUS (or SIGSEGV),
// which abandons it, with the faulting address in *addr and the signal in
// *sig.
inline bool CatchSigbus(const std::function<void()>& f, void** addr = nullptr, int* sig = nullptr) {
  sigjmp_buf jb;
  if (sigsetjmp(jb, 1) == 0) {
    sigbus_detail::t_jmp = &jb;
    f();
    sigbus_detail::t_jmp = nullptr;
    return false;
  }
  sigbus_detail::t_jmp = nullptr;
  if (addr != nullptr) *addr = sigbus_detail::t_addr;
  if (sig != nullptr) *sig = sigbus_detail::t_sig;
  return true;
}

}  // namespace uvmrt::testing

#endif  // UVMRT_TESTS_FAULTY_SWAPDEV_H_
