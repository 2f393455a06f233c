// Ordered mode (DESIGN.md §4): what holds at every worker count. The mode matrix runs these serially,
// at two workers with and without abort injection, and speculative at one worker; checks that only
// make sense with several workers look at weft::configuration() and run_stats().
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>

#include <sys/resource.h>

#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>
#include <weft/detail/epoch.hpp>
#include <weft/log.hpp>
#include <weft/shared.hpp>

#include "support.hpp"

using namespace weft;
using weft::test::event_log;
using weft::test::fresh_runtime;
using weft::test::spin_us;

namespace {
bool ordered_two_or_more() {
  const options o = configuration();
  return o.mode == mode::ordered && o.workers >= 2;
}

// Not inlined, so that the compiler cannot prove anything about the exception thrown across it.
[[gnu::noinline]] void throw_int(int v) { throw v; }
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "tasklets that move between threads see their own state after every switch",
                 "[unit][ordered]") {
  // Each tasklet switches 300 times. After every switch it must still be getcurrent(), its
  // transaction must be its own (a tvar it wrote reads back), a C++ exception thrown and caught
  // there must work, and no exception may be in flight. At two workers the tasklets run on both
  // threads (each records the threads it ran on after every switch, in a local array), so a stale
  // thread-local, errno-style address or exception state shows up as a failure. Built at -O3 in
  // Release, -O0 in the sanitizer builds.
  constexpr int tasklets = 8, rounds = 300;
  // One run; returns how many threads the tasklets ran on. A worker thread that gets no CPU during
  // a run (a loaded machine: a ~15 ms run, twice in a suite run beside a fuzzer) leaves nothing to
  // check, so the run is repeated until they moved (at most 8 runs), each checked as the first.
  auto one_run = [&] {
    tvar<int> bad{0};
    tvar<std::set<std::size_t>> threads_seen;
    std::vector<tasklet> ts;
    for (int i = 0; i < tasklets; ++i) {
      ts.push_back(spawn([&, i] {
        tasklet self = getcurrent();
        tvar<int> mine{0};
        // On the tasklet's stack, no heap (a std::set's nodes are plain heap memory that a rollback
        // would not restore): rolled back with the stack.
        std::array<std::size_t, 4> seen_here{};
        std::size_t seen_count = 0;
        for (int k = 0; k < rounds; ++k) {
          mine.set(k);
          schedule();
          int caught = -1;
          try {
            throw_int(k + i);
          } catch (int v) {
            caught = v;
          }
          const bool ok = getcurrent() == self && mine.get() == k && caught == k + i &&
                          std::uncaught_exceptions() == 0 && !getcurrent().is_main();
          if (!ok) bad.set(bad.get() + 1);
          const std::size_t here = std::hash<std::thread::id>{}(std::this_thread::get_id());
          if (std::find(seen_here.begin(), seen_here.begin() + seen_count, here) == seen_here.begin() + seen_count &&
              seen_count < seen_here.size())
            seen_here[seen_count++] = here;
        }
        threads_seen.modify([&](auto& s) { s.insert(seen_here.begin(), seen_here.begin() + seen_count); });
      }));
    }
    run();
    CHECK(bad.get() == 0);
    for (auto& t : ts) CHECK(!t.alive());
    return threads_seen.get().size();
  };
  std::size_t threads = one_run();
  for (int again = 1; again < 8 && threads < 2 && ordered_two_or_more() && !run_stats().fell_back_to_serial; ++again)
    threads = one_run();
  if (ordered_two_or_more() && !run_stats().fell_back_to_serial) CHECK(threads >= 2);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a segment that keeps conflicting with a plain thread runs inevitable after K aborts",
                 "[stress][ordered]") {
  // A segment reads x, then waits until a plain thread has written x twice more (up to 2 s), then
  // writes its result: every speculative attempt is invalidated, at the head too. After K such aborts
  // it runs inevitable (x reserved: the writer waits for it, and the wait here times out) and commits.
  tvar<long> x{0}, result{-1};
  std::atomic<long> writes{0};
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (long v = 1; !done.load(std::memory_order_relaxed); ++v) {
      x.set(v);
      writes.fetch_add(1, std::memory_order_release);
    }
  });
  spawn([&] {
    const long seen = x.get();
    const long start = writes.load(std::memory_order_acquire);  // test synchronisation, outside the contract
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (writes.load(std::memory_order_acquire) < start + 2 && std::chrono::steady_clock::now() < deadline) {
    }
    result.set(seen);
  });
  run();
  done = true;
  writer.join();
  CHECK(result.get() >= 0);
  if (configuration().mode == mode::ordered) {
    const run_statistics st = run_stats();
    INFO("conflicts " << st.aborts_conflict << ", inevitable " << st.inevitable);
    CHECK(st.aborts_conflict >= 1);
    CHECK(st.inevitable >= 1);
  }
  fresh_runtime::check_clean();
}

namespace {
// A tvar local to a frame that returns in a later segment than the one that made it; the next
// frame at that depth fills the same stack bytes and switches with them live.
[[gnu::noinline]] long use_a_local_tvar(long k) {
  tvar<long> local{k};
  schedule();  // `local` was made by the previous segment
  local.set(local.get() + 1);
  return local.get();
}  // ... and dies in this one
[[gnu::noinline]] bool frame_survives_the_commit(long k) {
  volatile long words[64];
  for (int i = 0; i < 64; ++i) words[i] = k * 64 + i;
  schedule();  // the segment that destroyed `local` commits while this frame waits here
  for (int i = 0; i < 64; ++i)
    if (words[i] != k * 64 + i) return false;
  return true;
}
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "a local tvar that dies in a segment is not touched by its commit",
                 "[unit][ordered]") {
  // The commit of the segment that destroyed it once wrote its "destroyed" version and the buffered
  // write into its old bytes — by then another frame's locals on the suspended tasklet's stack.
  tvar<long> damaged{0}, sum{0};
  for (int t = 0; t < 4; ++t) {
    spawn([&, t] {
      for (long k = 0; k < 50; ++k) {
        const long v = use_a_local_tvar(k + t);
        if (!frame_survives_the_commit(k)) damaged.set(damaged.get() + 1);
        sum.set(sum.get() + v);
      }
    });
  }
  run();
  CHECK(damaged.get() == 0);
  long expected = 0;
  for (int t = 0; t < 4; ++t)
    for (long k = 0; k < 50; ++k) expected += k + t + 1;
  CHECK(sum.get() == expected);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "segments commit without tvar locks until a plain thread uses the STM and totals hold across the change",
                 "[stress][ordered]") {
  // Sole run (stm/src/transaction.cpp): while the run's threads are the only ones using the STM,
  // its segments commit without tvar locks. A plain thread's first transaction ends that (waiting
  // for a commit in flight) before it commits anything: from then on every commit takes locks. The
  // tasklets and the plain thread move money between the same accounts; the total is conserved.
  const std::uint64_t seed = weft::test::seed_from_env("sole run");
  constexpr int accounts = 32, tasklets = 6, rounds = 150;
  constexpr long opening = 1000;
  std::deque<tvar<long>> balance;
  for (int i = 0; i < accounts; ++i) balance.emplace_back(opening);
  std::atomic<long> segments_done{0};  // test synchronisation only (not rolled back: counts attempts)
  std::atomic<bool> run_over{false}, first_done{false};
  std::uint64_t sole_at_first = 0;
  auto transfer = [&](std::uint64_t& x) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    const auto from = static_cast<std::size_t>((x >> 33) % accounts);
    const auto to = (from + 1 + static_cast<std::size_t>((x >> 17) % (accounts - 1))) % accounts;
    atomically([&] {
      const long moved = std::min<long>(balance[from].get(), static_cast<long>((x >> 45) % 50));
      balance[from].set(balance[from].get() - moved);
      balance[to].set(balance[to].get() + moved);
    });
  };
  std::thread plain([&] {
    while (segments_done.load(std::memory_order_relaxed) < tasklets * rounds / 3 && !run_over.load()) std::this_thread::yield();
    std::uint64_t x = seed ^ 0xabcdef;
    transfer(x);  // this thread's first transaction: no commit without locks from here on
    sole_at_first = weft::stats().total.sole_run;
    first_done = true;
    while (!run_over.load(std::memory_order_relaxed)) transfer(x);
  });
  for (int t = 0; t < tasklets; ++t) {
    spawn([&, t] {
      std::uint64_t x = seed + static_cast<std::uint64_t>(t) * 977;
      for (int round = 0; round < rounds; ++round) {
        for (int k = 0; k < 8; ++k) transfer(x);
        weft::test::spin_us(20);  // long enough segments: the guard keeps the run parallel
        segments_done.fetch_add(1, std::memory_order_relaxed);
        schedule();
      }
    });
  }
  run();
  const run_statistics st = run_stats();
  while (!first_done.load()) std::this_thread::yield();  // (the run may end before the thread starts)
  const std::uint64_t sole_at_end = weft::stats().total.sole_run;  // the plain thread still registered
  run_over = true;
  plain.join();
  long total = 0;
  for (const tvar<long>& b : balance) total += b.get();
  CHECK(total == accounts * opening);
  INFO("workers " << st.workers << ", fell back " << st.fell_back_to_serial << ", sole-run commits "
                  << sole_at_first << " then " << sole_at_end);
  CHECK(sole_at_end == sole_at_first);  // none once the plain thread had begun
  if (st.mode == weft::mode::serial) CHECK(sole_at_end == 0);  // no segments
  // In ordered mode the plain thread starts after a third of the segments ran: most of those
  // committed without locks (unless the guard drained the run at once).
  if (st.mode == weft::mode::ordered && !st.fell_back_to_serial) CHECK(sole_at_first > 0);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "an inevitable segment reads a consistent state while plain threads commit beside it",
                 "[stress][ordered]") {
  // Two plain threads move money between 64 accounts in transactions of their own (foreign
  // committers: not part of the run's commit order). Auditor tasklets sum the accounts inevitably,
  // with a pause in the middle of the sum: at the head of an ordered run an inevitable segment
  // does not reserve what it reads (stm/src/transaction.cpp, exclusive inevitability), so the
  // plain threads' commits must wait for it, or a transfer lands between its two halves and the sum
  // is off. The total is conserved in every audit and at the end.
  constexpr int accounts = 64;
  constexpr long opening = 100;
  std::deque<tvar<long>> balance;
  for (int i = 0; i < accounts; ++i) balance.emplace_back(opening);
  tvar<long> wrong{0}, audits{0};
  std::atomic<bool> done{false};
  std::atomic<long> transfers{0};
  auto mover = [&](std::uint64_t seed) {
    std::uint64_t x = seed;
    while (!done.load(std::memory_order_relaxed)) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      const auto from = static_cast<std::size_t>((x >> 33) % accounts);
      const auto to = (from + 1 + static_cast<std::size_t>((x >> 17) % (accounts - 1))) % accounts;
      atomically([&] {
        const long moved = std::min<long>(balance[from].get(), 7);
        balance[from].set(balance[from].get() - moved);
        balance[to].set(balance[to].get() + moved);
      });
      transfers.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::thread m1(mover, 1), m2(mover, 2);
  while (transfers.load(std::memory_order_relaxed) < 100) std::this_thread::yield();
  for (int a = 0; a < 3; ++a) {
    spawn([&] {
      for (int round = 0; round < 20; ++round) {
        atomically([&] {
          become_inevitable("test: audit");
          long sum = 0;
          for (int i = 0; i < accounts / 2; ++i) sum += balance[i].get();
          const long seen = transfers.load(std::memory_order_relaxed);  // test synchronisation only
          const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
          while (transfers.load(std::memory_order_relaxed) < seen + 3 && std::chrono::steady_clock::now() < until) {
          }
          for (int i = accounts / 2; i < accounts; ++i) sum += balance[i].get();
          if (sum != accounts * opening) wrong.set(wrong.get() + 1);
          audits.set(audits.get() + 1);
        });
        schedule();
      }
    });
  }
  run();
  done = true;
  m1.join();
  m2.join();
  long total = 0;
  for (const tvar<long>& b : balance) total += b.get();
  INFO("transfers by the plain threads: " << transfers.load());
  CHECK(wrong.get() == 0);
  CHECK(audits.get() == 60);
  CHECK(total == accounts * opening);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "become_inevitable in a segment runs the rest of it at the head, in serial order",
                 "[unit][ordered]") {
  // After become_inevitable a segment may do irreversible things: here, append to a plain vector
  // (outside the memory contract). The appends happen in serial order, once each, even with abort
  // injection (an inevitable segment is never rolled back).
  std::vector<int> irreversible;
  event_log log;
  for (int i = 0; i < 10; ++i) {
    spawn([&, i] {
      log(fmt::format("before-{}", i));
      become_inevitable("test: irreversible append");
      irreversible.push_back(i);
      weft::print("");  // printing after it goes out directly, in order
      schedule();
      log(fmt::format("after-{}", i));
    });
  }
  run();
  CHECK(irreversible == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  std::string expected;
  for (int i = 0; i < 10; ++i) expected += fmt::format("{}before-{}", i ? " " : "", i);
  for (int i = 0; i < 10; ++i) expected += fmt::format(" after-{}", i);
  CHECK(log.str() == expected);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "retry() in a tasklet outside or_else is refused with a clear error",
                 "[unit][ordered]") {
  // In every mode: with one worker the wait blocked the thread, and with it the tasklet that would
  // have changed the tvar (a hang). Inside or_else's first branch it chooses the second, as anywhere.
  tvar<int> x{0, "x"};
  tvar<std::string> what;
  event_log log;
  spawn([&] {
    try {
      atomically([&] {
        if (x.get() == 0) retry();
      });
    } catch (const std::logic_error& e) {
      what.set(e.what());
    }
    log(or_else([&] { if (x.get() == 0) retry(); return std::string("first"); }, [] { return std::string("second"); }));
  });
  spawn([&] { x.set(1); });
  tvar<std::string> outside;
  spawn([&] {
    try {
      retry();  // outside any atomically: the same error at every worker count (round 19 found two)
    } catch (const std::logic_error& e) {
      outside.set(e.what());
    }
  });
  run();
  CHECK(what.get().find("weft::retry() in a tasklet") == 0);
  CHECK(outside.get() == "weft::retry() called outside a transaction");
  CHECK(log.str() == "second");
  CHECK(x.get() == 1);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a retry signal swallowed by catch (...) in a tasklet's or_else is reported where one worker reports it",
                 "[unit][ordered]") {
  // A newcomer's program (round 6): with one worker the block's commit throws std::logic_error and
  // its writes are dropped; in a segment the signal stayed pending, the segment could never commit
  // and ran again until it was inevitable at the head, then was "rolled back" without a snapshot
  // (a segfault) or committed without the write. Three places: or_else alone, inside atomically,
  // and after a switch point.
  tvar<int> a{0, "a"};
  event_log log;
  auto body = [&] {
    try {
      const int r = or_else(
          [&]() -> int {
            try {
              a.set(a.get() + 1);
              retry();
            } catch (...) {
              log("swallowed");
            }
            return 1;
          },
          [] { return 2; });
      log(fmt::format("gave-{}-a-{}", r, a.get()));
    } catch (const std::logic_error& e) {
      log(fmt::format("logic_error-a-{}", a.get()));
      CHECK(std::string(e.what()).find("a retry signal was caught inside a transaction") != std::string::npos);
    }
  };
  spawn(body);
  spawn([&] {  // the error comes from the outermost block: inside it, body sees or_else return
    try {
      atomically([&] { body(); });
    } catch (const std::logic_error&) {
      log("outer-logic_error");
    }
  });
  spawn([&] {
    schedule();
    body();
    schedule();
    log("after");
  });
  spawn([&] { log("other"); });
  run();
  // "swallowed" and "gave-1-a-1" were logged inside the transaction that failed: rolled back too.
  CHECK(log.str() == "logic_error-a-0 outer-logic_error other logic_error-a-0 after");
  CHECK(a.get() == 0);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a swallowed retry signal ends with the block that an exception leaves as with one worker",
                 "[unit][ordered]") {
  // The outermost block of a segment is what one worker runs as a transaction of its own: an
  // exception leaving it ends that transaction, and a retry signal caught inside it goes with it.
  // Left pending in the segment, the segment could never commit (the crash of the test above).
  tvar<int> a{0, "a"};
  event_log log;
  spawn([&] {
    schedule();
    try {
      or_else(
          [&]() -> int {
            try {
              a.set(a.get() + 1);
              retry();
            } catch (...) {
            }
            throw std::runtime_error("after the swallowed retry");
          },
          [] { return 2; });
    } catch (const std::runtime_error& e) {
      log(fmt::format("{}-a-{}", e.what(), a.get()));
    }
    schedule();
    log("after");
  });
  spawn([&] { log("other"); });
  run();
  CHECK(log.str() == "other after the swallowed retry-a-0 after");
  CHECK(a.get() == 0);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "become_inevitable in a tasklet goes on where it is called as with one worker",
                 "[unit][ordered]") {
  // With one worker the tasklet's transaction runs solo: becoming inevitable there started the
  // attempt over, so the code before the call ran twice (the nested block's on_abort hook too),
  // once in ordered mode (round 7, min1). It goes on now in both.
  tvar<int> a{0, "a"};
  event_log log;
  spawn([&] {
    schedule();
    int attempts = 0;  // on the tasklet's stack: restored with it when a segment is rolled back
    atomically([&] {
      ++attempts;
      a.set(a.get() + 1);
      try {
        atomically([&] {
          on_abort([&] { log("inner-on_abort"); });
          throw std::runtime_error("inner");
        });
      } catch (const std::runtime_error&) {
      }
      become_inevitable("test");
      a.set(a.get() + 10);
    });
    log(fmt::format("attempts-{}-a-{}", attempts, a.get()));
  });
  spawn([&] { log("other"); });
  run();
  CHECK(log.str() == "other inner-on_abort attempts-1-a-11");
  fresh_runtime::check_clean();
}

TEST_CASE("each variant of the mode matrix runs with the settings it is named after", "[unit][ordered]") {
  // tests/CMakeLists.txt names each run (--name) and passes its settings (--env, tests/main.cpp).
  const std::string run = Catch::getCurrentContext().getConfig()->name();
  const options o = configuration();
  INFO("run " << run << ": workers " << o.workers << ", inject " << o.abort_inject);
  if (run == "ordered-2") {
    CHECK((o.workers == 2 && o.mode == mode::ordered && o.abort_inject == 0));
  } else if (run == "ordered-2-inject") {
    CHECK((o.workers == 2 && o.mode == mode::ordered && o.abort_inject == 0.3));
  } else if (run == "ordered-1-inject") {
    CHECK((o.workers == 1 && o.mode == mode::ordered && o.abort_inject == 0.3));
  } else {
    SUCCEED("not a variant of the matrix: no settings to compare with");
  }
}

TEST_CASE("ordered-mode options are checked, with the variable's name in the error", "[unit][ordered]") {
  CHECK_THROWS_WITH(configure({.mode = mode::relaxed}), Catch::Contains("relaxed mode is not built yet"));
  CHECK_THROWS_WITH(configure({.abort_inject = 1.5}), Catch::Contains("abort_inject"));
  CHECK_THROWS_WITH(configure({.workers = 2, .mode = mode::serial}), Catch::Contains("serial mode runs on one worker"));
}

TEST_CASE_METHOD(fresh_runtime, "run_stats counts every thread's segments, commits and time, worker threads included",
                 "[unit][ordered]") {
  // Segments of ~20 us (the one-way guard keeps the run parallel), a ring of 8 tasklets.
  for (int t = 0; t < 8; ++t)
    spawn([&] {
      for (int i = 0; i < 25; ++i) {
        spin_us(20);
        // A hook parks the segment for the head, where it goes on inevitable: one segment in two
        // runs, counted once (round 12: twice, so the counts did not add up).
        if (i % 5 == 0) atomically([] { on_commit([] {}); });
        schedule();
      }
    });
  run();
  const run_statistics st = run_stats();
  if (configuration().mode != mode::ordered) {
    CHECK(st.mode == mode::serial);  // nothing measured
    CHECK(st.per_thread.empty());
    return;
  }
  REQUIRE(st.per_thread.size() == configuration().workers);
  std::uint64_t segments = 0, commits = 0, aborts = 0;
  for (const auto& t : st.per_thread) {
    segments += t.segments, commits += t.commits, aborts += t.aborts;
    // A thread's commits and aborts are those of the segments it ran, whoever committed them.
    CHECK(t.segments == t.commits + t.aborts);
    CHECK(t.busy_ms >= 0);
    CHECK(t.commit_ms >= 0);
    CHECK(t.idle_ms >= 0);
  }
  CHECK(segments == st.segments);
  CHECK(commits == st.commits);
  if (!st.fell_back_to_serial) {
    // (A drain's dropped segments are aborts of no kind.)
    CHECK(aborts == st.aborts_conflict + st.aborts_injected + st.aborts_changed);
    CHECK(st.segments == st.commits + st.aborts_conflict + st.aborts_injected + st.aborts_changed);
    CHECK(st.commits == 8 * 26);  // 25 schedules and the exit of each
    CHECK(st.mean_segment_us >= 10);
    // A worker thread that ran segments also spent time between them, dispatching (it never leaves
    // its loop before the stop: its time so far is counted).
    for (std::size_t i = 1; i < st.per_thread.size(); ++i)
      if (st.per_thread[i].segments > 10) CHECK(st.per_thread[i].commit_ms > 0);
  }
}

namespace {
// A ping-pong of `rounds` round trips between two tasklets spawned here: segments far too short for
// parallelism, so at two workers (guard on) the run falls back to serial state. The pinging tasklet
// then calls then(v) with its last value (== rounds) and goes on in it.
template <class Then>
void spawn_ping_pong(int rounds, Then then) {
  channel<int> ping, pong;  // (handles: the tasklets' copies keep them)
  spawn([=] {
    for (int i = 0; i < rounds; ++i) pong.send(ping.receive() + 1);
  });
  spawn([=]() mutable {
    int v = 0;
    for (int i = 0; i < rounds; ++i) {
      ping.send(v);
      v = pong.receive();
    }
    then(v);
  });
}

// A long segment's worth of work for the guard (20 us) and the hash a busy tasklet keeps over its
// rounds; busy_hash(b, rounds) is what it ends with.
std::uint64_t busy_step(std::uint64_t h, int r) {
  weft::test::spin_us(20);  // long enough segments: the guard keeps (or takes) the run parallel
  return h * 31 + static_cast<std::uint64_t>(r);
}
std::uint64_t busy_hash(int b, int rounds) {
  auto h = static_cast<std::uint64_t>(b);
  for (int r = 0; r < rounds; ++r) h = h * 31 + static_cast<std::uint64_t>(r);
  return h;
}

#if defined(__SANITIZE_THREAD__)
// Under TSan the ping-pong's segments take 3-5 us, above the default 2.5 us: a higher threshold lets
// the guard fall back there and come back in the busy phase, so that TSan sees the way back.
struct tsan_guard_threshold {
  tsan_guard_threshold() { setenv("WEFT_GUARD_US", "10", 1); }
  ~tsan_guard_threshold() { unsetenv("WEFT_GUARD_US"); }
  tsan_guard_threshold(const tsan_guard_threshold&) = delete;
  tsan_guard_threshold& operator=(const tsan_guard_threshold&) = delete;
};
#else
struct tsan_guard_threshold {};
#endif
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "after the fallback to serial the rest of the run counts as serial time on every thread", "[unit][ordered]") {
  // Ping-pong: segments far too short for parallelism, so at two workers (guard on) the run drains
  // to serial state and the worker thread sleeps for the rest of it. That sleep was counted as
  // committing and dispatching (WEFT_STATS showed 200 ms of it for a sieve run with 0.1 ms of
  // segments), then as idle time beside serial_ms (counted twice, round 17's check); the main
  // thread's serial run was its committing and dispatching (round 17: 534.8 ms of a 527 ms run).
  // The per-thread times cover the parallel part; serial_ms the rest.
  tvar<int> result{0};
  constexpr int rounds = 100000;
  spawn_ping_pong(rounds, [&](int v) { result.set(v); });
  run();
  CHECK(result.get() == rounds);
  const run_statistics st = run_stats();
  if (!ordered_two_or_more() || !st.fell_back_to_serial) return;
  // The comparison means something only if the fallback came early (~1,000 of the run's ~400,000
  // segments): under TSan on a loaded machine the guard once decided after most of the run, and the
  // work before it outweighed the wait after (CI: 6.3 s against 2.9 s).
  if (st.commits > 4 * rounds / 10) return;
  REQUIRE(st.per_thread.size() >= 2);
  CHECK(st.serial_ms > 0);
  for (std::size_t i = 0; i < st.per_thread.size(); ++i) {
    INFO("thread " << i << ": " << st.per_thread[i].commit_ms << " ms committing and dispatching, "
                   << st.per_thread[i].idle_ms << " ms idle; " << st.serial_ms << " ms in serial state; "
                   << st.commits << " commits before the fallback");
    CHECK(st.per_thread[i].commit_ms + st.per_thread[i].idle_ms < st.serial_ms);
  }
  // Every abort has its kind: the drain's dropped segments too (round 17's check: the kinds summed
  // to 1-5 fewer than the threads' aborts).
  std::uint64_t thread_aborts = 0;
  for (const auto& t : st.per_thread) thread_aborts += t.aborts;
  CHECK(st.aborts_conflict + st.aborts_injected + st.aborts_changed + st.dropped == thread_aborts);
  // Its segments stay short: serial state's probe never takes it back to parallel.
  CHECK(st.returns_to_parallel == 0);
  // The conflict profiler's report says it too, once the run has ended (its commits stop at the
  // fallback: the rest runs outside the STM).
  shutdown();
  const std::string text = format_profile(profile_snapshot());
  INFO(text);
  CHECK(text.find("fell back to serial (segments too short") != std::string::npos);
  // The segments' transactions in one line, apart from the threads' own (round 17's check: they were
  // in "exited threads", and "main thread: 1 commits" beside the run's hundreds read as a contradiction).
  CHECK(text.find("ordered runs' segments: ") != std::string::npos);
}

TEST_CASE_METHOD(fresh_runtime, "channel handles stored in tvars survive the rollback of the segments that stored them",
                 "[unit][ordered]") {
  // README's porting pattern: a registry of channels in a tvar, written by tasklets that also make
  // channels and tasklets. A rolled-back attempt's pending values (the map, the channel) were dropped
  // with a real release of each handle whose reference the undo had already given back: the channel
  // was freed while the registry and its receiver still held it ("double free detected" at ordered 2
  // with injection).
  tvar<std::map<int, channel<int>>> rooms{{}, "rooms"};
  tvar<channel<int>> newest{nullptr, "newest"};
  event_log log;
  for (int k = 0; k < 3; ++k)
    spawn([&, k] {
      for (int i = 0; i < 8; ++i) {
        channel<int> room;
        spawn([room, &log] { log("got " + std::to_string(room.receive())); });
        std::map<int, channel<int>> m = rooms.get();
        m.emplace(k * 10 + i, room);
        rooms.set(std::move(m));
        newest.set(room);
        if (i % 3 == 2) schedule();
      }
    });
  run();
  const std::map<int, channel<int>> all = rooms.get();
  REQUIRE(all.size() == 24);
  CHECK(newest.get() == all.at(27));
  std::string expected;
  for (const auto& [key, room] : all) {
    CHECK(room.balance() == -1);  // its receiver waits
    room.send(key);
    expected += (expected.empty() ? "got " : " got ") + std::to_string(key);
  }
  CHECK(log.str() == expected);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "tasklet handles stored in tvars survive the rollback of the segments that stored them",
                 "[unit][ordered]") {
  // The same with tasklets: a rolled-back attempt's pending vector of handles released each of them
  // a second time, and a tasklet's block (its function, its captures) was destroyed under a handle.
  tvar<std::vector<tasklet>> kids{{}, "kids"};
  tvar<tasklet> first{{}, "first"};
  event_log log;
  for (int k = 0; k < 3; ++k)
    spawn([&, k] {
      for (int i = 0; i < 8; ++i) {
        const std::string name = std::to_string(k * 10 + i);
        tasklet kid = spawn([name, &log] { log("kid " + name); });
        std::vector<tasklet> v = kids.get();
        v.push_back(kid);
        kids.set(std::move(v));
        if (!first.get()) first.set(kid);
        if (i % 3 == 2) schedule();
      }
    });
  run();
  const std::vector<tasklet> all = kids.get();
  REQUIRE(all.size() == 24);
  CHECK(first.get() == all.front());
  std::set<std::uint64_t> ids;
  for (const tasklet& t : all) {
    CHECK(!t.alive());  // finished, and the block is still there to say so
    ids.insert(t.id());
  }
  CHECK(ids.size() == 24);
  CHECK(log.events().size() == 24);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a tasklet's on_commit hooks run when its atomically ends, as with one worker",
                 "[unit][ordered]") {
  // With one worker a tasklet's atomically is a transaction of its own: its hooks run before it
  // returns (their tvar writes visible after it, an exception from one propagating from it with the
  // block committed), and on_commit outside atomically runs at once. In ordered mode the hooks ran at
  // the segment's commit: d read 0 after atomically, and a throwing hook ended the program.
  tvar<int> c{0, "c"}, d{0, "d"};
  event_log log;
  for (int k = 0; k < 3; ++k)
    spawn([&, k] {
      for (int i = 0; i < 4; ++i) {
        atomically([&] { on_commit([&] { d.set(d.get() + 1); }); });
        const int seen = d.get();
        on_commit([&] { c.set(c.get() + 10); });  // outside atomically: at once
        const int seen_c = c.get();
        try {
          atomically([&] {
            c.set(c.get() + 1);
            on_commit([] { throw std::runtime_error("hook failed"); });
          });
        } catch (const std::runtime_error& e) {
          log(fmt::format("{}.{} d={} c={} {} c={}", k, i, seen, seen_c, e.what(), c.get()));
        }
        schedule();
      }
    });
  run();
  std::string expected;
  int dd = 0, cc = 0;
  for (int i = 0; i < 4; ++i)
    for (int k = 0; k < 3; ++k) {
      ++dd, cc += 10;
      expected += fmt::format("{}{}.{} d={} c={} hook failed c={}", expected.empty() ? "" : " ", k, i, dd, cc, cc + 1);
      ++cc;
    }
  CHECK(log.str() == expected);
  CHECK(d.get() == 12);
  CHECK(c.get() == 12 * 11);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "on_abort hooks of a tasklet's finished atomically blocks never run", "[unit][ordered]") {
  // With one worker a tasklet's atomically that returned is never rolled back. A rolled-back segment
  // ran the on_abort hooks of the blocks it had finished (once per attempt, with injection).
  tvar<int> x{0, "x"};
  event_log log;
  for (int t = 0; t < 3; ++t)
    spawn([&, t] {
      for (int i = 0; i < 5; ++i) {
        atomically([&] {
          x.set(x.get() + 1);
          on_abort([&log, t] { log(fmt::format("tasklet {} on_abort", t)); });
        });
        schedule();
      }
    });
  run();
  CHECK(x.get() == 15);
  CHECK(log.str().empty());
  fresh_runtime::check_clean();
}

namespace {
// About a microsecond of work. The asm keeps the call: a pure function's result that nobody uses
// lets GCC drop the call (it did, and the tests that use it ran without the delays they rely on).
[[gnu::noinline]] std::uint64_t busy(std::uint64_t s) {
  for (std::uint64_t k = 0; k < 2000; ++k) {
    s = s * 6364136223846793005ULL + k;  // unsigned: wraps
    asm volatile("" : "+r"(s));
  }
  return s;
}
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "tvars on a tasklet's stack keep what other tasklets commit to them when it is rolled back",
                 "[unit][ordered]") {
  // A parent's local tvars, updated by its children. A rolled-back segment of the parent restored its
  // stack from a snapshot taken before a child's commit and undid it: the parent waited for ever
  // (here: gave up after 1,000 polls with a count short), and a boxed tvar (a std::string) came back
  // holding a freed box (segfault, bad_alloc).
  // Without the fix the test failed in about 3 runs of 10 with two rounds of two parents and three
  // children (a drained run stays serial for the rounds after): three parents, four children each.
  event_log log;
  std::string expected;
  for (int round = 0; round < 10; ++round) {
  for (int p = 0; p < 3; ++p)
    spawn([&, p] {
      tvar<int> done{0};
      tvar<std::uint64_t> trail{1};  // unsigned: the products wrap
      tvar<std::string> word{std::string("start")};
      for (int c = 0; c < 4; ++c)
        spawn([&, c] {
          for (int i = 0; i < 10; ++i) {
            busy(i);
            done.set(done.get() + 1);
            trail.set(trail.get() * 4 + static_cast<std::uint64_t>(c));
            word.set(word.get().substr(0, 8) + std::to_string(c));
            schedule();
          }
        });
      long polls = 0;
      while (done.get() < 40 && polls < 1000) {
        busy(++polls);
        schedule();
      }
      log(fmt::format("parent {}: done={} trail {} word {} after {} polls", p, done.get(), trail.get() != 0,
                      word.get().size(), polls < 1000 ? "few" : "1000"));
    });
  run();
  for (int p = 0; p < 3; ++p)
    expected += fmt::format("{}parent {}: done=40 trail true word 9 after few polls", expected.empty() ? "" : " ", p);
  }
  CHECK(log.str() == expected);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "tasklets spawned by tasklets get serial ids, and a rolled-back spawn leaks nothing",
                 "[unit][ordered]") {
  // Spawning from a tasklet binds (an id, given at commit) and inserts; under abort injection the
  // segments around it are rolled back, so each child must still be made once, with the id one
  // worker gives it, and destroyed once.
  event_log log;
  tasklet parent = spawn([&] {
    for (int i = 0; i < 40; ++i) {
      tasklet child = spawn([&, i] { log(fmt::format("c{}:{}", i, getcurrent().name())); });
      if (i % 7 == 0) schedule();
    }
  });
  const std::uint64_t first_id = [&] {
    tasklet probe([] {});
    return static_cast<std::uint64_t>(std::stoull(probe.name().substr(std::string("tasklet-").size())));
  }();
  run();
  std::string expected;
  // The probe took first_id; the parent came before it; the children follow it in order.
  for (int i = 0; i < 40; ++i) {
    expected += fmt::format("{}c{}:tasklet-{}", expected.empty() ? "" : " ", i, first_id + 1 + i);
  }
  CHECK(log.str() == expected);
  CHECK(!parent.alive());
  fresh_runtime::check_clean();
}

namespace {
// A capture that logs its own end, once: a moved-from copy logs nothing.
struct capture_tracer {
  event_log* log;
  std::string name;
  bool live = true;
  capture_tracer(event_log* l, std::string n) : log(l), name(std::move(n)) {}
  capture_tracer(capture_tracer&& o) noexcept : log(o.log), name(std::move(o.name)), live(std::exchange(o.live, false)) {}
  capture_tracer(const capture_tracer&) = delete;
  ~capture_tracer() {
    if (live) (*log)("~" + name);
  }
};
// A member whose move may throw: the function then stays in the tasklet's block (tasklet_impl.hpp).
struct throwing_move {
  int v = 0;
  throwing_move() = default;
  throwing_move(throwing_move&& o) noexcept(false) : v(o.v) {}
};
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "a tasklet's mutable captures keep their values across rolled-back segments",
                 "[unit][ordered]") {
  // Captures are the tasklet's own state (DESIGN.md §4.2): a small function moves onto the tasklet's
  // stack when it starts, a large one or one whose move may throw stays in the tasklet's block. Either
  // way a rolled-back segment must leave them as they were when it started — its first segment as
  // well, which moves the function — and they end once, with the tasklet.
  event_log log;
  constexpr int rounds = 6;
  spawn([&log, count = 0, text = std::string("s"), t = capture_tracer(&log, "small")]() mutable {
    for (int k = 0; k < rounds; ++k) {
      count += k + 1;
      text += static_cast<char>('a' + k);
      log(fmt::format("small:{}:{}", count, text));
      schedule();
    }
  });
  spawn([&log, count = 0, big = std::array<int, 100>{}, t = capture_tracer(&log, "large")]() mutable {
    static_assert(sizeof(big) > 256);
    for (int k = 0; k < rounds; ++k) {
      count += k + 1;
      big[static_cast<std::size_t>(k)] = count;
      log(fmt::format("large:{}:{}", count, big[static_cast<std::size_t>(k)] + (k ? big[static_cast<std::size_t>(k - 1)] : 0)));
      schedule();
    }
  });
  spawn([&log, m = throwing_move{}, t = capture_tracer(&log, "throwing")]() mutable {
    for (int k = 0; k < rounds; ++k) {
      m.v += k + 1;
      log(fmt::format("throwing:{}", m.v));
      schedule();
    }
  });
  run();
  std::string expected;
  std::string text = "s";
  int count = 0, previous = 0;
  for (int k = 0; k < rounds; ++k) {
    previous = count;
    count += k + 1;
    text += static_cast<char>('a' + k);
    expected += fmt::format("{}small:{}:{} large:{}:{} throwing:{}", k ? " " : "", count, text, count, count + previous, count);
  }
  expected += " ~small ~large ~throwing";
  CHECK(log.str() == expected);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "values and hooks the STM destroys inside a segment are destroyed once when it rolls back there",
                 "[unit][ordered]") {
  // Each segment reads a counter its predecessor writes, then replaces a map several times (each
  // replacement destroys the previous pending map: its nodes' deletes are where a doomed segment
  // stops), in the segment itself, inside a nested block, or builds on_commit hooks holding maps in
  // a block that throws (the undo destroys them). Stopped inside one of those destructors, the
  // rollback destroyed the same map or hook a second time and leaked the new map: a newcomer's
  // program crashed 17 of 20 runs at two workers, ASan reported use-after-free and leaks.
  constexpr int rounds = 20, replacements = 6;
  tvar<long> hot{0};
  tvar<long> undone{0};
  std::array<tvar<std::map<int, std::string>>, 3> own;
  const auto fill = [](std::map<int, std::string>& m, int j, int r) {
    for (int q = 0; q < 40; ++q) m[q * 100 + j] = std::string(30, static_cast<char>('a' + (q + j + r) % 26));
  };
  for (int k = 0; k < 3; ++k) {
    spawn([&, k] {
      for (int r = 0; r < rounds; ++r) {
        const long seen = hot.get();
        spin_us(5);
        hot.set(seen + 1);
        if (k == 0) {
          for (int j = 0; j < replacements; ++j) own[0].modify([&](auto& m) { fill(m, j, r); });
        } else if (k == 1) {
          atomically([&] {
            for (int j = 0; j < replacements; ++j) own[1].modify([&](auto& m) { fill(m, j, r); });
          });
        } else {
          try {
            atomically([&] {
              for (int j = 0; j < replacements; ++j) {
                std::map<int, std::string> big;
                fill(big, j, r);
                on_commit([big] { weft::print("never {}\n", big.size()); });
              }
              throw std::runtime_error("undo");
            });
          } catch (const std::runtime_error&) {
            undone.set(undone.get() + 1);
          }
          own[2].modify([&](auto& m) { fill(m, 0, r); });
        }
        schedule();
      }
    });
  }
  run();
  std::map<int, std::string> expected01, expected2;
  for (int r = 0; r < rounds; ++r) {
    for (int j = 0; j < replacements; ++j) fill(expected01, j, r);
    fill(expected2, 0, r);
  }
  CHECK(hot.get() == 3 * rounds);
  CHECK(undone.get() == rounds);
  CHECK(own[0].get() == expected01);
  CHECK(own[1].get() == expected01);
  CHECK(own[2].get() == expected2);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "on_abort hooks of a tasklet's atomically left by an exception may reach switch points",
                 "[unit][ordered]") {
  // With one worker such a block is a transaction of its own: its hooks run once it is undone,
  // outside any transaction, where a send or schedule() is a switch point like any other. In ordered
  // mode they ran in the middle of the undo: the switch ended the segment there, and the next segment
  // reused the half-undone transaction (wrong output or a crash 9-10 of 10 runs at two workers).
  event_log log;
  channel<int> events;
  tvar<int> counter{0};
  for (int k = 0; k < 3; ++k) {
    spawn([&, k] {
      for (int r = 0; r < 2; ++r) {
        try {
          atomically([&] {
            counter.set(counter.get() + 1);
            on_abort([&, k, r] {
              log(fmt::format("hook{}.{}", k, r));
              schedule();
              events.send(10 * k + r);
              log(fmt::format("sent{}.{}", k, r));
            });
            throw std::runtime_error("undo");
          });
        } catch (const std::runtime_error&) {
          log(fmt::format("caught{}.{}", k, r));
        }
        schedule();
      }
    });
  }
  spawn([&] {
    for (int i = 0; i < 6; ++i) log(fmt::format("event{}", events.receive()));
  });
  run();
  CHECK(log.str() ==
        "hook0.0 hook1.0 hook2.0 event0 event10 event20 sent0.0 caught0.0 sent1.0 caught1.0 sent2.0 caught2.0 "
        "hook0.1 hook1.1 hook2.1 event1 event11 event21 sent0.1 caught0.1 sent1.1 caught1.1 sent2.1 caught2.1");
  CHECK(counter.get() == 0);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a tasklet or channel operation inside tvar::view is refused at every worker count",
                 "[unit][ordered]") {
  // The reference view gives is valid until its function returns. In ordered mode an operation there
  // ended the segment, the value was replaced and freed by the epochs, and the function went on with
  // a freed map (a newcomer's broadcast over a registry: a crash or "empty channel handle" every run
  // at two workers). Refused the same way with one worker, where it happened to work.
  event_log log;
  tvar<std::map<int, channel<int>>> registry{{}};
  channel<int> a, b;
  atomically([&] { registry.set({{1, a}, {2, b}}); });
  tvar<int> small{5};
  spawn([&] {
    for (int round = 0; round < 3; ++round) {
      try {
        registry.view([&](const auto& m) {
          for (const auto& [k, c] : m) c.send(10 * round + k);
        });
      } catch (const std::logic_error& e) {
        log(std::string(e.what()).find("inside tvar::view") != std::string::npos ? "refused" : e.what());
      }
      try {
        small.view([&](int v) { if (v > 0) schedule(); });
      } catch (const std::logic_error&) {
        log("refused inline");
      }
      // What the lambda needs is copied out, and the sends come after view returns.
      std::vector<channel<int>> targets = registry.view([](const auto& m) {
        std::vector<channel<int>> out;
        for (const auto& [k, c] : m) out.push_back(c);
        return out;
      });
      for (std::size_t i = 0; i < targets.size(); ++i) targets[i].send(10 * round + static_cast<int>(i) + 1);
    }
  });
  for (auto* c : {&a, &b})
    spawn([&, c] {
      for (int i = 0; i < 3; ++i) log(fmt::format("got{}", c->receive()));
    });
  CHECK_THROWS_WITH(small.view([](int) { schedule(); }), Catch::Contains("inside tvar::view"));
  run();
  CHECK(log.str() ==
        "refused refused inline got1 got2 refused refused inline got11 got12 refused refused inline got21 got22");
  fresh_runtime::check_clean();
}

namespace {
// A tvar value whose destructor makes handles and drops them again: nothing visible.
struct makes_handles_when_dropped {
  long x = 0;
  std::string pad = std::string(32, 'v');  // not inline: the value lives in a box
  ~makes_handles_when_dropped() {
    auto p = weft::shared<int>::make(1);
    auto q = p;
    weft::channel<int> c;
  }
};
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "a tvar value's destructor may make and drop handles wherever weft runs it",
                 "[unit][ordered]") {
  // Replaced values are destroyed by a segment's rollback, by its own later writes, or by the epoch
  // collector between segments, outside any tasklet. A channel made there crashed on the missing
  // tasklet; a weft::shared made and dropped by a rollback's drops was released after its block
  // was freed with the attempt's memory (round 20: a crash or heap corruption at two workers).
  tvar<makes_handles_when_dropped> v{};
  for (int t = 0; t < 2; ++t)
    spawn([&, t] {
      for (int r = 0; r < 50; ++r) {
        makes_handles_when_dropped next;
        next.x = t * 1000L + r;
        v.set(next);
        schedule();
      }
    });
  run();
  CHECK(v.get().x == 1049);
  for (int i = 0; i < 1000 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a weft::shared object's destructor may keep a count in a tvar wherever its last handle goes",
                 "[unit][ordered]") {
  // README: the destructor may use tvars, its writes following the segment's own. Dropped before
  // a segment parked for its turn, the release ran when it went on at the head, outside its
  // transaction, and the destructor's direct write waited for ever for the segment's own
  // reservation (every ordered run hung, newcomer round 20).
  struct node {
    tvar<long>* live;
    explicit node(tvar<long>* l) : live(l) { live->set(live->get() + 1); }
    node(const node&) = delete;
    ~node() { live->set(live->get() - 1); }
  };
  tvar<long> live{0};
  tvar<long> received{0};
  channel<weft::shared<node>> ch;
  ch.preference(1);
  constexpr int tasklets = 6;
  for (int t = 0; t < tasklets; ++t)
    spawn([&, t] {
      auto head = weft::shared<node>::make(&live);
      schedule();
      if (t % 2 == 0) {
        ch.send(head);
        head.reset();
      } else {
        head = nullptr;
        schedule();
      }
    });
  spawn([&] {
    // A tvar on this tasklet's stack that dies in a segment makes that segment wait for its turn
    // (transaction::tvar_destroyed): the park after which the handle dropped before it is released.
    tvar<std::vector<int>> local;
    for (int i = 0; i < tasklets / 2; ++i) {
      auto n = ch.receive();
      received.set(received.get() + 1);
      schedule();
    }
    local.set({});
  });
  run();
  CHECK(received.get() == tasklets / 2);
  CHECK(live.get() == 0);
  fresh_runtime::check_clean();
}

namespace {
// A hook capture that logs its end (a tvar write, through event_log), once per armed copy.
struct hook_tracer {
  event_log* log;
  int id;
  bool armed = true;
  hook_tracer(event_log* l, int i) : log(l), id(i) {}
  hook_tracer(const hook_tracer& o) : log(o.log), id(o.id) {}
  hook_tracer(hook_tracer&& o) noexcept : log(o.log), id(o.id), armed(std::exchange(o.armed, false)) {}
  ~hook_tracer() {
    if (armed) (*log)(fmt::format("~{}", id));
  }
};
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "objects captured by hooks end where one worker ends them and never at a rollback",
                 "[unit][ordered]") {
  // Hooks a segment registers are its own, like its stack objects: a rollback ends them without
  // their destructors. Destroyed at each rollback, a capture's destructor ran once more per rolled-back
  // attempt (extra output, wrong counts), and its tvar write, made under the commit lock, could wait
  // for ever (newcomer round 20: hangs in 1 of 6 to 5 of 10 runs at two workers). The abort hooks of
  // a committed block end when it commits, as with one worker.
  event_log log;
  tvar<int> total{0};
  for (int t = 0; t < 12; ++t)
    spawn([&, t] {
      atomically([&] {
        total.set(total.get() + 1);
        on_abort([c = hook_tracer(&log, 100 + t)] {});
        on_commit([c = hook_tracer(&log, 200 + t)] {});
      });
      if (t % 3 == 0) {
        try {
          atomically([&] {
            on_abort([c = hook_tracer(&log, 300 + t)] {});
            throw std::runtime_error("undo");
          });
        } catch (const std::runtime_error&) {
          log(fmt::format("caught{}", t));
        }
      }
      schedule();
    });
  run();
  std::string expected;
  for (int t = 0; t < 12; ++t) {
    // (The commit hook's parameter copy ends inside its atomically; what its destructor logs there
    // joins the transaction. The throwing block's own writes, its copy's end among them, are undone.)
    expected += fmt::format("{}~{} ~{} ~{}", t ? " " : "", 100 + t, 100 + t, 200 + t);
    if (t % 3 == 0) expected += fmt::format(" ~{} caught{}", 300 + t, t);
  }
  CHECK(log.str() == expected);
  CHECK(total.get() == 12);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "an exception escaping a rolled-back segment is destroyed once", "[unit][ordered]") {
  // The exception's message is allocated in the segment it escapes. Under abort injection that
  // segment is rolled back and re-run: the attempt's exception must be destroyed before the rollback
  // frees the memory the attempt allocated, or the message is freed twice (glibc or ASan abort once
  // the epoch GC runs the second free; found running the whole suite in one process).
  for (int i = 0; i < 200; ++i) {
    spawn([i] { throw std::runtime_error(fmt::format("tasklet {} throws a message too long for SSO", i)); });
    CHECK_THROWS_WITH(run(), fmt::format("tasklet {} throws a message too long for SSO", i));
  }
  // Run the frees this thread's commits deferred (the second free was one of them).
  for (int i = 0; i < 1000 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  fresh_runtime::check_clean();
}

namespace {
// An exception that counts its live objects: each attempt of a segment constructs its own, and each
// must be destroyed once, whether the attempt commits or is rolled back.
// Counts its live objects in a tvar: a construction in a rolled-back attempt is rolled back with it.
struct counted_error : std::runtime_error {
  static inline tvar<int> live{0};
  explicit counted_error(int i)
      : std::runtime_error(fmt::format("error {}, with a message too long for the small-string buffer", i)) {
    live.set(live.get() + 1);
  }
  counted_error(const counted_error& o) : std::runtime_error(o) { live.set(live.get() + 1); }
  ~counted_error() override { live.set(live.get() - 1); }
};
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "an exception caught in a rolled-back segment is destroyed once", "[unit][ordered]") {
  // A segment that ends inside a catch block (a channel operation in the handler) holds the exception
  // it caught. Rolled back, that attempt never leaves the catch: its exception must be freed at the
  // rollback (it leaked before: LSan), once, before the rollback frees its message, and without its
  // destructor (its construction is rolled back too: the count in a tvar stays balanced). Each iteration
  // starts a segment outside any catch (schedule(): a segment that starts inside one runs inevitable)
  // and ends it inside the handler; the second tasklet rethrows and catches again first (two handlers
  // of one object). The event log is one tvar both write: conflicts add to the injected aborts.
  event_log log;
  channel<int> ch;
  const int live_before = counted_error::live.get();
  spawn([&] {
    for (int i = 0; i < 100; ++i) {
      schedule();
      try {
        throw counted_error(i);
      } catch (const counted_error& e) {
        ch.send(i);  // the segment ends here, inside the handler
        log(fmt::format("a{}", std::string_view(e.what()).substr(0, std::string_view(e.what()).find(','))));
      }
    }
  });
  spawn([&] {
    for (int i = 0; i < 100; ++i) {
      schedule();
      try {
        throw counted_error(i);
      } catch (...) {
        try {
          throw;
        } catch (const counted_error&) {
          log(fmt::format("b{}", ch.receive()));
        }
      }
    }
  });
  run();
  for (int i = 0; i < 1000 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  CHECK(counted_error::live.get() == live_before);
  std::string expected;
  for (int i = 0; i < 100; ++i) expected += fmt::format("{}b{} aerror {}", i ? " " : "", i, i);
  CHECK(log.str() == expected);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "an exception a rolled-back segment made for raise_exception or send_exception is not destroyed twice",
                 "[unit][ordered]") {
  // A newcomer's fuzzer (round 7): the exception an attempt made and put in its intent was
  // destroyed at the rollback, its destructor running outside any transaction (an extra line of
  // output; here the live count went below zero), although its construction was rolled back.
  // And one the segment found on its stack (received before it started) and moved into the intent
  // was freed by the rollback while the restored stack still held it: the re-run raised a freed
  // exception.
  event_log log;
  channel<int> ch;
  channel<std::exception_ptr> errors;
  const int live_before = counted_error::live.get();
  tasklet catcher = spawn([&] {
    for (int i = 0; i < 60; ++i) {
      try {
        ch.receive();
        log("value");
      } catch (const counted_error& e) {
        const std::string what = e.what();
        log(what.substr(0, what.find(',')));
      }
    }
  });
  spawn([&] {
    for (int i = 0; i < 20; ++i) {
      ch.send_exception(counted_error(i));  // made in the segment that sends it
      schedule();
    }
  });
  spawn([&] {
    for (int i = 20; i < 40; ++i) {
      catcher.raise_exception(std::make_exception_ptr(counted_error(i)));
      schedule();
    }
  });
  spawn([&] {
    for (int i = 40; i < 60; ++i) {
      std::exception_ptr e = errors.receive();  // on the stack before the next segment starts
      catcher.raise_exception(std::move(e));
    }
  });
  for (int i = 40; i < 60; ++i) errors.send(std::make_exception_ptr(counted_error(i)));
  run();
  for (int i = 0; i < 1000 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  CHECK(counted_error::live.get() == live_before);
  const std::string got = log.str();
  for (int i = 0; i < 60; ++i) CHECK(got.find(fmt::format("error {}", i)) != std::string::npos);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "exception_ptrs kept across switch points are counted once, whatever is rolled back",
                 "[unit][ordered]") {
  // libstdc++ counts an exception object's references in its header, outside any transaction. A
  // rolled-back attempt that dropped the last exception_ptr to an exception had freed it while the
  // restored stack still pointed to it: the re-run freed it again (heap corruption, every run under
  // injection); one that copied an exception_ptr or took std::current_exception() left the count
  // one too high (never freed). Each such call now waits for the tasklet's turn (irrevocable.cpp).
  event_log log;
  channel<std::exception_ptr> errors;
  const int live_before = counted_error::live.get();
  for (int k = 0; k < 6; ++k)
    spawn([&, k] {
      std::exception_ptr mine;
      try {
        throw counted_error(k);
      } catch (...) {
        mine = std::current_exception();
      }
      schedule();
      std::exception_ptr copy = mine;  // a second reference, made in a later segment
      schedule();
      mine = nullptr;  // dropped: `copy` keeps the object
      schedule();
      std::exception_ptr other;
      other = copy;  // copy assignment
      copy = nullptr;
      schedule();
      errors.send(other);  // a copy travels; `other` is dropped after the send, in the next segment
      other = nullptr;
      schedule();
      log(fmt::format("t{}", k));
    });
  spawn([&] {
    for (int i = 0; i < 6; ++i) {
      std::exception_ptr e = errors.receive();
      try {
        std::rethrow_exception(e);  // by value: a copy
      } catch (const counted_error& caught) {
        const std::string what = caught.what();
        log(what.substr(0, what.find(',')));
      }
      e = nullptr;  // the last reference: the object is destroyed here
      schedule();
    }
  });
  run();
  for (int i = 0; i < 1000 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  CHECK(counted_error::live.get() == live_before);
  const std::string got = log.str();
  for (int i = 0; i < 6; ++i) {
    CHECK(got.find(fmt::format("error {}", i)) != std::string::npos);
    CHECK(got.find(fmt::format("t{}", i)) != std::string::npos);
  }
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "std::make_exception_ptr in a rolled-back attempt leaves no exception object behind",
                 "[unit][ordered]") {
  // make_exception_ptr allocates an exception object (outside weft's allocation log), constructs it,
  // and hands it to an exception_ptr, all inside libstdc++: a rolled-back attempt forgot its
  // exception_ptr with the restored stack, and the object was never destroyed (ASan at 2 workers
  // with injection; here counted). The call now waits for the tasklet's turn, as
  // std::current_exception does, and an attempt rolled back while it waits frees the raw object.
  // Counted: objects off the tasklet's stack (the argument and make_exception_ptr's by-value
  // parameter are stack copies, which a rollback without unwinding rightly never destroys). Plain
  // counters on purpose: every heap object must be destroyed once, whichever attempt made it.
  static std::atomic<int> made{0}, destroyed{0};
  struct report {
    int k;
    static bool off_stack(const void* p) {
      const tasklet t = getcurrent();
      return !t.impl() || !t.impl()->stack.contains(p);
    }
    explicit report(int k) : k(k) { made += off_stack(this); }
    report(const report& o) : k(o.k) { made += off_stack(this); }
    ~report() { destroyed += off_stack(this); }
  };
  made = destroyed = 0;
  event_log log;
  tvar<int> shared{0};
  for (int t = 0; t < 4; ++t)
    spawn([&, t] {
      for (int i = 0; i < 25; ++i) {
        shared.set(shared.get() + 1);  // conflicts beside the injected aborts
        std::exception_ptr p = std::make_exception_ptr(report(t * 100 + i));
        schedule();  // p crosses a switch point
        try {
          std::rethrow_exception(p);
        } catch (const report& r) {
          log(fmt::format("{}", r.k));
        }
        p = nullptr;  // the last reference
      }
    });
  run();
  CHECK(shared.get() == 100);
  CHECK(made.load() == destroyed.load());
  CHECK(made.load() >= 100);
  std::string expected;
  for (int i = 0; i < 25; ++i)
    for (int t = 0; t < 4; ++t) expected += fmt::format("{}{}", expected.empty() ? "" : " ", t * 100 + i);
  CHECK(log.str() == expected);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a tvar inside a caught exception is not written after the exception is freed",
                 "[unit][ordered]") {
  // An exception whose handler goes on past a switch point is destroyed at the handler's end by
  // __cxa_end_catch, which frees its storage with free() at once. Its tvar member's destruction was
  // left for the segment's commit, which then wrote the tvar's destroyed mark into the freed memory
  // (ASan: heap-use-after-free in finish_destroyed_tvars; in Release, into whatever the tasklet
  // allocated next: 40 corrupted words in every run at 2 workers). Each tasklet fills the blocks it
  // allocates after the handler with zeros and counts the words that changed by its next segment.
  struct with_tvar {
    tvar<long> n{0};
  };
  tvar<long> corrupted{0}, caught{0};
  for (int t = 0; t < 20; ++t)
    spawn([&] {
      std::vector<long*> blocks;
      try {
        throw with_tvar{};
      } catch (with_tvar& e) {
        schedule();  // the handler goes on in the next segment
        e.n.set(1);
        caught.set(caught.get() + e.n.get());
      }  // the exception, and its tvar, are destroyed here
      for (std::size_t size = 8; size <= 512; size += 8) {  // one of these may reuse its storage
        auto* p = static_cast<long*>(::operator new(size));
        std::fill_n(p, size / sizeof(long), 0L);
        blocks.push_back(p);
      }
      schedule();  // the commit of the segment that destroyed the tvar has happened
      long changed = 0;
      for (std::size_t i = 0; i < blocks.size(); ++i) {
        changed += std::count_if(blocks[i], blocks[i] + (i + 1), [](long w) { return w != 0; });
        ::operator delete(blocks[i]);
      }
      corrupted.set(corrupted.get() + changed);
    });
  run();
  CHECK(caught.get() == 20);
  CHECK(corrupted.get() == 0);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "std::rethrow_exception of a moved exception_ptr destroys the exception once",
                 "[unit][ordered]") {
  // rethrow_exception raises the exception's reference count inside libstdc++; its by-value
  // argument, moved from the tasklet's exception_ptr, holds the other reference and is released on
  // the way out. That release waited for the head, a conflict found there rolled the attempt back,
  // and the count stayed one too high: the exception, made and kept in an earlier segment, was
  // never destroyed (its destructor ran for 38 of 50 tasklets, at 2 workers). Counted in a tvar:
  // each destructor that runs in a committed segment counts once.
  static tvar<long>* destroyed = nullptr;
  struct noted {
    int i;
    ~noted() { destroyed->set(destroyed->get() + 1); }
  };
  tvar<long> count{0}, shared{0}, caught{0};
  destroyed = &count;
  constexpr int tasklets = 50, rounds = 4;
  for (int i = 0; i < tasklets; ++i)
    spawn([&, i] {
      for (int r = 0; r < rounds; ++r) {
        std::exception_ptr p;
        try {
          throw noted{i};
        } catch (...) {
          p = std::current_exception();
        }
        schedule();
        shared.set(shared.get() + 1);  // conflicts between tasklets
        try {
          std::rethrow_exception(std::move(p));
        } catch (const noted& e) {
          caught.set(caught.get() + e.i + 1);
        }
      }
    });
  run();
  CHECK(shared.get() == tasklets * rounds);
  CHECK(caught.get() == rounds * tasklets * (tasklets + 1) / 2);
  CHECK(count.get() == tasklets * rounds);
  destroyed = nullptr;
  fresh_runtime::check_clean();
}

namespace {
struct reads_in_constructor {  // a tvar read while the exception is made
  long seen;
  explicit reads_in_constructor(const tvar<long>& v) : seen(v.get()) {}
};
struct holds_exception {  // its destructor drops an exception_ptr
  std::exception_ptr inner;
};
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "exception objects that a rolled-back attempt was making or throwing or destroying are freed",
                 "[unit][ordered]") {
  // Objects the C++ runtime allocated for the attempt and only its frames knew when the attempt was
  // rolled back (a conflict found while the segment waited for the head, or at a stale tvar read):
  // one in flight while a destructor run by the unwinding sends on a channel or reads a tvar; one
  // being made by std::throw_with_nested (its nested_exception takes std::current_exception(), which
  // waits for the head) or by a constructor that reads a tvar; one being destroyed at its handler's
  // end, whose destructor drops an exception_ptr (which waits for the head). They leaked (ASan: 2 to
  // 18 of 20 runs of a helper's programs at 2 workers); LeakSanitizer checks this test in the ASan
  // suite, and every build checks the results against serial order. Conflicts on `shared` make the
  // rollbacks at 2 workers; the matrix's injection adds its own.
  tvar<long> shared{0}, seen{0};
  channel<int> done;
  done.preference(1);
  event_log log;
  constexpr int tasklets = 12;
  for (int i = 0; i < tasklets; ++i)
    spawn([&, i] {
      shared.set(shared.get() + 1);
      try {  // in flight: a switch point in a destructor the unwinding runs
        struct sends {
          channel<int>& to;
          int i;
          ~sends() { to.send(i); }
        } guard{done, i};
        throw std::runtime_error("unwinding " + std::to_string(i));
      } catch (const std::runtime_error& e) {
        log(e.what());
      }
      shared.set(shared.get() + 1);
      try {  // in flight: a tvar read in a destructor the unwinding runs
        struct reads {
          tvar<long>& v;
          ~reads() { v.get(); }
        } guard{seen};
        throw std::runtime_error("reading " + std::to_string(i));
      } catch (const std::runtime_error& e) {
        log(e.what());
      }
      shared.set(shared.get() + 1);
      try {  // being made: a nested exception
        try {
          throw std::runtime_error("inner " + std::to_string(i));
        } catch (...) {
          std::throw_with_nested(std::logic_error("outer " + std::to_string(i)));
        }
      } catch (const std::logic_error& e) {
        std::string what = e.what();
        try {
          std::rethrow_if_nested(e);
        } catch (const std::runtime_error& inner) {
          what += std::string(" <- ") + inner.what();
        }
        log(what);
      }
      shared.set(shared.get() + 1);
      try {  // being made: a constructor that reads a tvar
        throw reads_in_constructor(seen);
      } catch (const reads_in_constructor& e) {
        log(fmt::format("made {}", e.seen + i));
      }
      shared.set(shared.get() + 1);
      std::exception_ptr held;
      try {
        throw std::runtime_error("held " + std::to_string(i));
      } catch (...) {
        held = std::current_exception();
      }
      schedule();
      shared.set(shared.get() + 1);
      try {  // being destroyed: its destructor drops an exception_ptr
        throw holds_exception{std::move(held)};
      } catch (const holds_exception&) {
        log(fmt::format("held {} dropped", i));
      }
    });
  spawn([&] {
    for (int k = 0; k < tasklets; ++k) log(fmt::format("sent {}", done.receive()));
  });
  run();
  CHECK(shared.get() == 6 * tasklets);
  const std::string got = log.str();
  for (int i = 0; i < tasklets; ++i) {
    CHECK(got.find(fmt::format("unwinding {}", i)) != std::string::npos);
    CHECK(got.find(fmt::format("sent {}", i)) != std::string::npos);
    CHECK(got.find(fmt::format("reading {}", i)) != std::string::npos);
    CHECK(got.find(fmt::format("outer {} <- inner {}", i, i)) != std::string::npos);
    CHECK(got.find(fmt::format("made {}", i)) != std::string::npos);
    CHECK(got.find(fmt::format("held {} dropped", i)) != std::string::npos);
  }
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "tvars inside an exception a rolled-back attempt threw are freed with it", "[unit][ordered]") {
  // An exception type with tvar members, thrown by an attempt that ends inside the handler and is
  // rolled back: the rollback frees the object without its destructor (its construction is undone),
  // and the tvars' values went with nothing (LeakSanitizer: every run under injection, before).
  struct with_tvars {
    tvar<std::string> note;
    tvar<long> n;
    explicit with_tvars(int i) : note(std::string(48, 'n') + std::to_string(i)), n(i) {}
  };
  tvar<long> total{0};
  channel<int> ch;
  ch.preference(1);
  constexpr int tasklets = 30;
  for (int i = 0; i < tasklets; ++i)
    spawn([&, i] {
      try {
        total.set(total.get() + 1);
        throw with_tvars(i);
      } catch (with_tvars& e) {
        e.n.set(e.n.get() + 1);
        e.note.set(e.note.get() + "!");
        ch.send(i);  // the segment ends inside the handler
        total.set(total.get() + e.n.get() + static_cast<long>(e.note.get().size()));
      }
    });
  tvar<long> sum{0};
  spawn([&] {
    for (int k = 0; k < tasklets; ++k) {
      const int got = ch.receive();
      sum.set(sum.get() + got);
    }
  });
  run();
  long expected = 0;
  for (int i = 0; i < tasklets; ++i)
    expected += 1 + (i + 1) + static_cast<long>((std::string(48, 'n') + std::to_string(i) + "!").size());
  CHECK(total.get() == expected);
  CHECK(sum.get() == tasklets * (tasklets - 1) / 2);
  fresh_runtime::check_clean();
}

namespace {
struct made_across_a_switch {  // its constructor reaches a switch point
  int n;
  explicit made_across_a_switch(int k) : n(k) { schedule(); }
};
struct destroyed_across_a_switch {  // its destructor reaches a switch point, then frees a string
  std::string text = std::string(40, 'e');
  tvar<int> member{0};
  ~destroyed_across_a_switch() { schedule(); }
};
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "switch points inside an exception's construction or destruction free it once",
                 "[unit][ordered]") {
  // GCC allocates a thrown object before it evaluates the operand: `throw E(ch.receive())` reaches a
  // switch point with the object allocated and not thrown, and so does a constructor that
  // switches; a destructor that switches does so inside __cxa_end_catch or exception_ptr's release,
  // before the object is freed. The segment after such a switch point was speculative (nothing
  // caught, nothing in flight): rolled back, it had thrown or freed the object that its re-run
  // threw or freed again (double free in Release, 8-20 of 20 runs under injection), and the tvar
  // member's destruction, left for a commit on another thread, was written into freed memory (ASan,
  // 16 of 20 at 2 workers). The thread's marks of an exception being made or destroyed go with the
  // tasklet now, and its next segment runs at the head.
  channel<int> numbers;
  event_log log;
  constexpr int tasklets = 8;
  for (int i = 0; i < tasklets; ++i)
    spawn([&, i] {
      try {
        throw std::runtime_error(std::to_string(numbers.receive()));
      } catch (const std::runtime_error& e) {
        log(fmt::format("{} got {}", i, e.what()));
      }
      try {
        throw made_across_a_switch(i);
      } catch (const made_across_a_switch& e) {
        log(fmt::format("{} made {}", i, e.n));
      }
      try {
        throw destroyed_across_a_switch{};
      } catch (const destroyed_across_a_switch& e) {
        log(fmt::format("{} caught {}", i, e.text.size()));
      }  // ~destroyed_across_a_switch switches here
      std::exception_ptr held;
      try {
        throw destroyed_across_a_switch{};
      } catch (...) {
        held = std::current_exception();
      }
      schedule();
      held = nullptr;  // the last reference: the destructor switches inside the release
      log(fmt::format("{} released", i));
    });
  spawn([&] {
    for (int i = 0; i < tasklets; ++i) numbers.send(100 + i);
  });
  run();
  const std::string got = log.str();
  for (int i = 0; i < tasklets; ++i) {
    CHECK(got.find(fmt::format("{} got {}", i, 100 + i)) != std::string::npos);
    CHECK(got.find(fmt::format("{} made {}", i, i)) != std::string::npos);
    CHECK(got.find(fmt::format("{} caught 40", i)) != std::string::npos);
    CHECK(got.find(fmt::format("{} released", i)) != std::string::npos);
  }
  fresh_runtime::check_clean();
}

namespace {
struct body_error {};
struct hook_error {};
struct unwinds_deep {  // a destructor that throws and catches inside itself while an exception is in flight
  int level;
  tvar<long>& seen;
  ~unwinds_deep() {
    if (level > 0) {
      try {
        unwinds_deep inner{level - 1, seen};
        throw body_error{};
      } catch (const body_error&) {
      }
    } else {
      seen.set(seen.get() + std::uncaught_exceptions());  // 10 in flight here
      schedule();
    }
  }
};
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "an on_abort hook that throws leaves a tasklet's block with the block's own exception",
                 "[unit][ordered]") {
  // With one worker a tasklet's atomically is a transaction of its own: an exception leaving it runs
  // its on_abort hooks and goes on, and an exception from a hook is dropped. In ordered mode the
  // block is the segment's outermost scope: the hook's exception replaced the block's (a helper's
  // program printed "hook" where one worker printed "body").
  tvar<int> x{0};
  event_log log;
  auto probe = [&](const char* who) {
    try {
      atomically([&] {
        x.set(x.get() + 1);
        on_abort([] { throw hook_error{}; });
        throw body_error{};
      });
    } catch (const hook_error&) {
      log(fmt::format("{} hook", who));
    } catch (const body_error&) {
      log(fmt::format("{} body", who));
    }
  };
  spawn([&] { probe("tasklet"); });
  run();
  probe("main");
  CHECK(log.str() == "tasklet body main body");
  CHECK(x.get() == 0);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a rollback frees more than eight exceptions in flight", "[unit][ordered]") {
  // A segment keeps the exception objects it throws in a fixed record: past its room the objects
  // went unrecorded and a rollback leaked them (ASan: 10 in flight, 4-10 of 10 runs). With no room
  // left the segment now waits for its turn. LeakSanitizer checks this in the ASan suite.
  tvar<long> seen{0}, shared{0};
  for (int t = 0; t < 4; ++t)
    spawn([&] {
      for (int r = 0; r < 3; ++r) {
        shared.set(shared.get() + 1);  // conflicts between tasklets
        try {
          unwinds_deep outer{9, seen};
          throw body_error{};
        } catch (const body_error&) {
        }
        schedule();
      }
    });
  run();
  CHECK(shared.get() == 12);
  CHECK(seen.get() == 12 * 10);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "commit_sink logs each line once, in serial order, whatever is rolled back",
                 "[unit][ordered]") {
  std::FILE* file = std::tmpfile();
  REQUIRE(file);
  auto logger = std::make_shared<spdlog::logger>("test", std::make_shared<weft::commit_sink>(file));
  logger->set_pattern("%v");
  for (int i = 0; i < 6; ++i) {
    spawn([&, i] {
      for (int step = 0; step < 3; ++step) {
        logger->info("tasklet {} step {}", i, step);
        schedule();
      }
    });
  }
  run();
  logger->flush();
  std::string expected;
  for (int step = 0; step < 3; ++step)
    for (int i = 0; i < 6; ++i) expected += fmt::format("tasklet {} step {}\n", i, step);
  std::string got(static_cast<std::size_t>(std::ftell(file)), '\0');
  std::rewind(file);
  CHECK(std::fread(got.data(), 1, got.size(), file) == got.size());
  std::fclose(file);
  CHECK(got == expected);
  fresh_runtime::check_clean();
}

// A pattern flag (%*) that allocates for 30 us inside the sink's lock, where spdlog's base_sink
// formats a line: a segment doomed while it logs meets its stop there.
struct allocating_flag final : spdlog::custom_flag_formatter {
  void format(const spdlog::details::log_msg&, const std::tm&, spdlog::memory_buf_t& dest) override {
    thread_local std::string* volatile kept = nullptr;  // (so that the new and delete stay)
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(30);
    while (std::chrono::steady_clock::now() < until) {
      kept = new std::string(64, 'x');
      delete kept;
    }
    dest.push_back('*');
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<allocating_flag>(); }
};

TEST_CASE_METHOD(fresh_runtime, "commit_sink lines that allocate while a commit dooms their segment leave the sink usable",
                 "[unit][ordered]") {
  // Newcomer round 24: spdlog's base_sink formats under its lock, and a line over its 250-byte
  // inline buffer allocates there. A segment doomed meanwhile (it read `hot`, which a segment
  // before it in serial order changed: it checks its reads at its next new once it is the head) was
  // stopped at such an allocation and rolled back without unwinding: the lock stayed locked and the
  // next line, in any tasklet, waited for ever (1 run in 5 at two workers; with this flag's
  // allocations, in most runs). Now the sink's lock holds the segment's stops (detail::sink_mutex).
  std::FILE* file = std::tmpfile();
  REQUIRE(file);
  auto sink = std::make_shared<weft::commit_sink>(file);
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<allocating_flag>('*').set_pattern("%v %*");
  sink->set_formatter(std::move(formatter));
  auto logger = std::make_shared<spdlog::logger>("test", sink);
  spdlog::logger* log = logger.get();
  tvar<int> hot{0, "hot"};
  constexpr int tasklets = 4, steps = 100;
  for (int k = 0; k < tasklets; ++k) {
    spawn([&, k] {
      for (int i = 0; i < steps; ++i) {
        const int v = hot.get();
        log->info("{} {} {}", k, i, v);
        if (k % 2 == 0) hot.set(v + 1);
        schedule();
      }
    });
  }
  run();
  logger->flush();
  std::string got(static_cast<std::size_t>(std::ftell(file)), '\0');
  std::rewind(file);
  CHECK(std::fread(got.data(), 1, got.size(), file) == got.size());
  std::fclose(file);
  std::string expected;  // the same steps, one after another: every line once, in serial order
  int h = 0;
  for (int i = 0; i < steps; ++i)
    for (int k = 0; k < tasklets; ++k) {
      expected += fmt::format("{} {} {} *\n", k, i, h);
      if (k % 2 == 0) ++h;
    }
  CHECK(got == expected);
  CHECK(hot.get() == h);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "exceptions sent with preference 1 are caught by the receiver and freed once", "[unit][ordered]") {
  // A newcomer's port: a producer sends items and errors, the consumer catches the errors and goes
  // on. With preference 1 the receiver runs at once, inside its catch handler... (double free at
  // ordered 2 with injection in 18 of 20 seeds).
  event_log log;
  channel<int> ch;
  ch.preference(1);
  spawn([ch] {
    for (int i = 0; i < 20; ++i) {
      if (i % 3 == 2) ch.send_exception(std::runtime_error("bad item " + std::to_string(i) + " with a long message text"));
      else ch.send(i);
    }
  });
  spawn([&, ch] {
    for (int i = 0; i < 20; ++i) {
      try {
        log(std::to_string(ch.receive()));
      } catch (const std::runtime_error& e) {
        const std::string what = e.what();
        log(what.substr(0, what.find(" with")));
      }
    }
  });
  run();
  std::string expected;
  for (int i = 0; i < 20; ++i) {
    if (!expected.empty()) expected += ' ';
    expected += i % 3 == 2 ? fmt::format("bad item {}", i) : std::to_string(i);
  }
  CHECK(log.str() == expected);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a heap vector of channel handles filled in one segment survives its rollbacks", "[unit][ordered]") {
  // A newcomer's port: a tree of tasklets; each node keeps its children's channels in a vector made
  // and filled between two switch points (spawn is none), then only read ("operation on an empty
  // channel handle" or a segfault with injection).
  struct msg {
    channel<msg> reply{nullptr};
    int depth = 0;
  };
  event_log log;
  std::function<void(channel<msg>)> node = [&](channel<msg> inbox) {
    msg m = inbox.receive();
    const int fan = m.depth >= 2 ? 0 : 2;
    std::vector<std::pair<channel<msg>, channel<msg>>> kids(2, {nullptr, nullptr});
    for (int i = 0; i < fan; ++i) {
      channel<msg> child_in, rep;
      spawn([&node, child_in] { node(child_in); });
      kids[i] = {child_in, rep};
    }
    int total = 0;
    for (int i = 0; i < fan; ++i) kids[i].first.send(msg{kids[i].second, m.depth + 1});
    for (int i = 0; i < fan; ++i) total += kids[i].second.receive().depth;
    log(fmt::format("d{}:{}", m.depth, total));
    m.reply.send(msg{nullptr, total + 1});
  };
  channel<msg> root, rep;
  spawn([&node, root] { node(root); });
  root.send(msg{rep, 0});
  CHECK(rep.receive().depth == 7);
  run();
  CHECK(log.events().size() == 7);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "hooks of a nested block rolled back by an exception are freed when their segment rolls back", "[unit][ordered]") {
  // A newcomer's program (LSan): the on_abort hook of a nested atomically that an exception undid ran,
  // and was then destroyed inside the segment's log: the free waited for the segment's commit, and
  // the rollback that parks the segment for its on_commit hook (or an injected one) lost it. The
  // hooks' copies are counted by a weft::shared token they capture, whose count follows rollbacks:
  // a rolled-back attempt's copies, on its stack or in its memory, end without their destructors
  // (DESIGN.md §5; add_abort_hook) and the handle log gives their references back. (Counted with a
  // plain counter, a hook copy in a rolled-back attempt's memory looked leaked: TSan's timing, 2026-12-04.)
  const auto token = weft::shared<int>::make(0);
  tvar<int> stock{3}, ran{0}, committed{0};
  for (int i = 0; i < 6; ++i)
    spawn([&] {
      atomically([&] {
        try {
          atomically([&] {
            stock.set(stock.get() - 1);
            // Captures too large for std::function's inline buffer: the copy add_abort_hook keeps
            // is a heap block of its own.
            on_abort([&ran, c = token, pad = std::array<long, 8>{}] { ran.set(ran.get() + 1 + static_cast<int>(pad[0])); });
            if (stock.get() < 0) throw std::runtime_error("out of stock");
          });
        } catch (const std::runtime_error&) {
        }
        on_commit([&committed] { committed.set(committed.get() + 1); });
      });
      schedule();
    });
  run();
  CHECK(stock.get() == 0);
  CHECK(ran.get() == 3);
  CHECK(committed.get() == 6);
  for (int i = 0; i < 1000 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  CHECK(token.use_count() == 1);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "an exception whose destructor allocates is not lost when its segment stops in it",
                 "[unit][ordered]") {
  // The end of a catch handler destroys the exception (__cxa_end_catch) after taking it off the
  // thread's caught list: in between, only that call knows the object. A speculative segment whose
  // reads went stale stops at its next new or delete (note_head_running's recheck): stopped at a new
  // in the exception's destructor, it leaked the object, and its destructor never finished (ASan: a
  // 144-byte object from __cxa_allocate_exception in 20% of the runs of "on_abort hooks of an undone
  // nested block ..." at 2 workers). Here B reads x, throws, and waits in its handler (no new or
  // delete there) until A, before it in serial order, has written x and committed; B then stops at
  // the first new after its handler, and runs again. The counts are plain on purpose: every
  // constructor must be matched by its destructor, in whichever attempt. (Test synchronisation by
  // plain atomics is outside the memory contract; at one worker A and B run one after the other.)
  static std::atomic<int> constructed{0}, destroyed{0};
  struct allocating_error {
    allocating_error() { ++constructed; }
    allocating_error(const allocating_error&) { ++constructed; }
    ~allocating_error() {
      auto scratch = std::make_unique<volatile char[]>(64);  // a new, then a delete: stop points
      scratch[0] = 1;
      ++destroyed;
    }
  };
  constructed = destroyed = 0;
  const bool parallel = ordered_two_or_more();
  const auto wait_for = [parallel](const std::atomic<bool>& flag) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (parallel && !flag.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < deadline) {
    }
  };
  tvar<int> x{0}, seen{-1};
  std::atomic<bool> b_read{false}, a_wrote{false};
  spawn([&] {  // A
    wait_for(b_read);
    x.set(1);
    a_wrote.store(true, std::memory_order_release);
  });  // A's segment ends here and commits: B, running, is the head now, its read of x stale
  spawn([&] {  // B
    const int v = x.get();
    b_read.store(true, std::memory_order_release);
    try {
      throw allocating_error();
    } catch (const allocating_error&) {
      wait_for(a_wrote);
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(parallel ? 20 : 0);
      while (std::chrono::steady_clock::now() < until) {
      }  // A's thread commits it meanwhile
    }
    auto after = std::make_unique<int>(v);  // with the exception gone, B may stop here
    seen.set(*after);
  });
  run();
  CHECK(seen.get() == 1);
  CHECK(constructed.load() == destroyed.load());
  if (parallel && configuration().abort_inject == 0) {
    INFO("B's stale attempt must have rolled back");
    CHECK(run_stats().aborts_conflict >= 1);
  }
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "tvars on a tasklet's stack keep what main commits to them when it is rolled back",
                 "[unit][ordered]") {
  // Main writes the inbox tvars that three tasklets keep on their stacks (found through a registry),
  // in atomically blocks and with direct set() calls, while their segments read them. Main runs at
  // the head, so its writes come before those segments in serial order; a rolled-back segment of an
  // owner restored its stack from a snapshot taken before main's commit and undid it (the owner then
  // counted short and gave up after 1,000 polls).
  constexpr long increments = 30;
  event_log log;
  std::string expected;
  for (int round = 0; round < 4; ++round) {
    std::array<tvar<tvar<long>*>, 3> inbox_of;
    for (int i = 0; i < 3; ++i)
      spawn([&, i] {
        tvar<long> inbox{0};
        inbox_of[static_cast<std::size_t>(i)].set(&inbox);
        long polls = 0;
        while (inbox.get() < increments && polls < 1000) {
          busy(++polls);
          schedule();
        }
        inbox_of[static_cast<std::size_t>(i)].set(nullptr);
        log(fmt::format("tasklet {}: inbox={} after {} polls", i, inbox.get(), polls < 1000 ? "few" : "1000"));
      });
    std::array<long, 3> sent{};
    for (long step = 0; step < 3 * increments + 1000; ++step) {
      // Long enough for another thread to run the tasklets' next segments, which read their inboxes
      // before main writes them.
      for (std::uint64_t k = 0; k < 10; ++k) busy(k);
      for (std::size_t i = 0; i < 3; ++i) {
        if (sent[i] == increments) continue;
        if (step % 2 == 0) {
          atomically([&] {
            if (tvar<long>* p = inbox_of[i].get()) p->set(p->get() + 1);
          });
          if (inbox_of[i].get() != nullptr) ++sent[i];
        } else if (tvar<long>* p = inbox_of[i].get()) {
          p->set(p->get() + 1);  // a direct write, outside atomically
          ++sent[i];
        }
      }
      if (sent == std::array<long, 3>{increments, increments, increments}) break;
      schedule();
    }
    run();
    for (int i = 0; i < 3; ++i)
      expected += fmt::format("{}tasklet {}: inbox={} after few polls", expected.empty() ? "" : " ", i, increments);
  }
  CHECK(log.str() == expected);
  fresh_runtime::check_clean();
}

namespace {
// Sends its depth on `to` when destroyed: a switch point in a destructor, run while an exception
// unwinds the frames.
struct reports_on_unwind {
  const channel<int>& to;
  int depth;
  ~reports_on_unwind() { to.send(depth); }
};
void descend_then_throw(const channel<int>& to, int depth) {
  reports_on_unwind r{to, depth};
  if (depth == 4) throw std::runtime_error("boom");
  descend_then_throw(to, depth + 1);
}
void descend_then_block(const channel<int>& to, const channel<int>& never, int depth) {
  reports_on_unwind r{to, depth};
  if (depth == 4) {
    (void)never.receive();
    return;
  }
  descend_then_block(to, never, depth + 1);
}
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "switch points in destructors that an exception runs, thrown or from a kill",
                 "[unit][ordered]") {
  // Each frame's destructor sends on a channel while the exception unwinds: the tasklet's next
  // segments start in the middle of the unwinding. Rolled back there, an attempt that had caught
  // (and freed) the exception left its re-run unwinding a freed exception: heap corruption, or the
  // wrong exception caught (a newcomer's program; 6 in 10 seeds at 2 workers with injection, and
  // without injection when the handlers conflict over a tvar).
  event_log log;
  tvar<long> handled{0};
  std::string expected;
  for (int round = 0; round < 3; ++round) {
    channel<int> audit;
    constexpr int tasklets = 12;
    for (int t = 0; t < tasklets; ++t)
      spawn([&, t] {
        try {
          descend_then_throw(audit, 0);
        } catch (const std::runtime_error& e) {
          handled.set(handled.get() + 1);  // every handler writes it: their segments conflict
          log(fmt::format("t{} caught {}", t, e.what()));
        }
      });
    spawn([&] {
      long sum = 0;
      for (int i = 0; i < tasklets * 5; ++i) sum += audit.receive();
      log(fmt::format("sum {}", sum));
    });
    run();
    // Killed while blocked four frames deep: tasklet_exit runs the same destructors.
    channel<int> never;
    std::vector<tasklet> blocked;
    for (int t = 0; t < tasklets; ++t)
      blocked.push_back(spawn([&, t] {
        try {
          descend_then_block(audit, never, 0);
        } catch (const tasklet_exit&) {
          log(fmt::format("t{} killed", t));
          throw;
        }
      }));
    spawn([&] {
      long sum = 0;
      for (int i = 0; i < tasklets * 5; ++i) sum += audit.receive();
      log(fmt::format("kill sum {}", sum));
    });
    run();
    spawn([&] {
      for (auto& b : blocked) b.kill();
    });
    run();
    // The receiver runs as soon as a send wakes it (preference -1): it has every value before the
    // senders go on.
    expected += fmt::format("{}sum {}", expected.empty() ? "" : " ", tasklets * 10);
    for (int t = 0; t < tasklets; ++t) expected += fmt::format(" t{} caught boom", t);
    expected += fmt::format(" kill sum {}", tasklets * 10);
    for (int t = 0; t < tasklets; ++t) expected += fmt::format(" t{} killed", t);
  }
  CHECK(log.str() == expected);
  CHECK(handled.get() == 3 * 12);
  fresh_runtime::check_clean();
}

namespace {
tvar<long>* loud_destroyed = nullptr;
// An exception whose destructor has effects a user can see.
struct loud_exception {
  int id;
  explicit loud_exception(int i) : id(i) {}
  loud_exception(const loud_exception& o) : id(o.id) {}
  ~loud_exception() {
    loud_destroyed->set(loud_destroyed->get() + 1);
    print("loud {} destroyed\n", id);
  }
};
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "an exception caught in a rolled-back segment is not destroyed twice", "[unit][ordered]") {
  // The handler sends on a channel, so the segment ends inside the catch block. Rolled back, the
  // attempt's exception was destroyed by the rollback, its destructor running outside any
  // transaction (an extra line printed at once, a count too high), and once more by the re-run (a
  // newcomer's program: 95 in 100 seeds with injection, every run under WEFT_CHECK=replay).
  tvar<long> destroyed{0};
  loud_destroyed = &destroyed;
  event_log log;
  std::string expected;
  for (int round = 0; round < 3; ++round) {
    channel<int> ch;
    constexpr int tasklets = 8;
    for (int t = 0; t < tasklets; ++t)
      spawn([&, t] {
        try {
          throw loud_exception(t);
        } catch (const loud_exception& e) {
          ch.send(e.id);
          log(fmt::format("t{} handled {}", t, e.id));
        }
      });
    spawn([&] {
      long sum = 0;
      for (int i = 0; i < tasklets; ++i) sum += ch.receive();
      log(fmt::format("sum {}", sum));
    });
    run();
    expected += fmt::format("{}sum 28", expected.empty() ? "" : " ");
    for (int t = 0; t < tasklets; ++t) expected += fmt::format(" t{} handled {}", t, t);
  }
  CHECK(log.str() == expected);
  CHECK(destroyed.get() == 3 * 8);
  loud_destroyed = nullptr;
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "retry() in main that only main's own tasklets could end is an error, not a hang",
                 "[unit][ordered]") {
  // main's tasklets do not run while main waits in retry(), and no other thread is alive: nothing
  // could ever change what it read (a newcomer's program waited for ever, at 1 and 2 workers).
  tvar<int> flag{0};
  spawn([&] { flag.set(1); });
  std::string what;
  try {
    atomically([&] {
      if (flag.get() == 0) retry();
    });
  } catch (const std::logic_error& e) {
    what = e.what();
  }
  CHECK(what.find("weft::retry(): nothing could ever wake this transaction") == 0);
  run();
  CHECK(flag.get() == 1);
  // With another thread alive that commits, main's retry() waits for it as before.
  std::thread other([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    atomically([&] { flag.set(2); });
  });
  const int seen = atomically([&] {
    if (flag.get() != 2) retry();
    return flag.get();
  });
  other.join();
  CHECK(seen == 2);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a tasklet at the head goes on through switch points that do not switch, as with one worker",
                 "[unit][ordered]") {
  // A barrier's coordinator: it receives from 16 blocked senders (the receiver goes on: preference
  // -1), with a tvar update, a try_receive on an empty channel and an exception sent by one sender
  // in between, then sends with preference 0 to 16 waiting receivers (the sender goes on). In
  // ordered mode the segments that start at the head commit in place and go on inevitable
  // (commit_in_place) instead of each going back to the thread's loop and being dispatched again.
  constexpr int n = 16;
  event_log log;
  tvar<int> total{0};
  channel<int> in, go, empty;
  go.preference(0);
  for (int i = 0; i < n; ++i)
    spawn([&, i] {
      if (i == 5)
        in.send_exception(std::runtime_error("bad-5"));
      else
        in.send(i);
      log(fmt::format("sent{}", i));
    });
  for (int i = 0; i < n; ++i)
    spawn([&, i] {
      const int v = go.receive();
      log(fmt::format("got{}:{}", i, v));
    });
  spawn([&] {
    for (int i = 0; i < n; ++i) {
      try {
        const int v = in.receive();
        atomically([&] { total.set(total.get() + v); });
        log(fmt::format("r{}", v));
      } catch (const std::runtime_error& e) {
        log(fmt::format("caught-{}", e.what()));
      }
      int none = 0;
      if (empty.try_receive(none) != channel<int>::status::would_block) log("try_receive did not report would_block");
    }
    for (int i = 0; i < n; ++i) {
      go.send(100 + i);
      log(fmt::format("s{}", i));
    }
  });
  run();
  std::string expected;
  auto add = [&](const std::string& e) { expected += (expected.empty() ? "" : " ") + e; };
  for (int i = 0; i < n; ++i) add(i == 5 ? "caught-bad-5" : fmt::format("r{}", i));
  for (int i = 0; i < n; ++i) add(fmt::format("s{}", i));
  for (int i = 0; i < n; ++i) add(fmt::format("sent{}", i));
  for (int i = 0; i < n; ++i) add(fmt::format("got{}:{}", i, 100 + i));
  CHECK(log.str() == expected);
  CHECK(atomically([&] { return total.get(); }) == n * (n - 1) / 2 - 5);
  const run_statistics st = run_stats();
  if (configuration().mode == mode::ordered && configuration().abort_inject == 0 && !st.fell_back_to_serial)
    // Each receive and send that lets the coordinator go on ends a segment committed in place, which
    // goes on inevitable (without it: no inevitable segment at all in this program).
    CHECK(st.inevitable >= n);
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "memory freed by committed segments is reused without new page faults",
                 "[unit][ordered]") {
  // Agents' pattern: every tick each of 16 tasklets builds a 64 KiB vector and replaces its old one
  // in a tvar; a coordinator is the barrier. Committed old values are freed a little later, in
  // batches (the epoch GC): glibc's heap then ends in a free stretch above its 128 KiB trim
  // threshold and handed it back to the system, and the next ticks faulted the pages in again —
  // 16 faults per vector (weft_sample_agents at 2 workers: 1,530 page faults against
  // 787 serially). Measured over a second run, after a first one has grown the heap.
  static constexpr int tiles = 16;
  static constexpr std::size_t bytes = 64 * 1024;
  std::deque<tvar<std::vector<unsigned char>>> rows(tiles);
  tvar<long> sum{0};
  auto one_run = [&](int ticks) {
    channel<int> done, go;
    done.preference(0);
    go.preference(0);
    for (int k = 0; k < tiles; ++k)
      spawn([&, k, done, go, ticks] {
        for (int t = 0; t < ticks; ++t) {
          std::vector<unsigned char> next(bytes, static_cast<unsigned char>(k + t));
          sum.set(sum.get() + next[bytes / 2]);
          rows[static_cast<std::size_t>(k)].set(std::move(next));
          done.send(k);
          if (t + 1 < ticks) go.receive();
        }
      });
    spawn([done, go, ticks] {
      for (int t = 0; t < ticks; ++t) {
        for (int k = 0; k < tiles; ++k) done.receive();
        if (t + 1 == ticks) break;
        schedule();
        for (int k = 0; k < tiles; ++k) go.send(1);
      }
    });
    run();
  };
  auto page_faults = [] {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<long>(ru.ru_minflt);
  };
  one_run(10);
  const long before = page_faults();
  constexpr int ticks = 100;
  one_run(ticks);
  const long faults = page_faults() - before;
  long expected = 0;
  for (int t = 0; t < 10; ++t)
    for (int k = 0; k < tiles; ++k) expected += static_cast<unsigned char>(k + t);
  for (int t = 0; t < ticks; ++t)
    for (int k = 0; k < tiles; ++k) expected += static_cast<unsigned char>(k + t);
  CHECK(sum.get() == expected);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  (void)faults;  // the sanitizers' allocators, not glibc's, own the heap
#else
  // A worker thread made for the run faults its stack and the records' pages in, and injected
  // aborts and the GC's timing move where vectors land: 0-560 here at 2 workers (400 once in CI,
  // under load). The regression was 2,000-7,500 (16 faults per trimmed vector).
  INFO(faults << " page faults in " << ticks * tiles << " segments that each built a 64 KiB vector");
  CHECK(faults < ticks * tiles * 3 / 4);
#endif
}

TEST_CASE_METHOD(fresh_runtime, "buffers that tasklets free after a switch point are reused without new page faults",
                 "[unit][ordered]") {
  // Round 11: tasklets allocating 64 KiB-4 MiB buffers that live across a schedule() ran 3.2 s with
  // 156,000 page faults serially (0.3 s with glibc's thresholds raised): above the 128 KiB mmap
  // threshold each buffer was mapped, faulted in and unmapped. No tvar: the thresholds are set when
  // the runtime is made, not only at the GC's first use.
  constexpr int tasklets = 8, steps = 50;
  auto one_run = [&] {
    channel<std::uint64_t> sums;
    for (int t = 0; t < tasklets; ++t)
      spawn([t, sums] {
        std::uint64_t sum = 0;
        for (int s = 0; s < steps; ++s) {
          const std::size_t bytes = std::size_t{256} << 10 << ((s + t) % 3);  // 256 KiB .. 1 MiB
          std::vector<unsigned char> buffer(bytes);
          for (std::size_t i = 0; i < bytes; i += 4096) buffer[i] = static_cast<unsigned char>(i / 4096 + s);
          schedule();  // the buffer lives across the switch point
          for (std::size_t i = 0; i < bytes; i += 4096) sum += buffer[i];
        }
        sums.send(sum);
      });
    std::uint64_t total = 0;
    for (int t = 0; t < tasklets; ++t) total += sums.receive();
    run();
    return total;
  };
  auto page_faults = [] {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<long>(ru.ru_minflt);
  };
  const std::uint64_t first = one_run();
  const long before = page_faults();
  const std::uint64_t second = one_run();
  const long faults = page_faults() - before;
  CHECK(first == second);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  (void)faults;  // the sanitizers' allocators, not glibc's, own the heap
#else
  // Mapped each time, a buffer faults 64-256 pages in; reused, a few: with injection, attempts run
  // again, and at 2 workers a buffer may first come from the other thread's arena (9 a buffer on a
  // fresh Debian 12 with injection, against a bound of 8 that held elsewhere).
  INFO(faults << " page faults for " << tasklets * steps << " buffers of 256 KiB-1 MiB");
  CHECK(faults < tasklets * steps * 32);
#endif
}

namespace {
// Filled by main after each spawn, read by the tasklets: plain data, as Stackless programs keep
// their tasklets (`T.append(stackless.tasklet(f)())`) and their set-up.
std::array<tasklet, 6> spawned_by_main;
std::array<int, 6> set_up_by_main;
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "tasklets see the plain data main wrote after spawning them and before its next switch point",
                 "[unit][ordered]") {
  // Round 15: at 2 workers a tasklet's first segment started on the worker thread while main was
  // still storing the handles: it saw an empty handle, and a kill or run() of a tasklet not yet
  // started did nothing or crashed. Here main stores each handle and a number a while after the
  // spawn, and a first tasklet keeps the worker thread busy and then looking for work meanwhile:
  // without the rule it starts the next tasklets in between.
  // (Each tasklet records in a tvar of its own: one shared log would make every tasklet's segment
  // conflict with the one before it and run again at the head, hiding what it read the first time.)
  std::array<tvar<int>, 6> seen;
  spawn([] { spin_us(1000); });
  for (std::size_t i = 0; i < spawned_by_main.size(); ++i) {
    tasklet t = spawn([&seen, i] {
      const tasklet me = spawned_by_main[i];
      seen[i].set(set_up_by_main[i] * (me == getcurrent() ? 1 : -1));
    });
    spin_us(300);
    spawned_by_main[i] = t;
    set_up_by_main[i] = static_cast<int>(i) + 10;
  }
  run();
  for (std::size_t i = 0; i < seen.size(); ++i) CHECK(seen[i].get() == static_cast<int>(i) + 10);
  for (auto& t : spawned_by_main) t = tasklet();
}

TEST_CASE_METHOD(fresh_runtime, "a round-robin main's plain writes are seen by the tasklets' next segments", "[unit][ordered]") {
  // Main writes a plain round number, then schedules: every tasklet reads the number of the round
  // in its segment after main's (serial order), even though it was runnable while main ran.
  // The tasklets' segments are long enough to keep the worker thread busy: without the rule it
  // starts the next one of a tasklet that ran before main while main runs.
  event_log log;
  int round = 0;  // main's plain state (written by main only, between its switch points)
  for (int k = 0; k < 3; ++k)
    spawn([&, k] {
      for (int i = 0; i < 5; ++i) {
        spin_us(200);
        log(std::to_string(k) + ":" + std::to_string(round));
        schedule();
      }
    });
  for (int i = 0; i < 5; ++i) {
    spin_us(300);
    ++round;
    schedule();
  }
  run();
  CHECK(log.str() == "0:1 1:1 2:1 0:2 1:2 2:2 0:3 1:3 2:3 0:4 1:4 2:4 0:5 1:5 2:5");
}

TEST_CASE_METHOD(fresh_runtime, "a kill or raise or run of a tasklet further on leaves no segment with main's old data",
                 "[unit][ordered]") {
  // Newcomer round 23. The ring is main, a killer K, readers R and R2, then runnable victims. R's
  // segment starts beside K's while R comes before main. K's kill (or raise, or run()) of a victim
  // rotates the ring to it: R now comes after main, and serial order shows it main's next round
  // number (plain data). Without a rollback R's segment committed what it had read before: one
  // round behind (round 23: in 5-9 of 10 runs of 1,000 rounds at two workers). K also takes R2 out
  // of the ring (remove(); main puts it back): its segment, rolled back, must not run beside main's
  // code either (ThreadSanitizer saw R's do, reading main's round while main wrote it).
  constexpr int rounds = 200, raised = 3, killed = 12;
  int round = 0;  // main's plain state, written between its switch points
  tvar<std::vector<int>> seen{{}}, seen2{{}};  // what R and R2 read, checked by main at its turns
  tvar<int> raises{0};
  std::vector<tasklet> to_raise, to_kill;
  tasklet r2;
  tasklet killer = spawn([&] {  // K: every other turn it kills, raises into or runs a victim, or removes R2
    for (int i = 0; i < rounds; ++i) {
      spin_us(40);  // (long segments: the guard keeps the run parallel)
      if (i % 2 == 1) {
        const int e = i / 2;
        if (e % 4 == 0 && e / 4 < killed)
          to_kill[static_cast<std::size_t>(e / 4)].kill();
        else if (e % 4 == 2)
          to_raise[static_cast<std::size_t>(e % raised)].run();
        else if (e % 4 == 3)
          r2.remove();
        else
          to_raise[static_cast<std::size_t>(e % raised)].throw_(std::runtime_error("raised"));
      }
      schedule();
    }
  });
  const auto reader = [&](tvar<std::vector<int>>& log) {
    for (;;) {
      spin_us(40);
      const int r = round;  // serial order: the number main set at its last turn
      log.modify([&](auto& v) { v.push_back(r); });
      schedule();
    }
  };
  tasklet r1 = spawn([&] { reader(seen); });
  r2 = spawn([&] { reader(seen2); });
  for (int k = 0; k < raised; ++k)
    to_raise.push_back(spawn([&] {
      for (;;) {
        try {
          schedule();
        } catch (const std::runtime_error&) {
          raises.set(raises.get() + 1);
        }
      }
    }));
  for (int k = 0; k < killed; ++k)
    to_kill.push_back(spawn([] {
      for (;;) schedule();
    }));
  int stale = 0;
  std::size_t checked = 0, checked2 = 0;
  const auto check = [&](const tvar<std::vector<int>>& log, std::size_t& from) {
    // Everything before main in serial order has committed: the reads since main's last turn. (Main
    // only reads the logs: a write would conflict with the reader's segment and roll it back anyway.)
    const std::vector<int> v = log.get();
    for (; from < v.size(); ++from)
      if (v[from] != round) ++stale;
  };
  for (int r = 1; killer.alive() && r <= 4 * rounds; ++r) {
    check(seen, checked);
    check(seen2, checked2);
    round = r;
    r2.insert();  // (back in the ring if K removed it; else nothing)
    schedule();
  }
  for (auto& t : to_raise) t.kill();
  r1.kill();
  r2.kill();
  run();
  INFO(stale << " of " << checked + checked2 << " reads of main's round were stale");
  CHECK_FALSE(killer.alive());
  CHECK(checked >= static_cast<std::size_t>(rounds) - 2);
  CHECK(checked2 > 0);
  CHECK(stale == 0);
  int expected_raises = 0;  // every event but the kills, the runs and the removes
  for (int e = 0; e < rounds / 2; ++e) expected_raises += !(e % 4 == 0 && e / 4 < killed) && e % 4 != 2 && e % 4 != 3;
  CHECK(raises.get() == expected_raises);
  for (auto& t : to_kill) CHECK_FALSE(t.alive());
}

TEST_CASE_METHOD(fresh_runtime, "a kill of a blocked tasklet in a long ring rolls back no segment for main's sake",
                 "[unit][ordered]") {
  // A blocked target is appended at the tail and the ring rotated to it: nobody's order relative to
  // main changes. With main in the middle of a long ring (tasklets woken after main's schedule()),
  // the bounded look for main found it at neither end and rolled back every segment in flight
  // (a review of the rotation's fix). The kills' own targets have nothing in flight: no abort of
  // the kind "changed" is right.
  constexpr int rounds = 30, spinners = 40, woken = 40;
  channel<int> gate, never;
  gate.preference(0);  // a woken receiver goes to the tail, the sender goes on
  std::vector<tvar<long>> spun(spinners);  // (one each: a shared count would conflict)
  tvar<int> stop{0};
  std::vector<tasklet> victims;
  for (int v = 0; v < rounds; ++v) victims.push_back(spawn([never] { never.receive(); }));
  spawn([&] {  // K: wakes the gate's receivers (after main, which just yielded), then kills a victim
    for (int i = 0; i < rounds; ++i) {
      for (int w = 0; w < woken; ++w) {
        int x = w;
        if (gate.try_send(x) != channel<int>::status::ok) break;
      }
      victims[static_cast<std::size_t>(i)].kill();
      schedule();
    }
    stop.set(1);
  });
  for (int s = 0; s < spinners; ++s)
    spawn([&, s] {
      tvar<long>& mine = spun[static_cast<std::size_t>(s)];
      while (stop.get() == 0) {
        spin_us(20);
        mine.set(mine.get() + 1);
        schedule();
      }
    });
  for (int w = 0; w < woken; ++w)
    spawn([&] {
      for (;;) gate.receive();
    });
  while (stop.get() == 0) schedule();
  run();
  long total = 0;
  for (auto& n : spun) total += n.get();
  CHECK(total >= static_cast<long>(rounds) * spinners / 2);
  for (auto& v : victims) CHECK_FALSE(v.alive());
  const run_statistics st = run_stats();
  INFO("fell back: " << st.fallback_reason << "; aborts: " << st.aborts_conflict << " conflict, " << st.aborts_changed
                     << " changed");
  if (ordered_two_or_more() && configuration().abort_inject == 0 && !st.fell_back_to_serial) CHECK(st.aborts_changed == 0);
}

namespace {
// A large tvar value that counts how many of its copies are alive at once (instrumentation: the
// count is not program state, nothing reads it inside a tasklet).
struct counted_value {
  static inline std::atomic<int> live{0}, peak{0};
  std::vector<char> bytes;
  explicit counted_value(std::size_t n) : bytes(n, 1) { note(); }
  counted_value(const counted_value& o) : bytes(o.bytes) { note(); }
  counted_value& operator=(const counted_value&) = default;
  ~counted_value() { live.fetch_sub(1, std::memory_order_relaxed); }
  static void note() {
    const int now = live.fetch_add(1, std::memory_order_relaxed) + 1;
    int p = peak.load(std::memory_order_relaxed);
    while (now > p && !peak.compare_exchange_weak(p, now, std::memory_order_relaxed)) {
    }
  }
};
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "values a chain at the head replaces are freed while segments behind it wait",
                 "[unit][ordered]") {
  // Round 21: a tasklet (not main) that replaces a large tvar value and then spawns, again and again,
  // stays at the head: each spawn ends a segment committed in place, and the next goes on at once.
  // The spawned tasklets' first segments finish meanwhile on the other thread and wait for their
  // turn, each holding the epoch it started in, and with it every value the chain replaced since:
  // 2,000 replacements of 1 MiB held 2 GB at two workers (14 MB with one). The same with a
  // coordinator that records each agent it spawns in a registry tvar. Now the waiting segments are
  // rolled back once the chain has allocated 16 MiB with the epoch held, and run again later.
  constexpr int rounds = 300;
  constexpr std::size_t bytes = std::size_t{1} << 20;
  counted_value::live = 0;
  counted_value::peak = 0;
  {
    tvar<counted_value> big{counted_value(bytes)};
    tvar<long> started{0};
    spawn([&] {
      for (int i = 0; i < rounds; ++i) {
        big.modify([&](counted_value& v) { ++v.bytes[static_cast<std::size_t>(i) % bytes]; });
        spawn([&] { started.set(started.get() + 1); });
      }
    });
    run();
    CHECK(started.get() == rounds);
    long sum = 0;
    for (char c : big.get().bytes) sum += c;
    CHECK(sum == static_cast<long>(bytes) + rounds);
  }
  fresh_runtime::check_clean();
  INFO("copies of the 1 MiB value alive at once: " << counted_value::peak.load());
  // One worker: 2 or 3 (the GC frees replaced values a few retires later). The regression: ~rounds.
  CHECK(counted_value::peak.load() <= 100);
  CHECK(counted_value::live.load() == 0);
}

TEST_CASE_METHOD(fresh_runtime, "a population spawned by a tasklet is judged by its segments and not by the spawns",
                 "[unit][ordered]") {
  // Round 21: a coordinator tasklet spawns its workers, each spawn a short segment committed in
  // place at the head. Counted as any commit, those spawns made the one-way guard's first window
  // ("segments too short for parallelism to pay") and the whole run went on serial, though the
  // workers' segments are long: spawned by main, the same program ran 1.9x faster at two workers.
  constexpr int workers = 600, rounds = 3;
  std::vector<tvar<std::uint64_t>> out(workers);
  spawn([&] {
    for (int i = 0; i < workers; ++i)
      spawn([&out, i] {
        auto h = static_cast<std::uint64_t>(i);
        for (int r = 0; r < rounds; ++r) {
          h = busy_step(h, r);
          schedule();
        }
        out[static_cast<std::size_t>(i)].set(h);
      });
  });
  run();
  std::uint64_t sum = 0, expected = 0;
  for (int i = 0; i < workers; ++i) {
    sum += out[static_cast<std::size_t>(i)].get();
    expected += busy_hash(i, rounds);
  }
  CHECK(sum == expected);
  const run_statistics st = run_stats();
  INFO("fell back: " << st.fallback_reason);
  if (ordered_two_or_more() && configuration().abort_inject == 0) CHECK_FALSE(st.fell_back_to_serial);
}

TEST_CASE_METHOD(fresh_runtime, "a population whose first segments block at once is judged by the segments after them",
                 "[unit][ordered]") {
  // Round 21's fan-out: consumers in a range-for over one channel, each first segment starting the
  // loop and blocking at once (~0.2 us). A thousand of them made the one-way guard's first window
  // and the run went on serial, though each item is 4 us of work (0.69 s at two workers as at one;
  // guard off, 0.39 s). A server's connections start the same way. The guard may still fall back
  // at the start-up; serial state's probe then finds the long segments and the run goes parallel
  // again.
  constexpr int consumers = 700, items = 1400;
  channel<int> ch;
  ch.preference(1);  // the producer goes on after each send
  std::vector<tvar<long>> done(consumers);
  for (int c = 0; c < consumers; ++c)
    spawn([&, c] {
      for (int x : ch) {
        weft::test::spin_us(20);  // long enough segments: the guard keeps the run parallel
        auto& d = done[static_cast<std::size_t>(c)];
        d.set(d.get() + x);
      }
    });
  spawn([&] {
    for (int i = 1; i <= items; ++i) ch.send(i);
    ch.close();
  });
  run();
  long sum = 0;
  for (auto& d : done) sum += d.get();
  CHECK(sum == static_cast<long>(items) * (items + 1) / 2);
  const run_statistics st = run_stats();
  INFO("fell back: " << st.fallback_reason << "; returned to parallel " << st.returns_to_parallel << " times, "
                     << st.serial_ms << " ms in serial state");
  if (ordered_two_or_more() && configuration().abort_inject == 0 && st.fell_back_to_serial)
    CHECK(st.returns_to_parallel >= 1);
}

namespace {
struct made_of {  // an exception whose constructor's argument is a switch point (`throw made_of(ch.receive())`)
  int v;
  explicit made_of(int x) : v(x) {}
};
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "the run goes parallel again while tasklets wait at switch points of serial state",
                 "[unit][ordered]") {
  // The guard's way back: a short phase (ping-pong) sends the run to serial state; waiters start
  // there and block inside a catch block, in the construction of an exception, or plainly (to be
  // killed); a long phase (20 us segments) makes the probe take the run parallel again while they
  // wait; then they are fed and killed. Each resumes from a switch point of serial state on
  // whichever thread, its caught exception, the one being made and its kill intact.
  constexpr int rounds = 3000, waiters = 12, busy = 16, busy_rounds = 40;
  [[maybe_unused]] const tsan_guard_threshold threshold;
  channel<int> in_catch, in_making, plain;
  tvar<long> caught_sum{0}, made_sum{0}, killed{0}, pings{0};
  tvar<std::uint64_t> busy_sum{0};  // (unsigned: the hash wraps)
  tvar<std::vector<tasklet>> to_kill{{}};
  tvar<int> started{0};
  spawn_ping_pong(rounds, [&](int v) {
    pings.set(v);
    // Serial state by now at two workers (guard on): the waiters start and block there.
    for (int w = 0; w < waiters; ++w) {
      spawn([&, w] {
        try {
          throw std::runtime_error("caught " + std::to_string(w));
        } catch (const std::runtime_error& e) {
          const int x = in_catch.receive();  // inside the handler
          caught_sum.set(caught_sum.get() + x + static_cast<long>(std::string(e.what()).size()));
        }
      });
      spawn([&] {
        try {
          throw made_of(in_making.receive());  // inside the exception's construction
        } catch (const made_of& m) {
          made_sum.set(made_sum.get() + m.v);
        }
      });
      tasklet k = spawn([&] {
        struct count_kill {
          tvar<long>& k;
          ~count_kill() { k.set(k.get() + 1); }
        } counted{killed};
        plain.receive();
      });
      to_kill.modify([&](auto& v) { v.push_back(k); });
    }
    started.set(1);
    // The long phase.
    for (int b = 0; b < busy; ++b)
      spawn([&, b] {
        auto h = static_cast<std::uint64_t>(b);
        for (int r = 0; r < busy_rounds; ++r) {
          h = busy_step(h, r);
          schedule();
        }
        busy_sum.set(busy_sum.get() + h);
        // The last busy tasklet feeds the waiters and kills the others.
        if (b == busy - 1) {
          for (int w = 0; w < waiters; ++w) {
            in_catch.send(w);
            in_making.send(100 + w);
          }
          for (auto& t : to_kill.get()) t.kill();
        }
      });
  });
  run();
  CHECK(pings.get() == rounds);
  CHECK(started.get() == 1);
  std::uint64_t expected_busy = 0;
  for (int b = 0; b < busy; ++b) expected_busy += busy_hash(b, busy_rounds);
  CHECK(busy_sum.get() == expected_busy);
  long expected_caught = 0, expected_made = 0;
  for (int w = 0; w < waiters; ++w) {
    expected_caught += w + static_cast<long>(("caught " + std::to_string(w)).size());
    expected_made += 100 + w;
  }
  CHECK(caught_sum.get() == expected_caught);
  CHECK(made_sum.get() == expected_made);
  CHECK(killed.get() == waiters);
  const run_statistics st = run_stats();
  INFO("fell back: " << st.fallback_reason << "; returned to parallel " << st.returns_to_parallel << " times, "
                     << st.serial_ms << " ms in serial state; " << st.inevitable << " inevitable segments");
  if (ordered_two_or_more() && configuration().abort_inject == 0 && st.fell_back_to_serial) {
    CHECK(st.returns_to_parallel >= 1);
    // After the return the busy phase runs speculatively, not at the head: serial state had passed
    // the mark of an exception being made (in_making's waiters) from tasklet to tasklet, and every
    // busy tasklet saved it as its own and ran each later segment inevitable (the first version).
    CHECK(st.inevitable < busy * busy_rounds / 2);
  }
}

TEST_CASE_METHOD(fresh_runtime, "the run goes parallel again while main waits at a switch point of serial state",
                 "[unit][ordered]") {
  // Main collects results, the commonest way: after the fallback (a ping-pong of short segments) it
  // runs in serial state, then waits at its own switch point (a receive) while the workers' long
  // segments run; the probe resumes it there, and it takes the run parallel and waits in the
  // main thread's loop until a result arrives.
  constexpr int rounds = 3000, busy = 16, busy_rounds = 40;
  [[maybe_unused]] const tsan_guard_threshold threshold;
  channel<int> ready;
  channel<std::uint64_t> results;
  spawn_ping_pong(rounds, [ready](int v) { ready.send(v); });
  CHECK(ready.receive() == rounds);  // serial state by now at two workers (guard on)
  for (int b = 0; b < busy; ++b)
    spawn([&, b] {
      auto h = static_cast<std::uint64_t>(b);
      for (int r = 0; r < busy_rounds; ++r) {
        h = busy_step(h, r);
        schedule();
      }
      results.send(h);
    });
  std::uint64_t sum = 0, expected = 0;
  for (int b = 0; b < busy; ++b) sum += results.receive();
  for (int b = 0; b < busy; ++b) expected += busy_hash(b, busy_rounds);
  CHECK(sum == expected);
  run();
  const run_statistics st = run_stats();
  INFO("fell back: " << st.fallback_reason << "; returned to parallel " << st.returns_to_parallel << " times, "
                     << st.serial_ms << " ms in serial state; " << st.inevitable << " inevitable segments");
  if (ordered_two_or_more() && configuration().abort_inject == 0 && st.fell_back_to_serial) {
    CHECK(st.returns_to_parallel >= 1);
    CHECK(st.inevitable < busy * busy_rounds / 2);
  }
}

namespace {
// README's porting pattern: an agent lives on its tasklet's stack, registered in a tvar map by its
// constructor and removed by its destructor; others find it there and change its tvars.
struct stack_agent;
struct agent_world {
  tvar<std::map<long, std::pair<stack_agent*, tasklet>>> registry{{}};
  tvar<long> next_id{0};
  tvar<long> energy_of_dead{0};
  long total = 0;  // set before run()
};
struct stack_agent {
  agent_world& w;
  long id;
  tvar<long> energy{100};
  tvar<std::uint64_t> log;
  stack_agent(agent_world& world, long i) : w(world), id(i), log(static_cast<std::uint64_t>(i)) {
    w.registry.modify([&](auto& m) { m[id] = {this, getcurrent()}; });
  }
  ~stack_agent() { w.registry.modify([&](auto& m) { m.erase(id); }); }
  stack_agent(const stack_agent&) = delete;
  stack_agent& operator=(const stack_agent&) = delete;
};
std::uint64_t next_random(std::uint64_t& r) {
  r ^= r << 13, r ^= r >> 7, r ^= r << 17;
  return r;
}
void agent_life(agent_world& w, long id) {
  {
    stack_agent a(w, id);
    std::uint64_t r = static_cast<std::uint64_t>(id) + 1;
    try {
      for (int step = 0; step < 20; ++step) {
        std::uint64_t h = a.log.get();
        for (std::uint64_t k = 0; k < 200; ++k) h = (h ^ (k + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2))) * 0x100000001B3ULL;
        a.log.set(h);
        const long back = static_cast<long>(next_random(r) % 64);
        auto [other, handle] = w.registry.view([&](const auto& m) -> std::pair<stack_agent*, tasklet> {
          auto it = m.lower_bound(id - back);
          if (it == m.end() || it->second.first == &a) return {nullptr, tasklet()};
          return it->second;
        });
        if (other) {
          other->energy.set(other->energy.get() - 1);
          a.energy.set(a.energy.get() + 1);
          if (next_random(r) % 50 == 0 && handle.alive() && !handle.is_current()) handle.kill();
        }
        schedule();
      }
    } catch (const tasklet_exit&) {
      w.energy_of_dead.set(w.energy_of_dead.get() + a.energy.get());
      throw;
    }
    w.energy_of_dead.set(w.energy_of_dead.get() + a.energy.get());
  }
}
void spawn_agent(agent_world& w) {
  const long id = w.next_id.get();
  if (id >= w.total) return;
  w.next_id.set(id + 1);
  spawn([&w, id] {
    // The successor is spawned where this tasklet's stack has just let the agent go: its next frames
    // reuse the agent's bytes at once.
    struct respawn {
      agent_world& w;
      ~respawn() { spawn_agent(w); }
    } successor{w};
    agent_life(w, id);
  });
}
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "agents on their tasklets' stacks found through a registry: energy is conserved",
                 "[unit][ordered]") {
  // Round 21: a segment whose snapshot is stale may still find an agent whose scope has ended and
  // read its tvar from bytes the owner's next frames have reused. That is speculation the commit's
  // validation rolls back; ASan reported it (a stack-buffer-underflow in the read, 4 of 6 runs of
  // the helper's program at two workers), so such programs could not be checked under ASan; TSan
  // reported it as a data race with the constructor of the next tvar built in those bytes (CI, 1 run
  // in 2 at two workers; stm_core.hpp's speculative_load).
  agent_world w;
#if defined(__SANITIZE_THREAD__)
  // Under TSan every rollback gives the tasklet another TSan fiber (tasklet/src/context.cpp), and the
  // full size's ~18,000 rollbacks with injection grew the process past 23 GB (OOM-killed in CI).
  constexpr int agents = 300, at_once = 30;
#else
  constexpr int agents = 3000, at_once = 300;  // (ASan: 3 of 6 runs reported the stale read at this size)
#endif
  w.total = agents;
  for (int i = 0; i < at_once; ++i) spawn_agent(w);
  run();
  CHECK(w.next_id.get() == w.total);
  CHECK(w.registry.get().empty());
  CHECK(w.energy_of_dead.get() == 100 * w.total);
  fresh_runtime::check_clean();
}
