// weft/detail/diagnostics.hpp — weft's own messages (warnings, WEFT_STATS, WEFT_PROFILE reports).
//
// They go to standard error through a logger named "weft" that is not registered with spdlog's
// registry (a program's own logger of that name, or its default logger, is left alone) and is never
// destroyed (usable from exit handlers and thread exits). Standard output belongs to the program.
#pragma once

#include <spdlog/logger.h>

namespace weft::detail {

/// Thread-safe. The first call makes the logger.
spdlog::logger& diagnostics();

}  // namespace weft::detail
