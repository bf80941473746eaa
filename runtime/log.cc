#include "runtime/log.h"

#include <errno.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <mutex>

#include "spdlog/sinks/base_sink.h"

namespace uvmrt {

namespace {

// Writes each line to file descriptor 2 with write(2), not through stdio's
// stderr.  An application thread can hold stderr's FILE lock while it
// faults on managed memory (fprintf from a buffer that was evicted); a
// fault handler that then logged through stdio would wait for that lock
// while the thread waits for the handler.
class stderr_fd_sink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    const char* p = buf.data();
    size_t left = buf.size();
    while (left > 0) {
      const ssize_t n = ::write(STDERR_FILENO, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  void flush_() override {}
};

}  // namespace

spdlog::logger* logger() {
  // Never destroyed: a runtime that is never destroyed still has threads
  // running (and perhaps logging) while static destructors run at exit.
  static spdlog::logger* l = [] {
    auto* lg = new spdlog::logger("uvmrt", std::make_shared<stderr_fd_sink>());
    lg->set_pattern("%v");
    lg->set_level(spdlog::level::warn);
    if (const char* lv = std::getenv("UVMRT_LOG"); lv != nullptr && *lv != '\0') {
      lg->set_level(spdlog::level::from_str(lv));
      lg->set_pattern("[%H:%M:%S.%e] [%l] [%t] %v");
    }
    return lg;
  }();
  return l;
}

}  // namespace uvmrt
