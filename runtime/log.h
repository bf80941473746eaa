// log.h: the runtime's logger.  spdlog, to stderr, quiet by default (warn);
// UVMRT_LOG=trace|debug|info|warn|error|off sets the level.
#ifndef UVMRT_LOG_H_
#define UVMRT_LOG_H_

#include <spdlog/spdlog.h>

namespace uvmrt {

// The "uvmrt" logger, created on first use.
// => any thread.
spdlog::logger* logger();

}  // namespace uvmrt

#endif  // UVMRT_LOG_H_
