#include "runtime/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>
#include <memory>

namespace uvmrt {

spdlog::logger* logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto lg = std::make_shared<spdlog::logger>("uvmrt",
                                               std::make_shared<spdlog::sinks::stderr_sink_mt>());
    lg->set_pattern("%v");
    lg->set_level(spdlog::level::warn);
    if (const char* lv = std::getenv("UVMRT_LOG"); lv != nullptr && *lv != '\0') {
      lg->set_level(spdlog::level::from_str(lv));
      lg->set_pattern("[%H:%M:%S.%e] [%l] [%t] %v");
    }
    return lg;
  }();
  return l.get();
}

}  // namespace uvmrt
