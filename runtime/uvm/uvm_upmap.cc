// uvm_upmap.cc: the real user pmap over userfaultfd and a memfd.
#include "uvm/uvm_upmap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>

#include "absl/strings/str_format.h"
#include "runtime/log.h"
#include "uvm/uvm_compat.h"

namespace uvmrt::uvm {

namespace {

// Repeats a read or write (`op(done)` transfers from byte `done` on) until
// `len` bytes are done, through short transfers and EINTR.  Returns the
// bytes done: fewer on an error.
template <typename Op>
uint64_t whole_transfer(uint64_t len, Op op) {
  uint64_t off = 0;
  while (off < len) {
    const ssize_t k = op(off);
    if (k > 0) {
      off += static_cast<uint64_t>(k);
    } else if (!(k < 0 && errno == EINTR)) {
      break;
    }
  }
  return off;
}

// The backing object's size: the address space all regions share.  It is
// sparse; a smaller size is tried where the address space is scarce (for
// example under ThreadSanitizer).
constexpr uint64_t kBackingBytesMax = uint64_t{16} << 40;  // 16 TiB
constexpr uint64_t kBackingBytesMin = uint64_t{1} << 34;   // 16 GiB

std::string errstr(int e) {
  return strerror(e);
}

// A userfaultfd event (an munmap, mremap or MADV_DONTNEED) is waiting to be
// read: mapping calls fail with EAGAIN until it is.  The caller drops its
// locks and retries, so that the reader can get at the event.
absl::Status kMmapChanging() {
  return absl::UnavailableError("userfaultfd event pending");
}

// A mapping call that failed: ENOENT when the range is no longer one
// registered mapping (the application split or unmapped it under the call;
// the thread retries, and the event, if any, is read meanwhile).  Any other
// error (EFAULT: no page in the memfd where the runtime keeps one) is not
// mended by a retry: Internal, and the fault poisons the page.
absl::Status mapping_failed(const char* call, int e) {
  if (e == ENOENT)
    return absl::FailedPreconditionError(std::string(call) + ": the mapping changed");
  return absl::InternalError(std::string(call) + ": " + errstr(e));
}

int open_uffd(int flags) {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, flags));
  if (fd >= 0 || errno != EPERM) return fd;
  // Unprivileged and vm.unprivileged_userfaultfd=0: try /dev/userfaultfd.
  int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev < 0) {
    errno = EPERM;
    return -1;
  }
  fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
  close(dev);
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UffdPmap>> UffdPmap::Create(bool sigbus) {
  std::unique_ptr<UffdPmap> p(new UffdPmap());
  p->uffd_ = open_uffd(O_CLOEXEC | O_NONBLOCK);
  if (p->uffd_ < 0 && errno == EPERM) {
    p->uffd_ = open_uffd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (p->uffd_ >= 0) {
      p->user_mode_only_ = true;
      logger()->warn(
          "uvmrt: only a user-mode userfaultfd is permitted: system calls such as read(2) and "
          "write(2) on non-resident managed memory will fail with EFAULT; run as root, set "
          "vm.unprivileged_userfaultfd=1, or grant access to /dev/userfaultfd");
    }
  }
  if (p->uffd_ < 0) {
    const int e = errno;
    if (e == EPERM || e == EACCES) {
      return absl::PermissionDeniedError(
          "uvmrt: userfaultfd is not permitted: run as root, or set "
          "vm.unprivileged_userfaultfd=1, or grant access to /dev/userfaultfd");
    }
    if (e == ENOSYS) {
      return absl::UnimplementedError(
          "uvmrt: this kernel has no userfaultfd: use Linux 6.1 or later built with "
          "CONFIG_USERFAULTFD");
    }
    return absl::InternalError("uvmrt: userfaultfd: " + errstr(e));
  }
  // Probe the features (a first UFFDIO_API with no features reports them).
  uffdio_api probe{UFFD_API, 0, 0};
  {
    int fd2 = open_uffd(O_CLOEXEC | (p->user_mode_only_ ? UFFD_USER_MODE_ONLY : 0));
    if (fd2 >= 0) {
      if (ioctl(fd2, UFFDIO_API, &probe) != 0) probe.features = 0;
      close(fd2);
    }
  }
  uint64_t need = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM;
  if ((probe.features & need) != need) {
    return absl::UnimplementedError(
        "uvmrt: this kernel's userfaultfd lacks MISSING_SHMEM/MINOR_SHMEM: use Linux 6.1 or "
        "later");
  }
  if (sigbus) {
    if (!(probe.features & UFFD_FEATURE_SIGBUS)) {
      return absl::UnimplementedError(
          "uvmrt: this kernel's userfaultfd cannot raise SIGBUS: turn in_thread_faults off");
    }
    need |= UFFD_FEATURE_SIGBUS;
  }
  constexpr uint64_t kEvents =
      UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP;
  uint64_t want = need | (probe.features & (UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_POISON |
                                            UFFD_FEATURE_THREAD_ID | kEvents));
  uffdio_api api{UFFD_API, want, 0};
  if (ioctl(p->uffd_, UFFDIO_API, &api) != 0) {
    return absl::InternalError("uvmrt: UFFDIO_API: " + errstr(errno));
  }
  p->wp_ = (api.features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM) != 0;
  p->poison_ = (api.features & UFFD_FEATURE_POISON) != 0;
  p->events_ = (api.features & kEvents) == kEvents;
  p->sigbus_ = sigbus;
  if (p->events_) {
    p->maps_fd_ = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (p->maps_fd_ < 0) {
      return absl::FailedPreconditionError("uvmrt: cannot open /proc/self/maps (" + errstr(errno) +
                                           "): mount /proc");
    }
    p->fast_query_ = uvm_mapping_query_fast(p->maps_fd_);
  } else {
    logger()->warn(
        "uvmrt: userfaultfd events are unavailable: MADV_DONTNEED, munmap and mremap on regions "
        "are not seen, so discarded memory may keep its old contents");
  }
  if (!p->wp_) {
    logger()->warn(
        "uvmrt: userfaultfd cannot write-protect shared memory here: swapped-in pages count as "
        "dirty and are written again on eviction");
  }

  p->memfd_ = memfd_create("uvmrt", MFD_CLOEXEC);
  if (p->memfd_ < 0) return absl::InternalError("uvmrt: memfd_create: " + errstr(errno));
  struct stat st {};
  if (fstat(p->memfd_, &st) != 0) {
    return absl::InternalError("uvmrt: fstat of the memfd: " + errstr(errno));
  }
  p->memfd_ino_ = st.st_ino;
  uint64_t backing = kBackingBytesMax;
  void* d = MAP_FAILED;
  for (; backing >= kBackingBytesMin; backing /= 2) {
    d = mmap(nullptr, backing, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, p->memfd_, 0);
    if (d != MAP_FAILED) break;
  }
  if (d == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        "uvmrt: no address space for the direct view: " + errstr(errno) +
        ": raise the address-space limit (ulimit -v)");
  }
  if (ftruncate(p->memfd_, static_cast<off_t>(backing)) != 0) {
    munmap(d, backing);
    return absl::InternalError("uvmrt: sizing the backing memfd: " + errstr(errno));
  }
  madvise(d, backing, MADV_DONTFORK);
  p->direct_ = static_cast<char*>(d);
  p->backing_pages_ = backing >> PAGE_SHIFT;
  {
    MutexLock l(&p->range_lock_);
    p->free_ranges_[0] = p->backing_pages_;
  }
  return p;
}

UffdPmap::~UffdPmap() {
  if (maps_fd_ >= 0) close(maps_fd_);
  if (direct_ != nullptr) munmap(direct_, backing_pages_ << PAGE_SHIFT);
  if (memfd_ >= 0) close(memfd_);
  if (uffd_ >= 0) close(uffd_);
}

absl::StatusOr<uint64_t> UffdPmap::alloc_range(uint64_t npages) {
  MutexLock l(&range_lock_);
  for (auto it = free_ranges_.begin(); it != free_ranges_.end(); ++it) {
    if (it->second < npages) continue;
    const uint64_t start = it->first;
    const uint64_t len = it->second;
    free_ranges_.erase(it);
    if (len > npages) free_ranges_[start + npages] = len - npages;
    return start;
  }
  return absl::ResourceExhaustedError(
      absl::StrFormat("uvmrt: mapping too large: the runtime's %d GiB address space for regions "
                      "is used up; unmap regions or map less",
                      backing_pages_ >> (30 - PAGE_SHIFT)));
}

void UffdPmap::free_range(Region& r) {
  MutexLock l(&range_lock_);
  uint64_t start = r.pgoff(), len = r.npages();
  // Coalesce with the neighbours.
  auto next = free_ranges_.lower_bound(start);
  if (next != free_ranges_.end() && next->first == start + len) {
    len += next->second;
    next = free_ranges_.erase(next);
  }
  if (next != free_ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      prev->second += len;
      return;
    }
  }
  free_ranges_[start] = len;
}

// Waits until `taken` no longer claims [start, start + bytes), as the
// reader applies the event of the munmap or mremap that freed it; false
// after kTakenWait.
bool UffdPmap::wait_until_free(AddressTaken taken, uintptr_t start, uint64_t bytes) {
  const auto deadline = std::chrono::steady_clock::now() + kTakenWait;
  for (auto pause = std::chrono::microseconds(20); taken(start, bytes);
       pause = std::min(2 * pause, std::chrono::microseconds(1000))) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(pause);
  }
  return true;
}

absl::Status UffdPmap::create_view(Region& r, AddressTaken taken) {
  absl::StatusOr<uint64_t> off = alloc_range(r.npages());
  if (!off.ok()) return off.status();
  // The Region was built with pgoff 0; rebuild its geometry in place.
  const uint64_t bytes = r.bytes();
  const auto map = [&] {
    return mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, memfd_,
                static_cast<off_t>(*off << PAGE_SHIFT));
  };
  // The kernel may offer addresses an munmap or mremap has just freed
  // before the runtime has applied its event: they still belong to the old
  // region, and a view there would be taken for it (and released with it).
  // Such an offer is let go (it was never registered: no event), and the
  // next asked for once the reader has applied the event.  (Holding offers
  // while the kernel makes others does not do: the rest of a large freed
  // region comes next, offer after offer.)
  void* a = map();
  bool held = false;  // an offer still held after kTakenWait, or too many
  for (int refused = 0; a != MAP_FAILED && taken(reinterpret_cast<uintptr_t>(a), bytes);
       refused++) {
    const uintptr_t offered = reinterpret_cast<uintptr_t>(a);
    munmap(a, bytes);
    a = MAP_FAILED;
    held = refused == kMaxRefusedViews || !wait_until_free(taken, offered, bytes);
    if (held) break;
    a = map();
  }
  const int e = errno;
  if (a == MAP_FAILED) {
    Region tmp(0, r.npages(), *off);
    free_range(tmp);
    if (held) {
      return absl::UnavailableError(absl::StrFormat(
          "uvmrt: cannot place a %d-byte region: the addresses offered still belong to a "
          "region the application unmapped, whose event is not yet applied: try again",
          bytes));
    }
    return absl::ResourceExhaustedError(absl::StrFormat(
        "uvmrt: cannot map %d bytes: %s: map less, or raise the address-space limit (ulimit -v) "
        "or vm.max_map_count",
        bytes, errstr(e)));
  }
  // A forked child must not see this memory: it would read zeros where pages
  // were evicted (design.md).  Children get no mapping here at all.
  madvise(a, bytes, MADV_DONTFORK);
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(a);
  reg.range.len = bytes;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR;
  if (wp_) reg.mode |= UFFDIO_REGISTER_MODE_WP;
  if (ioctl(uffd_, UFFDIO_REGISTER, &reg) != 0) {
    const int e = errno;
    munmap(a, bytes);
    Region tmp(0, r.npages(), *off);
    free_range(tmp);
    return absl::InternalError("uvmrt: UFFDIO_REGISTER: " + errstr(e));
  }
  r.set_base(reinterpret_cast<uintptr_t>(a));
  r.set_pgoff(*off);
  return absl::OkStatus();
}

void UffdPmap::destroy_view(Region& r) {
  if (r.base() == 0) return;
  // Unregister first, so the runtime's own munmap sends no UNMAP event; and
  // leave alone the parts the application unmapped (their addresses may
  // belong to someone else by now).
  for (const auto& [first, n] : r.live_runs()) {
    uffdio_range range{r.addr(first), n << PAGE_SHIFT};
    ioctl(uffd_, UFFDIO_UNREGISTER, &range);
    munmap(reinterpret_cast<void*>(r.addr(first)), n << PAGE_SHIFT);
  }
}

uint64_t SelfRemoves::add(uint64_t start, uint64_t end) {
  MutexLock l(&lock_);
  pending_.push_back(Call{.next = start, .last = end, .number = ++calls_});
  return calls_;
}

void SelfRemoves::begin_batch() {
  MutexLock l(&lock_);
  for (Call& c : pending_) c.live = !c.returned;
}

void SelfRemoves::returned(uint64_t call) {
  MutexLock l(&lock_);
  for (Call& c : pending_) {
    if (c.number == call) c.returned = true;
  }
}

void SelfRemoves::retire() {
  MutexLock l(&lock_);
  std::erase_if(pending_, [](const Call& c) { return c.returned; });
}

size_t SelfRemoves::pending() const {
  MutexLock l(&lock_);
  return pending_.size();
}

bool SelfRemoves::consume(uint64_t start, uint64_t end) {
  MutexLock l(&lock_);
  for (Call& c : pending_) {
    const uint64_t lo = c.prev_start == kNone ? c.next : c.prev_start;
    if (!c.live || end <= lo || start >= c.last) continue;
    // The next event of this call: its whole remaining range, unless the
    // range now spans more than one mapping or begins in a gap (rare: ask
    // the kernel where the next mapping is).
    bool ours = start == c.next && end == c.last;
    uint64_t ms = 0, me = 0;
    if (!ours && c.next < c.last && query_(c.next, &ms, &me) && ms < c.last) {
      ours = start == std::max(c.next, ms) && end == std::min(c.last, me);
    }
    // A repetition: the mapping was split or partly unmapped while the call
    // waited, and the kernel went on from where the mapping now ends.
    if (!ours && c.prev_start != kNone && start > c.prev_start && start <= c.next &&
        end <= c.last) {
      ours = query_(start, &ms, &me) && ms == start;
    }
    if (!ours) continue;  // not this call's
    c.prev_start = start;
    c.next = std::max(c.next, end);
    return true;
  }
  return false;  // the application's
}

namespace {
// query_vma by reading /proc/self/maps, whose lines are
// "start-end perms offset dev inode path", in address order: the mapping
// that covers addr, or else the first one above it.
bool query_vma_text(int maps_fd, uint64_t addr, procmap_query* q) {
  char buf[8192];
  std::string line;
  off_t off = 0;
  for (;;) {
    const ssize_t n = pread(maps_fd, buf, sizeof(buf), off);
    if (n <= 0) return false;
    off += n;
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] != '\n') {
        line.push_back(buf[i]);
        continue;
      }
      unsigned long long a = 0, b = 0, offset = 0, inode = 0;
      if (sscanf(line.c_str(), "%llx-%llx %*s %llx %*s %llu", &a, &b, &offset, &inode) >= 2 &&
          b > addr) {
        q->vma_start = a;
        q->vma_end = b;
        q->vma_offset = offset;
        q->inode = inode;
        return true;
      }
      line.clear();
    }
  }
}

// PROCMAP_QUERY: the mapping that covers addr, or else the first one above
// it.  False with errno ENOENT if there is none.
bool query_vma(int maps_fd, uint64_t addr, procmap_query* q) {
  *q = procmap_query{};
  q->size = sizeof(*q);
  q->query_flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA;
  q->query_addr = addr;
  return ioctl(maps_fd, PROCMAP_QUERY, q) == 0;
}
}  // namespace

bool uvm_mapping_from(int maps_fd, uint64_t addr, uint64_t* start, uint64_t* end) {
  if (maps_fd < 0) return false;
  procmap_query q{};
  if (query_vma(maps_fd, addr, &q)) {
    *start = q.vma_start;
    *end = q.vma_end;
    return true;
  }
  if (errno == ENOENT) return false;  // no mapping at or above addr
  if (!query_vma_text(maps_fd, addr, &q)) return false;
  *start = q.vma_start;
  *end = q.vma_end;
  return true;
}

bool uvm_mapping_query_fast(int maps_fd) {
  if (maps_fd < 0) return false;
  procmap_query q{};
  return query_vma(maps_fd, 0, &q) || errno == ENOENT;
}

absl::Status UffdPmap::enter(const Region& r, uint64_t idx, bool wp) {
  return enter_run(r, idx, 1, wp);
}

absl::Status UffdPmap::enter_run(const Region& r, uint64_t idx, uint64_t n, bool wp) {
  uffdio_continue c{};
  c.range.start = r.addr(idx);
  c.range.len = n << PAGE_SHIFT;
  c.mode = wp ? UFFDIO_CONTINUE_MODE_WP : 0;
  if (ioctl(uffd_, UFFDIO_CONTINUE, &c) == 0) return absl::OkStatus();
  const int e = errno;
  if (e == EAGAIN) {
    if (c.mapped <= 0) return kMmapChanging();
    // Part of the run is mapped (and its threads woken); the rest is mapped
    // on a later fault.
    return absl::OkStatus();
  }
  if (e == EEXIST) {
    // Part of the run was mapped already (a racing fault): map page by page,
    // skipping those, and wake the threads.
    for (uint64_t i = 0; i < n; i++) {
      uffdio_continue one{};
      one.range.start = r.addr(idx + i);
      one.range.len = PAGE_SIZE;
      one.mode = c.mode;
      if (ioctl(uffd_, UFFDIO_CONTINUE, &one) != 0 && errno == EAGAIN && i == 0) {
        return kMmapChanging();
      }
    }
    uffdio_range range{r.addr(idx), n << PAGE_SHIFT};
    ioctl(uffd_, UFFDIO_WAKE, &range);
    return absl::OkStatus();
  }
  if (const uint64_t m = e == ENOENT ? pages_in_mapping(r, idx, n) : 0; m > 0 && m < n) {
    // The run crossed into another mapping (mprotect of part of the
    // region): its part in the first one, and the rest on a later fault.
    return enter_run(r, idx, m, wp);
  }
  wake(r, idx);
  if (r.dead()) return absl::OkStatus();
  return mapping_failed("UFFDIO_CONTINUE", e);
}

uint64_t UffdPmap::enter_prefix(const Region& r, uint64_t idx, uint64_t n, bool wp) {
  uffdio_continue c{};
  c.range.start = r.addr(idx);
  c.range.len = n << PAGE_SHIFT;
  c.mode = wp ? UFFDIO_CONTINUE_MODE_WP : 0;
  if (ioctl(uffd_, UFFDIO_CONTINUE, &c) == 0) return n;
  // EEXIST at a page mapped already, EAGAIN for an unread event: what was
  // mapped before it stays mapped (and its threads woken).
  return c.mapped > 0 ? static_cast<uint64_t>(c.mapped) >> PAGE_SHIFT : 0;
}

void UffdPmap::place_run(const Region& r, uint64_t idx, uint64_t n, const char* src) {
  // A write to the memfd allocates the pages without clearing them, and
  // maps none.
  const uint64_t len = n << PAGE_SHIFT;
  const off_t at = static_cast<off_t>((r.pgoff() + idx) << PAGE_SHIFT);
  const uint64_t off = whole_transfer(len, [&](uint64_t o) {
    return pwrite(memfd_, src + o, len - o, at + static_cast<off_t>(o));
  });
  // What could not be written (no memory for it) goes in through the direct
  // view, as a read into the frames would.
  if (off < len) std::memcpy(direct(r, idx) + off, src + off, len - off);
}

// A read of the memfd copies the pages out of the page cache and maps none.
bool UffdPmap::read_run(const Region& r, uint64_t idx, uint64_t n, char* dst) {
  const uint64_t len = n << PAGE_SHIFT;
  const off_t at = static_cast<off_t>((r.pgoff() + idx) << PAGE_SHIFT);
  return whole_transfer(len, [&](uint64_t o) {
           return pread(memfd_, dst + o, len - o, at + static_cast<off_t>(o));
         }) == len;
}

// UFFDIO_COPY allocates each page, copies it and maps it in one call: no
// fault in the direct view, and no clearing of a page about to be
// overwritten.  What it did not place goes in unmapped, with place_run.
absl::Status UffdPmap::copy_run(const Region& r, uint64_t idx, uint64_t n, const char* src,
                                bool wp) {
  uffdio_copy c{};
  c.dst = r.addr(idx);
  c.src = reinterpret_cast<uintptr_t>(src);
  c.len = n << PAGE_SHIFT;
  c.mode = wp ? UFFDIO_COPY_MODE_WP : 0;
  if (ioctl(uffd_, UFFDIO_COPY, &c) == 0) return absl::OkStatus();
  const int e = errno;
  const uint64_t done = c.copy > 0 ? static_cast<uint64_t>(c.copy) >> PAGE_SHIFT : 0;
  place_run(r, idx + done, n - done, src + (done << PAGE_SHIFT));
  if (e == EAGAIN) {
    // As enter_run: a part mapped is enough, the rest is mapped on a later
    // fault; none mapped, the caller retries once the event is read.
    return done > 0 ? absl::OkStatus() : kMmapChanging();
  }
  return enter_run(r, idx + done, n - done, wp);
}

absl::Status UffdPmap::zerofill(const Region& r, uint64_t idx) {
  uint64_t done = 0;
  return zerofill_run(r, idx, 1, &done);
}

absl::Status UffdPmap::zerofill_run(const Region& r, uint64_t idx, uint64_t n, uint64_t* done) {
  uffdio_zeropage z{};
  z.range.start = r.addr(idx);
  z.range.len = n << PAGE_SHIFT;
  *done = 0;
  if (ioctl(uffd_, UFFDIO_ZEROPAGE, &z) == 0) {
    *done = n;
    return absl::OkStatus();
  }
  const int e = errno;
  if (z.zeropage > 0) {
    // A prefix was filled (and its threads woken).
    *done = static_cast<uint64_t>(z.zeropage) >> PAGE_SHIFT;
    return absl::OkStatus();
  }
  if (e == EAGAIN) return kMmapChanging();
  if (e == EEXIST) {
    // A page table entry exists already (a racing fault mapped it).
    wake(r, idx);
    *done = 1;
    return absl::OkStatus();
  }
  if (const uint64_t m = e == ENOENT ? pages_in_mapping(r, idx, n) : 0; m > 0 && m < n) {
    // The run crossed into another mapping (mprotect of part of the
    // region): only its part in the first one.
    return zerofill_run(r, idx, m, done);
  }
  wake(r, idx);
  if (r.dead()) return absl::OkStatus();
  return mapping_failed("UFFDIO_ZEROPAGE", e);
}

// How many of the n pages from idx lie in the mapping that holds idx; 0 if
// no mapping does.  A mapping call's range must lie in one mapping.  (A
// mapping there that is not r's view is not registered, and the call that
// follows fails again.)
uint64_t UffdPmap::pages_in_mapping(const Region& r, uint64_t idx, uint64_t n) {
  const uint64_t addr = r.addr(idx);
  procmap_query q{};
  if (!query_mapping(addr, &q) || q.vma_start > addr) return 0;
  return std::min<uint64_t>(n, (q.vma_end - addr) >> PAGE_SHIFT);
}

// Without PROCMAP_QUERY this reads /proc/self/maps: it serves unmapping
// events, which only the application's munmap and mremap send.
bool UffdPmap::view_at(const Region& r, uint64_t idx) {
  const uint64_t addr = r.addr(idx);
  procmap_query q{};
  return query_mapping(addr, &q) && q.vma_start <= addr && own_view(q, r, addr);
}

bool UffdPmap::query_mapping(uint64_t addr, procmap_query* q) const {
  return fast_query_ ? query_vma(maps_fd_, addr, q) : query_vma_text(maps_fd_, addr, q);
}

bool UffdPmap::own_view(const procmap_query& q, const Region& r, uint64_t addr) const {
  const uint64_t want = (r.pgoff() + ((addr - r.base()) >> PAGE_SHIFT)) << PAGE_SHIFT;
  return q.inode == memfd_ino_ && q.vma_offset + (addr - q.vma_start) == want;
}

// Unmaps the region's own view over [idx, idx + n): the holes the
// application unmapped are skipped, since another mapping may have taken
// their place, and with the kernel's cheap query, so is any piece that is
// not the region's view of its pages (placed in a hole whose munmap's event
// is not yet read): MADV_DONTNEED there would empty someone else's memory.
// One call per piece, each within one mapping when it is made.
bool UffdPmap::remove(const Region& r, uint64_t idx, uint64_t n) {
  bool all = true;
  const uint64_t last = idx + n;
  for (uint64_t a = r.live_from(idx, last); a < last;) {
    const uint64_t b = r.live_end(a, last);
    uint64_t start = r.addr(a);
    const uint64_t end = r.addr(b);
    while (start < end) {
      uint64_t s = start, e = end;
      procmap_query q{};
      if (fast_query_ && query_vma(maps_fd_, start, &q)) {
        if (q.vma_start >= end) {  // nothing mapped from here on
          all = false;
          break;
        }
        if (q.vma_start > start) all = false;  // a gap in the view
        s = std::max(start, static_cast<uint64_t>(q.vma_start));
        e = std::min(end, static_cast<uint64_t>(q.vma_end));
        if (!own_view(q, r, s)) {
          all = false;  // not this region's view
          start = e;
          continue;
        }
      } else if (fast_query_ && errno == ENOENT) {
        all = false;  // nothing mapped from here on
        break;
      }
      // (A failed query otherwise unmaps the range as asked: an inactive
      // page must not stay mapped.)
      if (!remove_range(r, s, e)) all = false;
      start = e;
    }
    a = r.live_from(b, last);
  }
  return all;
}

bool UffdPmap::remove_range(const Region& r, uint64_t start, uint64_t end) {
  // The REMOVE events this sends are read (and must be recognized as ours)
  // before madvise returns, so record them first.
  const uint64_t call = events_ ? self_removes_.add(start, end) : 0;
  const int ret = madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
  const int e = errno;
  // Its events are read, though maybe not yet consumed: the reader forgets
  // what is left of its range once they are (parts no longer mapped, for
  // which none was sent).
  if (events_) self_removes_.returned(call);
  if (ret != 0) {
    if (!r.dead() && e != ENOMEM) logger()->error("uvmrt: MADV_DONTNEED failed: {}", errstr(e));
    return false;
  }
  return true;
}

absl::Status UffdPmap::unprotect(const Region& r, uint64_t idx) {
  uffdio_writeprotect w{};
  w.range.start = r.addr(idx);
  w.range.len = PAGE_SIZE;
  w.mode = 0;  // clear write protection, and wake
  for (;;) {
    if (ioctl(uffd_, UFFDIO_WRITEPROTECT, &w) == 0) return absl::OkStatus();
    if (errno == EAGAIN) return kMmapChanging();
    const int e = errno;
    wake(r, idx);
    return mapping_failed("UFFDIO_WRITEPROTECT", e);
  }
}

void UffdPmap::release(const Region& r, uint64_t idx, uint64_t n) {
  if (fallocate(memfd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                static_cast<off_t>((r.pgoff() + idx) << PAGE_SHIFT),
                static_cast<off_t>(n << PAGE_SHIFT)) != 0) {
    logger()->error("uvmrt: punching the backing memfd failed: {}", errstr(errno));
  }
}

void UffdPmap::wake(const Region& r, uint64_t idx) {
  uffdio_range range{r.addr(idx), PAGE_SIZE};
  ioctl(uffd_, UFFDIO_WAKE, &range);
}

absl::Status UffdPmap::poison(const Region& r, uint64_t idx) {
  if (!poison_) return absl::UnimplementedError("UFFDIO_POISON unavailable");
  uffdio_poison p{};
  p.range.start = r.addr(idx);
  p.range.len = PAGE_SIZE;
  for (bool cleared = false;; cleared = true) {
    if (ioctl(uffd_, UFFDIO_POISON, &p) == 0) return absl::OkStatus();
    if (errno == EAGAIN) return kMmapChanging();
    if (errno != EEXIST || cleared || !wp_) {
      return absl::InternalError("UFFDIO_POISON: " + errstr(errno));
    }
    // A page once mapped write-protected and then evicted leaves a uffd-wp
    // marker in its page table entry, and UFFDIO_POISON needs an empty one.
    // Resolving write protection on the range drops the marker; the
    // faulting thread stays asleep until the poison wakes it.
    uffdio_writeprotect w{};
    w.range = p.range;
    w.mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE;
    if (ioctl(uffd_, UFFDIO_WRITEPROTECT, &w) != 0) {
      if (errno == EAGAIN) return kMmapChanging();
      return absl::InternalError("UFFDIO_WRITEPROTECT before UFFDIO_POISON: " + errstr(errno));
    }
  }
}

int64_t UffdPmap::kernel_resident_bytes() const {
  struct stat st;
  if (fstat(memfd_, &st) != 0) return -1;
  return static_cast<int64_t>(st.st_blocks) * 512;
}

}  // namespace uvmrt::uvm
