// SEMANTICS.md §2: channels.
#include <list>
#include <memory>

#include "support.hpp"

using namespace weft;
using weft::test::event_log;
using weft::test::flags;
using weft::test::fresh_runtime;

TEST_CASE_METHOD(fresh_runtime, "2.1 a tasklet without partner blocks, balance counts waiters", "[unit][channel]") {
  channel<int> ch;
  CHECK(ch.balance() == 0);
  CHECK(ch.preference() == -1);
  CHECK(!ch.schedule_all());
  tasklet r1 = spawn([&] { ch.receive(); });
  tasklet r2 = spawn([&] { ch.receive(); });
  run();
  CHECK(ch.balance() == -2);
  CHECK(flags(r1) == "abs-");  // blocked tasklets stay "scheduled", as in Stackless
  CHECK(getruncount() == 1);
  ch.send(1);
  CHECK(ch.balance() == -1);
  ch.send(2);
  CHECK(ch.balance() == 0);
  tasklet s1 = spawn([&] { ch.send(3); });
  tasklet s2 = spawn([&] { ch.send(4); });
  run();
  CHECK(ch.balance() == 2);
  CHECK(ch.receive() == 3);  // FIFO
  CHECK(ch.balance() == 1);
  CHECK(ch.receive() == 4);
  CHECK(ch.balance() == 0);
  run();
  check_clean();
}

namespace {
// Caller C = main with ring [M O1 O2] and partner P blocked on `ch`; returns the order of events.
std::string partner_order(int direction, int pref, bool schedule_all) {
  event_log log;
  channel<int> ch;
  ch.preference(pref);
  ch.schedule_all(schedule_all);
  if (direction > 0) {
    spawn([&] { log("P-got-" + std::to_string(ch.receive())); });
  } else {
    spawn([&] {
      ch.send(1);
      log("P-sent");
    });
  }
  run();  // P blocks
  REQUIRE(ch.balance() == -direction);
  spawn([&] { log("O1"); });
  spawn([&] { log("O2"); });
  if (direction > 0) {
    ch.send(1);
    log("M-send-returned");
  } else {
    log("M-got-" + std::to_string(ch.receive()));
  }
  CHECK(ch.balance() == 0);
  run();
  return log.str();
}
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "2.2 a waiting partner: placement by preference and schedule_all", "[unit][channel]") {
  // send (direction +1)
  CHECK(partner_order(+1, -1, false) == "P-got-1 O1 O2 M-send-returned");  // pref == -direction: P runs now
  CHECK(partner_order(+1, 0, false) == "M-send-returned O1 O2 P-got-1");   // P to the tail, C continues
  CHECK(partner_order(+1, 1, false) == "M-send-returned O1 O2 P-got-1");
  for (int pref : {-1, 0, 1})
    CHECK(partner_order(+1, pref, true) == "O1 O2 P-got-1 M-send-returned");  // P to the tail, C yields
  // receive (direction -1)
  CHECK(partner_order(-1, 1, false) == "P-sent O1 O2 M-got-1");
  CHECK(partner_order(-1, 0, false) == "M-got-1 O1 O2 P-sent");
  CHECK(partner_order(-1, -1, false) == "M-got-1 O1 O2 P-sent");
  for (int pref : {-1, 0, 1}) CHECK(partner_order(-1, pref, true) == "O1 O2 P-sent M-got-1");
  check_clean();
}

namespace {
std::string ping_pong(int pref, bool receiver_first) {
  event_log log;
  channel<int> ch;
  ch.preference(pref);
  auto receiver = [&] {
    for (int i = 0; i < 3; ++i) log("r" + std::to_string(ch.receive()));
    log("r-done");
  };
  auto sender = [&] {
    for (int i = 0; i < 3; ++i) {
      log("s" + std::to_string(i));
      ch.send(i);
    }
    log("s-done");
  };
  if (receiver_first) {
    spawn(receiver);
    spawn(sender);
  } else {
    spawn(sender);
    spawn(receiver);
  }
  run();
  return log.str();
}
}  // namespace

TEST_CASE_METHOD(fresh_runtime, "2.3 ping-pong of 3 values, every preference and spawn order", "[unit][channel]") {
  CHECK(ping_pong(-1, true) == "s0 r0 s1 r1 s2 r2 r-done s-done");
  CHECK(ping_pong(-1, false) == "s0 r0 s1 r1 s2 r2 r-done s-done");
  CHECK(ping_pong(0, true) == "s0 s1 r0 r1 s2 s-done r2 r-done");
  CHECK(ping_pong(0, false) == "s0 r0 s1 s2 r1 r2 r-done s-done");
  CHECK(ping_pong(1, true) == "s0 s1 r0 s2 r1 s-done r2 r-done");
  CHECK(ping_pong(1, false) == "s0 s1 r0 s2 r1 s-done r2 r-done");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "2.4 send_sequence sends each item and returns the count", "[unit][channel]") {
  channel<std::string> ch;
  tvar<std::vector<std::string>> got;
  spawn([&] {
    for (int i = 0; i < 3; ++i) test::append(got, ch.receive());
  });
  std::vector<std::string> items{"a", "b", "c"};
  CHECK(ch.send_sequence(items) == 3);
  CHECK(got.get() == items);
  CHECK(items[0] == "a");  // lvalue ranges are copied, not moved from
  run();
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "2.5 send_exception: the receiver's receive throws it", "[unit][channel]") {
  event_log log;
  channel<int> ch;
  spawn([&] {
    try {
      ch.receive();
      log("no");
    } catch (const std::runtime_error& e) {
      log(std::string("caught-") + e.what());
    }
  });
  spawn([&] { log("O1"); });
  run();  // R blocks, O1 runs
  spawn([&] { log("O2"); });
  ch.send_exception(std::runtime_error("boom"));  // pref -1: the receiver runs at once, like a send
  log("M");
  run();
  CHECK(log.str() == "O1 caught-boom O2 M");  // P O1 O2 C, as for a send (2.2)

  // A blocked send_exception delivered to a later receiver.
  log.clear();
  spawn([&] { ch.send_exception(std::out_of_range("late")); });
  run();
  CHECK(ch.balance() == 1);
  test::require_throws_message<std::out_of_range>([&] { ch.receive(); }, "late");
  CHECK(ch.balance() == 0);
  run();
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "2.6 close: would-block operations fail and change nothing", "[unit][channel]") {
  channel<int> ch;
  tasklet r = spawn([&] { ch.receive(); });
  run();
  ch.close();
  CHECK(ch.closing());
  CHECK(!ch.closed());  // a receiver still waits
  CHECK(r.blocked());   // close does not wake it
  ch.send(1);           // with a partner waiting, operations complete
  CHECK(ch.closed());
  const std::string closed_msg = "Send/receive operation on a closed channel";
  test::require_throws_message<channel_closed>([&] { ch.send(2); }, closed_msg);
  test::require_throws_message<channel_closed>([&] { ch.receive(); }, closed_msg);
  test::require_throws_message<channel_closed>([&] { ch.send_exception(std::runtime_error("x")); }, closed_msg);
  std::vector<int> items{1, 2};
  test::require_throws_message<channel_closed>([&] { ch.send_sequence(items); }, closed_msg);
  CHECK(ch.balance() == 0);
  CHECK(getruncount() == 1);
  // From a tasklet too: it does not block.
  tvar<std::string> what;
  spawn([&] {
    try {
      ch.receive();
    } catch (const channel_closed& e) {
      what.set(e.what());
    }
  });
  run();
  CHECK(what.get() == closed_msg);
  ch.open();
  CHECK(!ch.closing());
  CHECK(!ch.closed());
  spawn([&] { ch.send(5); });
  CHECK(ch.receive() == 5);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "2.7 iteration receives until closing and a receive would block", "[unit][channel]") {
  channel<int> ch;
  ch.preference(1);  // the producer keeps running after a send, so it closes while main is not blocked
  std::vector<int> got;
  spawn([&] {
    for (int i = 0; i < 4; ++i) ch.send(i);
    ch.close();
  });
  for (int v : ch) got.push_back(v);
  CHECK(got == std::vector<int>{0, 1, 2, 3});
  CHECK(ch.closed());

  // With preference -1 the consumer is already blocked again when the producer closes: as in
  // Stackless, it is not woken, and main blocked alone gets the deadlock error.
  channel<int> eager;
  spawn([&] {
    eager.send(1);
    eager.close();
  });
  got.clear();
  test::require_throws_message<deadlock_error>([&] {
    for (int v : eager) got.push_back(v);
  }, "the main tasklet is receiving without a sender available.");
  CHECK(got == std::vector<int>{1});

  // Senders still waiting when close() is called are drained by the loop.
  channel<int> ch2;
  for (int i = 0; i < 3; ++i) spawn([&ch2, i] { ch2.send(i); });
  run();
  CHECK(ch2.balance() == 3);
  ch2.close();
  got.clear();
  for (int v : ch2) got.push_back(v);
  CHECK(got == std::vector<int>{0, 1, 2});

  // A consumer already blocked when close() is called is not woken.
  channel<int> ch3;
  tvar<bool> ended{false};
  tasklet consumer = spawn([&] {
    for (int v : ch3) (void)v;
    ended.set(true);
  });
  run();
  ch3.close();
  run();
  CHECK(consumer.blocked());
  CHECK(!ended.get());
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "try_send and try_receive never block", "[unit][channel]") {
  channel<int> ch;
  int v = 1;
  CHECK(ch.try_send(v) == channel<int>::status::would_block);
  int out = 0;
  CHECK(ch.try_receive(out) == channel<int>::status::would_block);
  CHECK(ch.balance() == 0);
  spawn([&] { ch.send(9); });
  run();
  CHECK(ch.try_receive(out) == channel<int>::status::ok);
  CHECK(out == 9);
  tvar<int> got{0};
  spawn([&] { got.set(ch.receive()); });
  run();
  v = 11;
  CHECK(ch.try_send(v) == channel<int>::status::ok);  // pref -1: the receiver ran at once
  CHECK(got.get() == 11);
  ch.close();
  CHECK(ch.try_send(v) == channel<int>::status::closed);
  CHECK(ch.try_receive(out) == channel<int>::status::closed);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "preference outside -1..1 is rejected", "[unit][channel][errors]") {
  channel<int> ch;
  CHECK_THROWS_AS(ch.preference(2), std::invalid_argument);
  CHECK_THROWS_AS(ch.preference(-5), std::invalid_argument);
  CHECK(ch.preference() == -1);
  ch.preference(1);
  CHECK(ch.preference() == 1);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "channels carry move-only and large values, handles share one channel", "[unit][channel]") {
  channel<std::unique_ptr<std::string>> ch;
  auto copy = ch;
  CHECK(copy == ch);
  spawn([copy]() mutable { copy.send(std::make_unique<std::string>("moved")); });
  auto p = ch.receive();
  REQUIRE(p);
  CHECK(*p == "moved");
  channel<std::list<int>> big;
  spawn([&] { big.send(std::list<int>(1000, 7)); });
  CHECK(big.receive().size() == 1000);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a channel outlives its handles while tasklets wait on it", "[unit][channel]") {
  tasklet waiter;
  {
    channel<int> ch;
    waiter = spawn([ch]() mutable { ch.receive(); });
    run();
  }
  CHECK(waiter.blocked());
  check_clean();  // the waiter is killed and unwinds out of receive()
}

TEST_CASE_METHOD(fresh_runtime, "send_exception while main is in run() does not surface in run()", "[unit][channel]") {
  channel<int> ch;
  spawn([&] { ch.send_exception(std::runtime_error("parked")); });
  CHECK_NOTHROW(run());
  CHECK(ch.balance() == 1);
  CHECK_THROWS_AS(ch.receive(), std::runtime_error);
  check_clean();
}
