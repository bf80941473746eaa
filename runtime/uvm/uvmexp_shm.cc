// uvmexp_shm.cc: publishing the uvmexp counters in shared memory.
#include "uvm/uvmexp_shm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <ctime>
#include <new>

#include "absl/strings/str_format.h"
#include "runtime/log.h"

namespace uvmrt::uvm {

namespace {
std::atomic<int> runtime_seq{0};

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Removes the counters files that processes which died without destroying
// their runtimes left behind: those of this user whose pid is gone.
void sweep_stale() {
  DIR* d = opendir("/dev/shm");
  if (d == nullptr) return;
  const uid_t me = geteuid();
  while (dirent* de = readdir(d)) {
    int64_t pid = 0;
    uint32_t n = 0;
    if (!parse_uvmexp_shm_name(de->d_name, &pid, &n)) continue;
    if (kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    struct stat st;
    if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_uid != me) continue;
    if (unlinkat(dirfd(d), de->d_name, 0) == 0) {
      logger()->debug("uvmrt: removed /dev/shm/{} of exited process {}", de->d_name, pid);
    }
  }
  closedir(d);
}
}  // namespace

std::unique_ptr<UvmexpChannel> UvmexpChannel::Create() {
  sweep_stale();
  std::unique_ptr<UvmexpChannel> ch(new UvmexpChannel());
  // O_EXCL: another copy of the library in this process (its own runtime
  // numbering) may hold a number already; take the next free one.
  std::string path;
  int fd = -1;
  for (int tries = 0; tries < 1024 && fd < 0; tries++) {
    path = absl::StrFormat("/dev/shm/uvmrt.%d.%d", getpid(), runtime_seq.fetch_add(1));
    fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0 && errno != EEXIST) break;
  }
  void* mem = MAP_FAILED;
  if (fd >= 0 && ftruncate(fd, sizeof(uvmexp_shm)) == 0) {
    mem = mmap(nullptr, sizeof(uvmexp_shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  if (fd >= 0) close(fd);
  if (mem == MAP_FAILED) {
    if (fd >= 0) unlink(path.c_str());
    logger()->info("uvmrt: cannot publish counters at {}; uvmstat will not see this process", path);
    mem = new uvmexp_shm;
  } else {
    ch->mapped_ = true;
    ch->path_ = path;
  }
  auto* shm = static_cast<uvmexp_shm*>(mem);
  new (&shm->exp) uvmexp_t();
  shm->header_bytes = offsetof(uvmexp_shm, exp);
  shm->exp_bytes = sizeof(uvmexp_t);
  shm->pid = getpid();
  shm->start_unix_ns = now_ns();
  std::atomic_thread_fence(std::memory_order_release);
  std::memcpy(shm->magic, kUvmexpShmMagic, sizeof(shm->magic));
  ch->shm_ = shm;
  return ch;
}

UvmexpChannel::~UvmexpChannel() {
  if (shm_ == nullptr) return;
  if (mapped_) {
    unlink(path_.c_str());
    munmap(shm_, sizeof(uvmexp_shm));
  } else {
    delete shm_;
  }
}

}  // namespace uvmrt::uvm
