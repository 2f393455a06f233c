// weft's diagnostics logger (weft/detail/diagnostics.hpp): stderr, never destroyed.
#include "weft/detail/diagnostics.hpp"

#include <cstdlib>

#include <spdlog/sinks/stdout_sinks.h>

namespace weft::detail {

spdlog::logger& diagnostics() {
  static spdlog::logger* const log =
      new spdlog::logger("weft", std::make_shared<spdlog::sinks::stderr_sink_mt>());  // never destroyed
  return *log;
}

// With --wrap=abort this names the C library's abort; without the option, nothing (a null weak
// reference): std::abort is then the C library's itself.
extern "C" [[gnu::weak, noreturn]] void __real_abort() noexcept;

[[noreturn]] void abort_unwrapped() noexcept {
  void (*volatile real)() noexcept = &__real_abort;  // (volatile: the compiler may not assume non-null)
  if (real) real();
  std::abort();
}

}  // namespace weft::detail
