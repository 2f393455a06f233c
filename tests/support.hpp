// Shared helpers for weft's tests: an event log to compare orders with SEMANTICS.md, and a fixture
// that gives every test a fresh runtime and checks that nothing leaked.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <weft/stm.hpp>
#include <weft/weft.hpp>

namespace weft::test {

/// Records events; str() joins them with spaces, as SEMANTICS.md writes orders. The events live in a
/// tvar (DESIGN.md §5): tasklets and main may append, a segment that is rolled back and run again
/// appends nothing twice, and tasklets on several workers do not race. Each call is one transaction
/// (flattened into the enclosing segment or transaction, if any).
struct event_log {
  void operator()(std::string e) {
    weft::atomically([&] { events_.modify([&](std::vector<std::string>& v) { v.push_back(e); }); });
  }
  std::string str() const {
    std::string s;
    for (const auto& e : events()) {
      if (!s.empty()) s += ' ';
      s += e;
    }
    return s;
  }
  void clear() { weft::atomically([&] { events_.set({}); }); }
  /// A copy of the events so far.
  std::vector<std::string> events() const {
    return weft::atomically([&] { return events_.get(); });
  }

 private:
  weft::tvar<std::vector<std::string>> events_{{}, "event_log"};
};

/// Appends v to a vector kept in a tvar: what tasklets record for main to check after run().
template <class T, class U>
void append(weft::tvar<std::vector<T>>& to, U&& v) {
  T value(std::forward<U>(v));
  weft::atomically([&] { to.modify([&](std::vector<T>& vec) { vec.push_back(value); }); });
}

/// Busy-waits about `us` microseconds (a segment of that length: no switch point, no allocation).
inline void spin_us(int us) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  while (std::chrono::steady_clock::now() < until) {
  }
}

/// Appends `what` to the log when destroyed: shows which frames unwound, and in which order.
struct on_unwind {
  event_log* log;
  std::string what;
  ~on_unwind() { (*log)(what); }
};

/// A random seed, or WEFT_TEST_SEED; printed so that a failing stress run can be replayed.
inline std::uint64_t seed_from_env(const char* what) {
  std::uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("WEFT_TEST_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::printf("%s: seed %llu (rerun with WEFT_TEST_SEED=%llu)\n", what, static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  return seed;
}

/// Starts each test with no runtime; at the end shuts the runtime down (killing what is left).
/// check_clean() asserts that nothing is left alive and no stack is in use after the shutdown.
struct fresh_runtime {
  fresh_runtime() { weft::shutdown(); }
  ~fresh_runtime() {
    try {
      weft::shutdown();
    } catch (...) {
    }
  }
  static void check_clean() {
    auto c = weft::shutdown();
    CHECK(c.live_tasklets == 0);
    CHECK(c.stacks_in_use == 0);
  }
};

/// Runs f, expecting an exception of type E whose what() is exactly `message`.
template <class E, class F>
void require_throws_message(F&& f, const std::string& message) {
  try {
    f();
  } catch (const E& e) {
    CHECK(std::string(e.what()) == message);
    return;
  }
  FAIL("expected an exception: " << message);
}

/// This thread's STM counters. A thread appears in stats() from its first transaction on: one that has
/// not run any is registered here by an empty transaction (before a test's first snapshot), so that a
/// comparison never passes against zeros made up for a thread stats() did not list.
inline weft::stm_counters my_counters() {
  for (int round = 0; round < 2; ++round) {
    for (const auto& t : weft::stats().per_thread)
      if (t.thread == std::this_thread::get_id()) return t.counters;
    weft::atomically([] {});
  }
  FAIL("stats() does not list this thread although it has run a transaction");
  return {};
}

/// Solo mode is on unless the test process runs with WEFT_STM_SOLO=0 (CTest runs every [stm] test
/// both ways). It applies only while one thread uses the STM.
inline bool solo_on() {
  const char* e = std::getenv("WEFT_STM_SOLO");
  return !(e && std::string(e) == "0");
}

inline std::string flags(const weft::tasklet& t) {
  std::string s;
  s += t.alive() ? 'a' : '-';
  s += t.blocked() ? 'b' : '-';
  s += t.scheduled() ? 's' : '-';
  s += t.paused() ? 'p' : '-';
  return s;
}

}  // namespace weft::test
