#include <functional>
#include <fmt/format.h>
// SEMANTICS.md §1: the runnable ring.
#include "support.hpp"

using namespace weft;
using weft::test::event_log;
using weft::test::flags;
using weft::test::fresh_runtime;

TEST_CASE_METHOD(fresh_runtime, "1.1 spawn and insert append at the tail", "[unit][ring]") {
  event_log log;
  spawn([&] { log("A"); });
  spawn([&] { log("B"); });
  spawn([&] { log("C"); });
  CHECK(getruncount() == 4);
  schedule();  // [M A B C]: A, B, C run, then M
  CHECK(log.str() == "A B C");
  CHECK(getruncount() == 1);

  log.clear();
  spawn([&] {
    log("A");
    spawn([&] { log("X"); });  // inside A with [A B]: X goes after B
    log("A-end");
  });
  spawn([&] { log("B"); });
  run();
  CHECK(log.str() == "A A-end B X");

  // insert() into a ring that already holds others: each goes to the tail in the order inserted.
  log.clear();
  tasklet a([&] { log("A"); }), b([&] { log("B"); }), c([&] { log("C"); });
  spawn([&] { log("X"); });
  c.insert();
  a.insert();
  b.insert();  // [M X C A B]
  CHECK(getruncount() == 5);
  schedule();
  CHECK(log.str() == "X C A B");
  log.clear();
  tasklet y([&] { log("Y"); });
  spawn([&] {
    log("P");
    y.insert();  // inside P with [P Q]: Y goes after Q
    log("P-end");
  });
  spawn([&] { log("Q"); });
  run();
  CHECK(log.str() == "P P-end Q Y");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.2 insert of a scheduled or current tasklet does nothing", "[unit][ring]") {
  event_log log;
  tasklet a([&] { log("A"); });
  CHECK(flags(a) == "a--p");
  a.insert();
  CHECK(flags(a) == "a-s-");
  a.insert();  // already scheduled
  CHECK(getruncount() == 2);
  getcurrent().insert();  // current
  CHECK(getruncount() == 2);
  run();
  CHECK(log.str() == "A");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.2 insert of a blocked or dead tasklet is an error", "[unit][ring][errors]") {
  channel<int> ch;
  tasklet b = spawn([&] { ch.receive(); });
  tasklet d = spawn([] {});
  run();
  REQUIRE(b.blocked());
  REQUIRE(!d.alive());
  test::require_throws_message<std::logic_error>([&] { b.insert(); }, "You cannot run a blocked tasklet");
  test::require_throws_message<std::logic_error>([&] { d.insert(); }, "You cannot run an unbound(dead) tasklet");
  test::require_throws_message<std::logic_error>([&] { tasklet().insert(); },
                                                 "You cannot run an unbound(dead) tasklet");
  CHECK(ch.balance() == -1);
  ch.send(1);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.3 remove", "[unit][ring]") {
  event_log log;
  tasklet a = spawn([&] { log("A"); });
  tasklet b = spawn([&] { log("B"); });
  a.remove();
  CHECK(flags(a) == "a--p");
  CHECK(getruncount() == 2);
  a.remove();  // paused: no-op
  CHECK(flags(a) == "a--p");
  run();
  CHECK(log.str() == "B");
  b.remove();  // dead: no-op
  CHECK(!b.alive());
  test::require_throws_message<std::logic_error>([] { getcurrent().remove(); },
                                                 "The current tasklet cannot be removed.");
  channel<int> ch;
  tasklet r = spawn([&] { log("r" + std::to_string(ch.receive())); });
  run();
  test::require_throws_message<std::logic_error>([&] { r.remove(); }, "You cannot remove a blocked tasklet.");
  a.insert();
  ch.send(7);  // pref -1: r runs at once
  run();
  CHECK(log.str() == "B r7 A");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.4 schedule, schedule_remove and run are callables with no arguments", "[unit][ring]") {
  // Stackless: stackless.tasklet(stackless.schedule)(). They take the caller's source location as a
  // defaulted argument (WEFT_CHECK=replay), and still fit where a callable of no arguments goes.
  tasklet a = spawn(weft::schedule);
  tasklet b = spawn(weft::schedule_remove);
  std::function<void()> f = weft::run;
  CHECK(getruncount() == 3);
  f();
  CHECK(!a.alive());
  CHECK(b.paused());
  b.kill();
  tvar<int> got{0};
  tasklet c = spawn([&] { got.set(weft::schedule_remove(7)); });  // the value form
  run();
  CHECK(c.paused());
  c.insert();
  run();
  CHECK(got.get() == 7);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.4 schedule moves the caller behind everyone", "[unit][ring]") {
  event_log log;
  spawn([&] {
    log("A" + std::to_string(getruncount()));
    schedule();
    log("A2");
  });
  spawn([&] { log("B"); });
  spawn([&] { log("C"); });
  schedule();  // [M A B C] -> A runs with [A B C M]
  log("M");
  run();
  CHECK(log.str() == "A4 B C M A2");
  log.clear();
  schedule();  // alone: continues at once
  log("alone");
  CHECK(log.str() == "alone");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.5 schedule_remove pauses the caller until it is inserted again", "[unit][ring]") {
  event_log log;
  tasklet a = spawn([&] {
    log("A1");
    int v = schedule_remove(42);
    log("A-got-" + std::to_string(v));
  });
  spawn([&] { log("B"); });
  run();
  CHECK(log.str() == "A1 B");
  CHECK(flags(a) == "a--p");
  a.insert();
  run();
  CHECK(log.str() == "A1 B A-got-42");

  // Main alone: returns at once and stays scheduled.
  CHECK(schedule_remove(std::string("x")) == "x");
  CHECK(getmain().scheduled());
  CHECK(getruncount() == 1);

  // Main with others runnable: they run, then main resumes by itself.
  log.clear();
  tvar<bool> main_scheduled_in_d{true}, main_paused_in_d{false};  // what D saw, checked by main
  spawn([&] { log("C"); });
  spawn([&] {
    log("D");
    main_scheduled_in_d.set(getmain().scheduled());
    main_paused_in_d.set(getmain().paused());
  });
  CHECK(schedule_remove(5) == 5);
  log("M");
  CHECK(log.str() == "C D M");
  CHECK(!main_scheduled_in_d.get());
  CHECK(main_paused_in_d.get());
  CHECK(getmain().scheduled());
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.6 run returns when nothing is runnable, even with blocked tasklets", "[unit][ring]") {
  event_log log;
  run();  // empty ring: returns at once
  channel<int> ch;
  tasklet main_handle = getmain();
  tvar<std::string> main_flags_in_a{"A did not run"};
  tvar<int> runcount_in_a{-1};
  spawn([&] {
    log("A");
    main_flags_in_a.set(flags(main_handle));
    runcount_in_a.set(getruncount());
    ch.receive();
    log("A-never");
  });
  spawn([&] { log("B"); });
  run();
  CHECK(log.str() == "A B");
  CHECK(main_flags_in_a.get() == "a--p");
  CHECK(runcount_in_a.get() == 2);  // A and B, not main
  CHECK(ch.balance() == -1);
  CHECK(flags(main_handle) == "a-s-");
  CHECK(getruncount() == 1);
  check_clean();  // A is killed at shutdown
}

TEST_CASE_METHOD(fresh_runtime, "1.7 getruncount counts the ring including the current tasklet", "[unit][ring]") {
  CHECK(getruncount() == 1);
  tvar<std::vector<int>> counts;
  spawn([&] { test::append(counts, getruncount()); });
  spawn([&] { test::append(counts, getruncount()); });
  CHECK(getruncount() == 3);
  run();
  CHECK(counts.get() == std::vector<int>{2, 1});
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.8 t.run() rotates the ring to t, the caller keeps its place", "[unit][ring]") {
  event_log log;
  std::vector<tasklet> ts;
  for (const char* n : {"A", "B", "C", "D"}) ts.push_back(spawn([&log, n] { log(n); }));
  ts[2].run();  // [M A B C D] -> C D M A B
  log("M");
  schedule();
  CHECK(log.str() == "C D M A B");

  log.clear();
  tasklet p([&] { log("P"); });  // paused: appended first, then rotated to
  spawn([&] { log("Q"); });
  p.run();
  log("M");
  run();
  CHECK(log.str() == "P M Q");
  getcurrent().run();  // no effect
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.9 switch_to: the caller leaves the ring", "[unit][ring]") {
  event_log log;
  tasklet main_handle = getmain();
  tvar<std::string> main_flags_in_b{"B did not run"};
  spawn([&] { log("A"); });
  tasklet b = spawn([&] {
    log("B");
    main_flags_in_b.set(flags(main_handle));
  });
  spawn([&] { log("C"); });
  b.switch_to();  // [M A B C] -> [B C A], M paused, resumes when the ring is empty
  log("M");
  CHECK(log.str() == "B C A M");
  CHECK(main_flags_in_b.get() == "a--p");
  CHECK(flags(main_handle) == "a-s-");

  // A paused non-main tasklet stays paused until inserted.
  log.clear();
  tasklet x;
  tasklet y([&] { log("Y"); });
  x = spawn([&] {
    log("X1");
    y.switch_to();
    log("X2");
  });
  run();
  CHECK(log.str() == "X1 Y");
  CHECK(flags(x) == "a--p");
  x.insert();
  run();
  CHECK(log.str() == "X1 Y X2");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.10 a finished tasklet is dead and its successor runs", "[unit][ring]") {
  event_log log;
  tasklet a = spawn([&] { log("A"); });
  spawn([&] { log("B"); });
  run();
  CHECK(log.str() == "A B");
  CHECK(flags(a) == "----");
  CHECK(!a.is_current());
  CHECK(flags(tasklet()) == "----");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "main tasklet identity and names", "[unit][ring]") {
  tasklet m = getmain();
  CHECK(m.is_main());
  CHECK(m.is_current());
  CHECK(m == getcurrent());
  CHECK(m.name() == "main");
  tasklet t([] {});
  CHECK(!t.is_main());
  CHECK(t.name().rfind("tasklet-", 0) == 0);
  t.set_name("worker");
  CHECK(t.name() == "worker");
  CHECK(!(t == m));
  CHECK(tasklet().name().empty());
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.6 run() from any tasklet: the calls nest, the innermost returns first",
                 "[unit][ring]") {
  // Issue 11 §1, as observed on Stackless 3.7.5.
  event_log log;
  spawn([&] {
    log("W1-start");
    schedule();
    log("W1-end");
  });
  spawn([&] {
    log(fmt::format("R-calls-run-runcount-{}", getruncount()));
    weft::run();
    log(fmt::format("R-run-returned-main-paused-{}-runcount-{}", getmain().paused() ? 1 : 0, getruncount()));
  });
  spawn([&] {
    log("W2-start");
    schedule();
    log("W2-end");
  });
  run();
  log(fmt::format("M-run-returned-runcount-{}", getruncount()));
  CHECK(log.str() == "W1-start R-calls-run-runcount-3 W2-start W1-end W2-end R-run-returned-main-paused-1-runcount-1 "
                     "M-run-returned-runcount-1");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.6 an exception escaping a tasklet goes to the innermost waiting run()",
                 "[unit][ring][errors]") {
  event_log log;
  spawn([&] {
    spawn([] { throw std::runtime_error("inner boom"); });
    try {
      weft::run();
      log("no exception");
    } catch (const std::runtime_error& e) {
      log(std::string("R caught ") + e.what());
    }
  });
  run();  // main's run() sees nothing
  log("main's run returned");
  CHECK(log.str() == "R caught inner boom main's run returned");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.6 a run() ended by someone else ends the run() calls nested in it", "[unit][ring]") {
  // Observed on Stackless 3.7.5 (round 9): a tasklet waiting in run() that someone inserts or
  // raises into returns from run() when it next runs, and then every run() called after its own
  // that still waits ends too: those tasklets go back to the ring, innermost first, and their run()
  // returns when they run. weft left them paused for ever.
  event_log log;
  auto runner = [&](std::string name) {
    return [&log, name] {
      log(name + "-run");
      weft::run();
      log(fmt::format("{}-returned-rc{}", name, getruncount()));
    };
  };
  tasklet r1 = spawn(runner("R1"));
  tasklet r2 = spawn(runner("R2"));
  spawn([&] {
    getmain().insert();  // main's run() ends: R1's and R2's, nested in it, end with it
    log(fmt::format("I-end-rc{}", getruncount()));
  });
  run();
  log(fmt::format("M-returned-rc{}", getruncount()));
  CHECK(r1.scheduled());
  CHECK(r2.scheduled());
  run();
  CHECK(log.str() == "R1-run R2-run I-end-rc2 M-returned-rc3 R2-returned-rc2 R1-returned-rc1");
  CHECK_FALSE(r1.alive());
  CHECK_FALSE(r2.alive());
  log.clear();

  // A tasklet inserts R1, whose run() has R2's nested in it.
  r1 = spawn(runner("R1"));
  r2 = spawn(runner("R2"));
  spawn([&] {
    r1.insert();
    log(fmt::format("J-end-rc{}", getruncount()));
  });
  run();
  CHECK(log.str() == "R1-run R2-run J-end-rc2 R1-returned-rc2 R2-returned-rc1");
  log.clear();

  // Main raised into while R waits in a run() nested in main's.
  struct stop {};
  tasklet r = spawn(runner("R"));
  spawn([&] { getmain().raise_exception(std::make_exception_ptr(stop{})); });
  try {
    run();
  } catch (const stop&) {
    log(fmt::format("M-caught-rc{}-R-scheduled-{}", getruncount(), r.scheduled()));
  }
  run();
  CHECK(log.str() == "R-run M-caught-rc3-R-scheduled-true R-returned-rc1");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "1.6 a tasklet in run() while main never waits stays paused until someone runs it",
                 "[unit][ring]") {
  event_log log;
  tasklet r = spawn([&] {
    log("R-run");
    weft::run();
    log("R-returned");
  });
  tasklet w = spawn([&] { log("W"); });
  for (int i = 0; i < 3; ++i) schedule();  // main keeps the ring non-empty: R's run() cannot return
  CHECK(r.paused());
  log("main-runs-R");
  r.run();
  CHECK(!r.alive());
  CHECK(log.str() == "R-run W main-runs-R R-returned");
  check_clean();
}
