// SEMANTICS.md §4: deadlock.
#include "support.hpp"

using namespace weft;
using weft::test::event_log;
using weft::test::fresh_runtime;

namespace {
const std::string deadlock_msg = "Deadlock: the last runnable tasklet cannot be blocked.";
}

TEST_CASE_METHOD(fresh_runtime, "4.1 main alone blocking: deadlock at once, balance unchanged", "[unit][deadlock]") {
  channel<int> ch;
  test::require_throws_message<deadlock_error>([&] { ch.receive(); }, deadlock_msg);
  CHECK(ch.balance() == 0);
  test::require_throws_message<deadlock_error>([&] { ch.send(1); }, deadlock_msg);
  CHECK(ch.balance() == 0);
  CHECK(getruncount() == 1);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "4.1 the last tasklet blocking while main is blocked on a channel", "[unit][deadlock]") {
  event_log log;
  channel<int> main_ch, other;
  tvar<int> balance_in_t{-1};
  // Caught: the tasklet goes on; here it then feeds main.
  spawn([&] {
    try {
      other.receive();
    } catch (const deadlock_error& e) {
      log(std::string("T-caught:") + e.what());
    }
    balance_in_t.set(other.balance());
    main_ch.send(7);
  });
  CHECK(main_ch.receive() == 7);
  CHECK(log.str() == "T-caught:" + deadlock_msg);
  CHECK(balance_in_t.get() == 0);  // thrown before it was queued

  // Uncaught: it dies and main's channel operation throws the same error.
  spawn([&] { other.receive(); });
  test::require_throws_message<deadlock_error>([&] { main_ch.receive(); }, deadlock_msg);
  CHECK(main_ch.balance() == 0);
  CHECK(other.balance() == 0);

  // The same for schedule_remove().
  spawn([&] { schedule_remove(); });
  test::require_throws_message<deadlock_error>([&] { main_ch.send(1); }, deadlock_msg);
  CHECK(main_ch.balance() == 0);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "4.1 no error while main waits in run() or is paused by switch_to", "[unit][deadlock]") {
  channel<int> ch;
  tasklet t = spawn([&] { ch.receive(); });
  CHECK_NOTHROW(run());
  CHECK(t.blocked());

  tasklet u([&] { ch.receive(); });
  CHECK_NOTHROW(u.switch_to());  // main paused; u blocks; main resumes
  CHECK(u.blocked());
  CHECK(ch.balance() == -2);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "4.1 no error while a tasklet waits in a nested run(): its run() returns",
                 "[unit][deadlock]") {
  // Observed on Stackless 3.7.5 (round 9): the last runnable tasklet blocking or calling
  // schedule_remove() while another waits in its own run() (§1.6) makes that run() return, whether
  // the one left is main or another tasklet, and whether main is blocked, paused or running.
  event_log log;
  channel<int> ch, other;
  // Main blocked on ch; B blocks alone on `other`: R's run() returns, R feeds main.
  spawn([&] {
    log("R-run");
    run();
    log(fmt::format("R-returned-rc{}", getruncount()));
    ch.send(1);
  });
  tasklet b = spawn([&] {
    try {
      other.receive();
      log("B-got");
    } catch (const deadlock_error&) {
      log("B-deadlock");
    }
  });
  CHECK(ch.receive() == 1);
  CHECK(log.str() == "R-run R-returned-rc1");
  CHECK(b.blocked());
  CHECK(other.balance() == -1);
  log.clear();

  // B calls schedule_remove() alone while main is blocked: the same.
  spawn([&] {
    run();
    log("R2-returned");
    ch.send(2);
  });
  tasklet b2 = spawn([&] {
    schedule_remove();
    log("B2-back");
  });
  CHECK(ch.receive() == 2);
  CHECK(log.str() == "R2-returned");
  CHECK(b2.paused());
  log.clear();

  // Main alone (R waits in run(), X paused main and main came back): main's receive blocks and R's
  // run() returns; then main alone in schedule_remove() with a runner waiting leaves the ring too.
  spawn([&] {
    run();
    log(fmt::format("R3-returned-rc{}", getruncount()));
    ch.send(3);
    run();
    log(fmt::format("R3-returned-again-main-paused-{}", getmain().paused()));
    getmain().insert();
  });
  spawn([&] { getmain().switch_to(); });
  schedule();  // R3 waits in run(); X switches back to main: main is the only runnable tasklet
  CHECK(getruncount() == 1);
  CHECK(ch.receive() == 3);
  schedule();  // R3 runs to its second run()
  schedule_remove();
  CHECK(log.str() == "R3-returned-rc1 R3-returned-again-main-paused-true");
  b.kill();
  b2.kill();
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "4.2 main blocked and the ring empties because the others die or pause", "[unit][deadlock]") {
  channel<int> ch;
  spawn([] {});
  test::require_throws_message<deadlock_error>([&] { ch.receive(); },
                                               "the main tasklet is receiving without a sender available.");
  CHECK(ch.balance() == 0);
  spawn([] {});
  test::require_throws_message<deadlock_error>([&] { ch.send(3); },
                                               "the main tasklet is sending without a receiver available.");
  CHECK(ch.balance() == 0);
  // Pausing: the last tasklet switches to a paused one that dies.
  tasklet p([] {});
  spawn([&] { p.switch_to(); });
  test::require_throws_message<deadlock_error>([&] { ch.receive(); },
                                               "the main tasklet is receiving without a sender available.");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "4.3 main calling schedule_remove alone is no error", "[unit][deadlock]") {
  CHECK_NOTHROW(schedule_remove());
  CHECK(getmain().scheduled());
  check_clean();
}
