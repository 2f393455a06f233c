// weft's diagnostics logger (weft/detail/diagnostics.hpp): stderr, never destroyed.
#include "weft/detail/diagnostics.hpp"

#include <spdlog/sinks/stdout_sinks.h>

namespace weft::detail {

spdlog::logger& diagnostics() {
  static spdlog::logger* const log =
      new spdlog::logger("weft", std::make_shared<spdlog::sinks::stderr_sink_mt>());  // never destroyed
  return *log;
}

}  // namespace weft::detail
