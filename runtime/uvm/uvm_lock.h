// uvm_lock.h: the runtime's locks.
//
// Thin wrappers of the standard (pthread) mutexes that carry abseil's
// thread-safety annotations, so that clang's -Wthread-safety checks every
// `=> caller holds ...` contract.  They wrap std:: and pthread primitives rather than
// absl::Mutex because ThreadSanitizer sees synchronization through the
// pthread calls it intercepts, but not inside a prebuilt abseil library.
#ifndef UVMRT_UVM_UVM_LOCK_H_
#define UVMRT_UVM_UVM_LOCK_H_

#include <pthread.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace uvmrt {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A reader-writer lock (a pthread rwlock).  kWriterFirst makes a waiting
// writer go first: shared acquisitions, tried ones too, then wait or fail,
// so a stream of readers that overlap one another never starves it.
class ABSL_LOCKABLE RwMutex {
 public:
  enum Preference { kReadersFirst, kWriterFirst };
  explicit RwMutex(Preference pref = kReadersFirst) {
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    if (pref == kWriterFirst) {
      pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    }
    pthread_rwlock_init(&mu_, &a);
    pthread_rwlockattr_destroy(&a);
  }
  ~RwMutex() { pthread_rwlock_destroy(&mu_); }
  RwMutex(const RwMutex&) = delete;
  RwMutex& operator=(const RwMutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { pthread_rwlock_wrlock(&mu_); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { pthread_rwlock_unlock(&mu_); }
  void ReaderLock() ABSL_SHARED_LOCK_FUNCTION() { pthread_rwlock_rdlock(&mu_); }
  bool ReaderTryLock() ABSL_SHARED_TRYLOCK_FUNCTION(true) {
    return pthread_rwlock_tryrdlock(&mu_) == 0;
  }
  void ReaderUnlock() ABSL_UNLOCK_FUNCTION() { pthread_rwlock_unlock(&mu_); }

 private:
  pthread_rwlock_t mu_;
};

class ABSL_SCOPED_LOCKABLE WriterLock {
 public:
  explicit WriterLock(RwMutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~WriterLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  RwMutex* const mu_;
};

class ABSL_SCOPED_LOCKABLE ReaderLock {
 public:
  explicit ReaderLock(RwMutex* mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) { mu_->ReaderLock(); }
  ~ReaderLock() ABSL_UNLOCK_FUNCTION() { mu_->ReaderUnlock(); }
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;

 private:
  RwMutex* const mu_;
};

// A condition variable used with Mutex, as absl::CondVar.
class CondVar {
 public:
  // => caller holds *mu; it is released while waiting and held again after.
  void Wait(Mutex* mu) {
    std::unique_lock<std::mutex> l(mu->mu_, std::adopt_lock);
    cv_.wait(l);
    l.release();
  }
  // Returns true on timeout.
  bool WaitWithTimeout(Mutex* mu, absl::Duration d) {
    std::unique_lock<std::mutex> l(mu->mu_, std::adopt_lock);
    const bool timeout = cv_.wait_for(l, absl::ToChronoNanoseconds(d)) == std::cv_status::timeout;
    l.release();
    return timeout;
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace uvmrt

#endif  // UVMRT_UVM_UVM_LOCK_H_
