// Process-wide options: configure(), environment overrides, and the rule that options change only
// while no runtime runs (active_runtimes counts runtimes between first use and shutdown).
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <string>
#include <utility>

#include <spdlog/spdlog.h>

#include "weft/scheduler.hpp"

namespace weft {
namespace detail {
std::uint64_t guard_segment_ns();  // (below)
}  // namespace detail

namespace {
std::mutex options_lock;  // protects configured; never held while running tasklets
options configured;
std::atomic<int> active_runtimes{0};

void validate(const options& o) {
  if (o.workers == 0) throw std::invalid_argument("weft::options::workers must be at least 1");
  if (o.workers > 1024) throw std::invalid_argument("weft::options::workers must be at most 1024");
  if (o.mode == mode::relaxed)
    throw std::invalid_argument("weft: relaxed mode is not built yet (use serial or ordered)");
  if (o.mode == mode::serial && o.workers > 1)
    throw std::invalid_argument("weft: serial mode runs on one worker (workers = " + std::to_string(o.workers) +
                                " asked for; use ordered mode)");
  if (o.mode == mode::serial && o.replay_every)
    throw std::invalid_argument("weft: WEFT_CHECK=replay runs segments speculatively: it needs ordered mode "
                                "(WEFT_MODE=ordered, or more than one worker)");
  if (!(o.abort_inject >= 0.0 && o.abort_inject <= 1.0))
    throw std::invalid_argument("weft::options::abort_inject must be a probability between 0 and 1");
  if (o.mode == mode::serial && o.abort_inject > 0)
    throw std::invalid_argument("weft::options::abort_inject rolls back speculative segments: it needs ordered mode "
                                "(mode::ordered, or more than one worker)");
  if (o.stack_size < 16 * 1024 || o.stack_size > (std::size_t{1} << 30))
    throw std::invalid_argument("weft::options::stack_size must be between 16 KiB and 1 GiB");
}

// A whole number, no suffix: counts and seeds (WEFT_WORKERS=1K or 2.5 is a mistake, not 1024 or 2).
unsigned long long parse_number(const char* name, const char* text) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = *text == '-' ? 0 : std::strtoull(text, &end, 10);
  if (*text == '-' || end == text || *end || errno == ERANGE)
    throw std::invalid_argument(std::string(name) + ": not a whole number: " + text);
  return v;
}
// Bytes, with an optional K, M or G suffix (powers of 1024).
std::size_t parse_size(const char* name, const char* text) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = *text == '-' ? 0 : std::strtoull(text, &end, 10);
  if (*text == '-' || end == text || errno == ERANGE)
    throw std::invalid_argument(std::string(name) + ": not a size (bytes, or a number with K, M or G): " + text);
  unsigned shift = 0;
  switch (*end) {
    case 'k': case 'K': shift = 10; ++end; break;
    case 'm': case 'M': shift = 20; ++end; break;
    case 'g': case 'G': shift = 30; ++end; break;
    default: break;
  }
  if (*end) throw std::invalid_argument(std::string(name) + ": not a size (bytes, or a number with K, M or G): " + text);
  if (shift && v > (~0ULL >> shift)) v = ~0ULL;  // too large: the range check names it
  else v <<= shift;
  return static_cast<std::size_t>(v);
}
// 0 or 1: a switch (anything else was taken as one of the two without a word).
bool parse_flag(const char* name, const char* text) {
  const std::string t(text);
  if (t == "0") return false;
  if (t == "1") return true;
  throw std::invalid_argument(std::string(name) + ": 0 (off) or 1 (on), not " + text);
}
double parse_probability(const char* name, const char* text) {
  char* end = nullptr;
  double v = std::strtod(text, &end);
  if (end == text || *end || !(v >= 0.0 && v <= 1.0))
    throw std::invalid_argument(std::string(name) + ": not a probability between 0 and 1: " + text);
  return v;
}

mode parse_mode(const char* name, const char* text) {
  const std::string t(text);
  if (t == "serial") return mode::serial;
  if (t == "ordered") return mode::ordered;
  if (t == "relaxed") throw std::invalid_argument(std::string(name) + "=relaxed: relaxed mode is not built yet (use serial or ordered)");
  throw std::invalid_argument(std::string(name) + ": not a mode (serial or ordered): " + text);
}
}  // namespace

void configure(const options& o) {
  validate(o);
  options previous;
  {
    std::lock_guard lock(options_lock);
    if (active_runtimes.load() != 0)
      throw std::logic_error("weft::configure() must be called before weft is first used (or after weft::shutdown())");
    previous = std::exchange(configured, o);
  }
  // With the WEFT_ variables applied: a combination they make unusable is reported here, by the
  // call that made it, not by the first use of weft after it.
  try {
    (void)configuration();
  } catch (...) {
    std::lock_guard lock(options_lock);
    configured = previous;
    throw;
  }
}

options configuration() {
  options o;
  {
    std::lock_guard lock(options_lock);
    o = configured;
  }
  if (const char* w = std::getenv("WEFT_WORKERS"); w && *w) {
    const unsigned long long n = parse_number("WEFT_WORKERS", w);
    if (n == 0 || n > 1024) throw std::invalid_argument(std::string("WEFT_WORKERS: not between 1 and 1024: ") + w);
    o.workers = static_cast<unsigned>(n);
  }
  const char* m = std::getenv("WEFT_MODE");
  if (m && *m) o.mode = parse_mode("WEFT_MODE", m);
  // Both from the environment (or WEFT_MODE=serial with a program that asked for workers): name them.
  if (m && *m && o.mode == mode::serial && o.workers > 1)
    throw std::invalid_argument(std::string("WEFT_MODE=serial: serial mode runs on one worker, and ") +
                                (std::getenv("WEFT_WORKERS") ? std::string("WEFT_WORKERS=") + std::getenv("WEFT_WORKERS")
                                                             : "the program's options") +
                                (std::getenv("WEFT_WORKERS") ? " asks for " : " ask for ") + std::to_string(o.workers) +
                                "; use WEFT_MODE=ordered");
  // The program asked for serial mode (configure) and WEFT_WORKERS for more workers: name the
  // variable (round 8: the message spoke of "workers = 2", which the program never set).
  if (o.mode == mode::serial && o.workers > 1 && !(m && *m) && std::getenv("WEFT_WORKERS"))
    throw std::invalid_argument(std::string("WEFT_WORKERS=") + std::getenv("WEFT_WORKERS") +
                                ": the program configured serial mode, which runs on one worker; set "
                                "WEFT_MODE=ordered as well, or leave WEFT_WORKERS unset");
  if (const char* p = std::getenv("WEFT_ABORT_INJECT"); p && *p)
    o.abort_inject = parse_probability("WEFT_ABORT_INJECT", p);
  if (const char* sd = std::getenv("WEFT_SEED"); sd && *sd) o.seed = parse_number("WEFT_SEED", sd);
  if (const char* c = std::getenv("WEFT_CHECK"); c && *c) {
    const std::string v(c);
    if (v == "replay") {
      o.replay_every = 1;
    } else if (v.rfind("replay:", 0) == 0 && v.size() > 7) {
      const unsigned long long n = parse_number("WEFT_CHECK", v.c_str() + 7);
      if (n == 0 || n > 1'000'000'000) throw std::invalid_argument("WEFT_CHECK: replay:N needs 1 <= N: " + v);
      o.replay_every = static_cast<unsigned>(n);
    } else {
      throw std::invalid_argument("WEFT_CHECK: not a check (replay or replay:N): " + v);
    }
  }
  // Injection and replay act on speculative segments: asked for without a mode, they bring ordered
  // mode with them (round 12: WEFT_ABORT_INJECT=0.3 alone ran serial, injecting nothing, silently).
  if (!o.mode) o.mode = o.workers > 1 || o.replay_every || o.abort_inject > 0 ? mode::ordered : mode::serial;
  if (o.mode == mode::serial && o.abort_inject > 0 && std::getenv("WEFT_ABORT_INJECT"))
    throw std::invalid_argument(std::string("WEFT_ABORT_INJECT=") + std::getenv("WEFT_ABORT_INJECT") +
                                ": abort injection rolls back speculative segments, which serial mode does not "
                                "run; set WEFT_MODE=ordered (or WEFT_WORKERS=2), or leave the mode unset");
  if (const char* s = std::getenv("WEFT_STACK_SIZE"); s && *s) {
    o.stack_size = parse_size("WEFT_STACK_SIZE", s);
    if (o.stack_size < 16 * 1024 || o.stack_size > (std::size_t{1} << 30))
      throw std::invalid_argument(std::string("WEFT_STACK_SIZE: not between 16K and 1G: ") + s);
  }
  if (const char* g = std::getenv("WEFT_STACK_GUARD"); g && *g) o.stack_guard = parse_flag("WEFT_STACK_GUARD", g);
  // Read by ordered mode and at a runtime's end; checked here, in every mode, with the rest.
  for (const char* name : {"WEFT_GUARD", "WEFT_STATS"})
    if (const char* v = std::getenv(name); v && *v) (void)parse_flag(name, v);
  (void)detail::guard_segment_ns();
  // Guard pages in every build (a Release overflow was a bare segfault, or silent corruption of the
  // neighbouring stack): as many as vm.max_map_count allows with room to spare; beyond that, and
  // with WEFT_STACK_GUARD=0, the stack-pointer check at switch points (gc/src/stack_pool.cpp).
  if (!o.stack_guard) o.stack_guard = true;
  validate(o);
  return o;
}

namespace detail {

options effective_options() { return configuration(); }

std::uint64_t guard_segment_ns() {
  const char* v = std::getenv("WEFT_GUARD_US");
  if (!v || !*v) return 2500;
  char* end = nullptr;
  const double us = std::strtod(v, &end);
  if (end == v || *end || !(us >= 0.01 && us <= 1e6))
    throw std::invalid_argument(std::string("WEFT_GUARD_US: not a segment length in microseconds between 0.01 and "
                                            "1000000: ") + v);
  return static_cast<std::uint64_t>(us * 1e3 + 0.5);
}

void runtime_started() { active_runtimes.fetch_add(1); }
void runtime_stopped() { active_runtimes.fetch_sub(1); }

}  // namespace detail
}  // namespace weft
