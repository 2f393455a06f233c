// SEMANTICS.md §3: kill, raise_exception and exceptions escaping tasklets.
#include <atomic>

#include "support.hpp"

using namespace weft;
using weft::test::event_log;
using weft::test::flags;
using weft::test::fresh_runtime;
using weft::test::on_unwind;

namespace {
struct boom : std::runtime_error {
  boom() : std::runtime_error("boom") {}
};
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "3.1 kill of a blocked tasklet: it leaves the queue and runs just before the caller", "[unit][kill]") {
  event_log log;
  channel<int> ch;
  tasklet t = spawn([&] {
    on_unwind u{&log, "T-unwound"};
    try {
      ch.receive();
    } catch (const tasklet_exit&) {
      log("T-exit-balance" + std::to_string(ch.balance()));  // balance changed before T runs
      throw;
    }
  });
  run();
  REQUIRE(ch.balance() == -1);
  spawn([&] { log("O1"); });
  spawn([&] { log("O2"); });
  t.kill();  // [M O1 O2] -> [T M O1 O2]
  log("M");
  run();
  CHECK(log.str() == "T-exit-balance0 T-unwound M O1 O2");
  CHECK(!t.alive());
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "3.1 kill of a runnable tasklet: its successor runs before the caller", "[unit][kill]") {
  event_log log;
  spawn([&] {
    log("A");
    schedule();
    log("A2");
  });
  tasklet b = spawn([&] {
    log("B");
    on_unwind u{&log, "B-unwound"};
    schedule();
    log("B-never");
  });
  spawn([&] {
    log("C");
    schedule();
    log("C2");
  });
  schedule();  // A B C run once: ring [M A B C]
  log.clear();
  b.kill();  // B unwinds, then C runs, then M returns from kill, then A
  log("M");
  run();
  CHECK(log.str() == "B-unwound C2 M A2");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "3.2 a tasklet may catch tasklet_exit and go on", "[unit][kill]") {
  event_log log;
  tasklet t = spawn([&] {
    try {
      schedule_remove();
    } catch (const std::exception&) {
      log("wrong: tasklet_exit is not a std::exception");
    } catch (const tasklet_exit& e) {
      log(std::string("caught-") + e.what());
    }
    log("goes-on");
  });
  run();
  t.kill();
  CHECK(log.str() == "caught-TaskletExit goes-on");
  CHECK(!t.alive());
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "3.3 kill special cases", "[unit][kill]") {
  event_log log;
  // Empty or dead: nothing.
  tasklet().kill();
  tasklet d = spawn([] {});
  run();
  d.kill();

  // Paused, never started: dies at once, its function never runs, nobody else runs.
  spawn([&] { log("other"); });
  tvar<bool> destroyed{false};  // set by whoever destroys the tasklet's function: a tvar
  struct flag_on_destroy {
    tvar<bool>* f;
    ~flag_on_destroy() {
      if (f) f->set(true);
    }
    flag_on_destroy(tvar<bool>* p) : f(p) {}
    flag_on_destroy(flag_on_destroy&& o) noexcept : f(std::exchange(o.f, nullptr)) {}
  };
  tasklet p([&, g = flag_on_destroy(&destroyed)] { log("P-ran"); });
  p.kill();
  CHECK(!p.alive());
  CHECK(destroyed.get());  // what it captured is released
  CHECK(log.str().empty());
  run();
  CHECK(log.str() == "other");

  // Scheduled, never started ([M A B], M kills A): A dies without running, B runs before kill returns.
  log.clear();
  tasklet a = spawn([&] { log("A-ran"); });
  spawn([&] { log("B"); });
  a.kill();
  log("kill-returned");
  CHECK(log.str() == "B kill-returned");

  // getcurrent().kill() in a non-main tasklet: it unwinds and dies, its successor runs.
  log.clear();
  spawn([&] {
    on_unwind u{&log, "self-unwound"};
    getcurrent().kill();
    log("never");
  });
  spawn([&] { log("successor"); });
  run();
  CHECK(log.str() == "self-unwound successor");

  // In main: tasklet_exit is thrown in main as an ordinary exception.
  CHECK_THROWS_AS(getcurrent().kill(), tasklet_exit);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "3.4 raise_exception into tasklets that do not catch it", "[unit][kill]") {
  // Scheduled, never started: it dies and the exception surfaces in main at the call.
  event_log log;
  tasklet a = spawn([&] { log("A-ran"); });
  CHECK_THROWS_AS(a.raise_exception(std::make_exception_ptr(boom())), boom);
  CHECK(!a.alive());
  CHECK(log.str().empty());

  // Blocked: the same.
  channel<int> ch;
  tasklet b = spawn([&] { ch.receive(); });
  run();
  CHECK_THROWS_AS(b.throw_(boom()), boom);
  CHECK(!b.alive());
  CHECK(ch.balance() == 0);

  // Caught inside: the tasklet goes on.
  tasklet c = spawn([&] {
    try {
      ch.receive();
    } catch (const boom&) {
      log("C-caught");
    }
  });
  run();
  c.throw_(boom());
  CHECK(log.str() == "C-caught");

  // Dead or empty.
  test::require_throws_message<std::logic_error>([&] { a.throw_(boom()); }, "You cannot throw to a dead tasklet");
  test::require_throws_message<std::logic_error>([&] { tasklet().throw_(boom()); },
                                                 "You cannot throw to a dead tasklet");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "3.5 an exception escaping a tasklet surfaces in main where it waits", "[unit][kill]") {
  event_log log;
  // In run(): [A B C], B throws -> main gets it with ring [M C A]; run() again runs C first.
  spawn([&] {
    log("A");
    schedule();
    log("A2");
  });
  spawn([&] {
    log("B");
    throw boom();
  });
  spawn([&] {
    log("C");
    schedule();
    log("C2");
  });
  CHECK_THROWS_AS(run(), boom);
  CHECK(getruncount() == 3);
  log("M");
  run();
  CHECK(log.str() == "A B M C A2 C2");

  // In schedule(): main is in the ring, the ring is rotated to main.
  log.clear();
  spawn([&] { throw boom(); });
  spawn([&] { log("after"); });
  CHECK_THROWS_AS(schedule(), boom);
  log("M");
  run();
  CHECK(log.str() == "M after");

  // In receive(): main leaves the channel queue.
  channel<int> ch;
  spawn([&] { throw boom(); });
  CHECK_THROWS_AS(ch.receive(), boom);
  CHECK(ch.balance() == 0);

  // In send().
  spawn([&] { throw boom(); });
  CHECK_THROWS_AS(ch.send(1), boom);
  CHECK(ch.balance() == 0);

  // In switch_to().
  tasklet t([&] { throw boom(); });
  CHECK_THROWS_AS(t.switch_to(), boom);
  CHECK(getmain().scheduled());

  // In raise_exception() of a tasklet that throws something else on the way out.
  tasklet u = spawn([&] {
    try {
      schedule_remove();
    } catch (const boom&) {
      throw std::out_of_range("other");
    }
  });
  run();
  CHECK_THROWS_AS(u.throw_(boom()), std::out_of_range);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "kill unwinds every frame and runs destructors", "[unit][kill]") {
  event_log log;
  channel<int> ch;
  std::function<void(int)> deep = [&](int n) {
    on_unwind u{&log, "frame" + std::to_string(n)};
    if (n == 0)
      ch.receive();
    else
      deep(n - 1);
  };
  tasklet t = spawn([&] { deep(3); });
  run();
  t.kill();
  CHECK(log.str() == "frame0 frame1 frame2 frame3");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a switch inside a catch block keeps each tasklet's exception state", "[unit][kill]") {
  event_log log;
  tvar<int> uncaught_in_a{-1};
  spawn([&] {
    try {
      throw std::runtime_error("A-error");
    } catch (const std::runtime_error&) {
      schedule();  // B throws and catches its own exception meanwhile
      uncaught_in_a.set(std::uncaught_exceptions());
      try {
        throw;  // must rethrow A's exception, not B's
      } catch (const std::runtime_error& e) {
        log(e.what());
      }
    }
  });
  spawn([&] {
    try {
      throw std::logic_error("B-error");
    } catch (const std::logic_error& e) {
      schedule();
      log(e.what());
    }
  });
  run();
  CHECK(log.str() == "A-error B-error");
  CHECK(uncaught_in_a.get() == 0);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "kill from another tasklet of a tasklet blocked sending", "[unit][kill]") {
  event_log log;
  channel<std::string> ch;
  tasklet s = spawn([&] {
    try {
      ch.send("never delivered");
    } catch (const tasklet_exit&) {
      log("S-killed");
      throw;
    }
  });
  spawn([&] {
    s.kill();
    log("K-after-kill");
  });
  run();
  CHECK(log.str() == "S-killed K-after-kill");
  CHECK(ch.balance() == 0);
  check_clean();
}

namespace {
struct counted_escape {
  static inline std::atomic<int> live{0};
  counted_escape() { ++live; }
  counted_escape(const counted_escape&) { ++live; }
  ~counted_escape() { --live; }
};
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "an exception that escaped a tasklet is destroyed once main has caught it",
                 "[unit][kill]") {
  // weft remembers which tasklet an escaping exception came from (for the message if nobody catches
  // it); it held the exception itself until the next one escaped, and its destructor never ran
  // after main's catch, shutdown() or exit (newcomer round 10).
  counted_escape::live = 0;
  spawn([] { throw counted_escape(); });
  try {
    run();
    FAIL("the exception did not surface in run()");
  } catch (const counted_escape&) {
  }
  CHECK(counted_escape::live == 0);
  fresh_runtime::check_clean();
}
