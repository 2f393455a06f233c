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

/// The C library's abort(), also in a program linked with weft's --wrap=abort (whose abort() first
/// waits for the calling tasklet's turn in ordered mode, scheduler/src/irrevocable.cpp): weft's own
/// fatal reports end the process at once, from any state (a signal handler, an overflowed stack).
[[noreturn]] void abort_unwrapped() noexcept;

}  // namespace weft::detail
