// Process-wide options: configure(), environment overrides, and the rule that options change only
// while no runtime runs (active_runtimes counts runtimes between first use and shutdown).
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>

#include <spdlog/spdlog.h>

#include "weft/scheduler.hpp"

namespace weft {

namespace {
std::mutex options_lock;  // protects configured; never held while running tasklets
options configured;
std::atomic<int> active_runtimes{0};

void validate(const options& o) {
  if (o.workers == 0) throw std::invalid_argument("weft::options::workers must be at least 1");
  if (o.stack_size < 16 * 1024 || o.stack_size > (std::size_t{1} << 30))
    throw std::invalid_argument("weft::options::stack_size must be between 16 KiB and 1 GiB");
}

std::size_t parse_size(const char* name, const char* text) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (end == text) throw std::invalid_argument(std::string(name) + ": not a number: " + text);
  switch (*end) {
    case 'k': case 'K': v <<= 10; ++end; break;
    case 'm': case 'M': v <<= 20; ++end; break;
    default: break;
  }
  if (*end) throw std::invalid_argument(std::string(name) + ": not a size: " + text);
  return static_cast<std::size_t>(v);
}
}  // namespace

void configure(const options& o) {
  validate(o);
  std::lock_guard lock(options_lock);
  if (active_runtimes.load() != 0)
    throw std::logic_error("weft::configure() must be called before weft is first used (or after weft::shutdown())");
  configured = o;
}

options configuration() {
  options o;
  {
    std::lock_guard lock(options_lock);
    o = configured;
  }
  if (const char* w = std::getenv("WEFT_WORKERS"); w && *w)
    o.workers = static_cast<unsigned>(parse_size("WEFT_WORKERS", w));
  if (const char* s = std::getenv("WEFT_STACK_SIZE"); s && *s) o.stack_size = parse_size("WEFT_STACK_SIZE", s);
  if (const char* g = std::getenv("WEFT_STACK_GUARD"); g && *g) o.stack_guard = std::string(g) != "0";
#ifdef NDEBUG
  if (!o.stack_guard) o.stack_guard = false;
#else
  if (!o.stack_guard) o.stack_guard = true;
#endif
  validate(o);
  return o;
}

namespace detail {

options effective_options() {
  options o = configuration();
  if (o.workers > 1) {
    static std::once_flag warned;
    std::call_once(warned, [&] {
      spdlog::warn("weft: workers = {} requested, but the parallel modes are not built yet; running on "
                   "1 worker (results are the same)", o.workers);
    });
  }
  return o;
}

void runtime_started() { active_runtimes.fetch_add(1); }
void runtime_stopped() { active_runtimes.fetch_sub(1); }

}  // namespace detail
}  // namespace weft
