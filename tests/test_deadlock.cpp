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
