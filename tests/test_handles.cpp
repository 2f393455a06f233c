// Channel and tasklet handles as the message types of real programs use them (issue 11 §3): a reply
// channel inside the message it answers, operations through const handles, handles as map keys with
// an identity that follows serial order, empty handles, moves.
#include <atomic>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>
#include <weft/detail/epoch.hpp>

#include "support.hpp"

using namespace weft;
using weft::test::event_log;
using weft::test::fresh_runtime;

namespace {

// The reply-channel idiom: channel<request> is declared while request is incomplete.
struct request {
  weft::channel<request> reply;  // default: a new channel per request, as Stackless' channel()
  int body = 0;
};

// A field that is "no channel" until set (Stackless' None) costs no allocation.
struct optional_reply {
  weft::channel<optional_reply> reply = nullptr;
  int body = 0;
};

std::string key(const weft::channel_id& k) { return fmt::format("{}.{}", k.creator, k.serial); }

}  // namespace

TEST_CASE_METHOD(fresh_runtime, "a message may carry a reply channel of its own type", "[unit][channel][handles]") {
  channel<request> server;
  event_log log;
  spawn([&] {
    for (int i = 0; i < 3; ++i) {
      request r = server.receive();
      r.reply.send(request{nullptr, r.body * 10});  // the answer carries no channel of its own
    }
  });
  for (int i = 1; i <= 3; ++i) {
    request r;
    r.body = i;
    channel<request> reply = r.reply;
    server.send(std::move(r));
    const request answer = reply.receive();
    CHECK(!answer.reply);
    log(std::to_string(answer.body));
  }
  run();
  CHECK(log.str() == "10 20 30");
  optional_reply none;
  CHECK(none.reply == nullptr);
  CHECK_THROWS_WITH(none.reply.send(optional_reply{}), Catch::Matchers::Contains("empty channel handle"));
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "channel operations work through a const handle", "[unit][channel][handles]") {
  channel<int> ch;
  const channel<int>& c = ch;
  event_log log;
  spawn([&c] {
    c.send(1);
    c.send_exception(std::runtime_error("two"));
    c.close();  // the receiver already waits in its range-for: close() does not wake it
    int three = 3;
    CHECK(c.try_send(three) == channel<int>::status::ok);  // a waiting receiver takes it
  });
  spawn([&c, &log] {
    log(std::to_string(c.receive()));
    try {
      c.receive();
    } catch (const std::runtime_error& e) {
      log(e.what());
    }
    for (int v : c) log(std::to_string(v));  // range-for over a const handle
    log(c.closed() ? "closed" : "open");
  });
  run();
  CHECK(log.str() == "1 two 3 closed");
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a channel lives while a handle or a tasklet waiting in it holds it, or one it woke until that waits elsewhere or ends",
                 "[unit][channel][handles]") {
  // A hand-off leaves the woken tasklet its reference to the channel (no reference count change
  // per wait for a tasklet that waits in one channel again and again): the reference must still go
  // when it waits in another channel, ends, is killed, or (main) at shutdown.
  const std::size_t base = resources().channels;
  event_log log;
  auto* c1 = new channel<int>;
  channel<int> c2;
  spawn([&log, &c1, &c2] {
    log("got " + std::to_string(c1->receive()));  // through main's handle only
    weft::schedule();                              // main drops that handle meanwhile
    log("got " + std::to_string(c2.receive()));    // waits elsewhere: c1 goes
  });
  weft::schedule();  // it waits in c1
  c1->send(1);       // the receiver runs at once (preference -1), logs, and yields back
  delete c1;
  c1 = nullptr;
  log("c1 kept by its receiver: " + std::to_string(resources().channels - base));
  weft::schedule();  // it now waits in c2
  log("after the wait in c2: " + std::to_string(resources().channels - base));
  c2.send(2);
  run();
  log("both ended: " + std::to_string(resources().channels - base));  // c2: main's handle

  // Woken, then it ends or is killed while runnable: the channel goes with it.
  auto* c3 = new channel<int>;
  auto* c4 = new channel<int>;
  spawn([&c3] { c3->receive(); weft::schedule(); weft::schedule(); });
  tasklet victim = spawn([&c4] { c4->receive(); weft::schedule(); weft::schedule(); });
  weft::schedule();  // both wait
  c3->send(3);
  c4->send(4);
  delete c3;
  delete c4;
  log("c3 and c4 kept: " + std::to_string(resources().channels - base));
  victim.kill();
  run();
  log("after the end and the kill: " + std::to_string(resources().channels - base));

  // Main woken by a hand-off keeps the channel until shutdown.
  {
    channel<int> c5;
    spawn([c5] { c5.send(5); });  // its handle is the only other one; it ends after the send
    log("main got " + std::to_string(c5.receive()));
  }
  run();
  log("c5 kept by main: " + std::to_string(resources().channels - base));
  CHECK(log.str() ==
        "got 1 c1 kept by its receiver: 1 after the wait in c2: 1 got 2 both ended: 1 c3 and c4 kept: 3 "
        "after the end and the kill: 1 main got 5 c5 kept by main: 2");
  CHECK(weft::shutdown().channels == 1);  // c2: this test's handle
}

TEST_CASE_METHOD(fresh_runtime, "empty and moved-from channel handles", "[unit][channel][handles]") {
  channel<int> none = nullptr;
  CHECK(!none);
  CHECK(none == nullptr);
  channel<int> copy = none;
  CHECK(copy == none);
  CHECK_THROWS_WITH(none.receive(), Catch::Matchers::Contains("empty channel handle"));
  CHECK_THROWS_AS(none.balance(), std::logic_error);
  CHECK_THROWS_AS(none.id(), std::logic_error);
  channel<int> a;
  channel<int> b = std::move(a);
  CHECK(!a);
  CHECK(b);
  a = b;  // a refers to b's channel again
  CHECK(a == b);
  channel<int> c;
  c = std::move(b);
  CHECK(!b);
  CHECK(c == a);
  spawn([c] { c.send(5); });
  CHECK(a.receive() == 5);
  run();
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "a channel id prints as the id of the tasklet that made it and its count of channels",
                 "[unit][channel][handles]") {
  // Newcomer round 18: channel_id's fields were named only in a detail header, and it had no
  // formatter.
  event_log log;
  tasklet maker = spawn([&log] {
    channel<int> first, second;
    log(fmt::format("{} {}", first.id(), second.id()));
  });
  run();
  const std::string t = std::to_string(maker.id());
  CHECK(log.str() == t + ".1 " + t + ".2");
  channel<int> made_by_main;
  const channel_id id = made_by_main.id();
  CHECK(fmt::format("{}", id) == fmt::format("{}.{}", id.creator, id.serial));
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "channels and tasklets are map keys, ordered by an identity that follows serial order",
                 "[unit][channel][handles]") {
  // Main (id 0) makes three channels: 0.1, 0.2, 0.3 (counting on from main's earlier channels).
  channel<int> first, second, third;
  const auto base = first.id().serial;
  CHECK(first.id().creator == 0);
  CHECK(second.id().serial == base + 1);
  CHECK(third.id().serial == base + 2);
  std::map<channel<int>, std::string> by_channel{{third, "third"}, {first, "first"}, {second, "second"}};
  std::string order;
  for (const auto& [ch, name] : by_channel) order += name + " ";
  CHECK(order == "first second third ");
  std::unordered_map<channel<int>, int> table{{first, 1}, {second, 2}};
  CHECK(table.at(second) == 2);
  CHECK(table.count(third) == 0);

  // Tasklets make channels in segments (rolled back and re-run under injection): the identities
  // are the serial ones.
  event_log log;
  std::vector<tasklet> made;
  for (int i = 0; i < 4; ++i)
    made.push_back(spawn([&log] {
      channel<int> x;
      schedule();
      channel<int> y, z;
      log(fmt::format("{} {} {}", key(x.id()), key(y.id()), key(z.id())));
    }));
  std::set<tasklet> ordered(made.rbegin(), made.rend());
  std::unordered_set<tasklet> hashed(made.begin(), made.end());
  CHECK(hashed.size() == 4);
  CHECK(hashed.count(made[2]) == 1);
  std::uint64_t previous = 0;
  for (const tasklet& t : ordered) {
    CHECK(t.id() > previous);
    previous = t.id();
  }
  CHECK(*ordered.begin() == made.front());
  run();
  std::string expected;
  for (const tasklet& t : made) {
    if (!expected.empty()) expected += ' ';
    expected += fmt::format("{0}.1 {0}.2 {0}.3", t.id());
  }
  CHECK(log.str() == expected);
  CHECK(getcurrent().id() == 0);
  CHECK_THROWS_AS(tasklet().id(), std::logic_error);
  CHECK(tasklet() < made.front());
  fresh_runtime::check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "tasklet operations work through a const handle", "[unit][handles]") {
  // A tasklet handle is shared like a channel: a lambda that captures one by value needs no `mutable`
  // (a newcomer's port did not compile without it).
  event_log log;
  const tasklet victim = spawn([&log] {
    try {
      for (;;) schedule();
    } catch (const tasklet_exit&) {
      log("victim killed");
      throw;
    }
  });
  spawn([victim, &log] {
    victim.set_name("v");
    log(victim.name());
    victim.remove();
    victim.insert();
    victim.kill();
    log("killer done");
  });
  run();
  CHECK(log.str() == "v victim killed killer done");
  CHECK_FALSE(victim.alive());
}

namespace {

// Counts its destructions; `live` is false once destroyed (a second destruction would find it so).
struct counted_message {
  static inline std::atomic<int> destroyed{0};
  static inline std::atomic<int> destroyed_twice{0};
  explicit counted_message(int v, std::string t = {}) : value(v), text(std::move(t)) {}
  counted_message(const counted_message&) = delete;
  ~counted_message() {
    if (!live) ++destroyed_twice;
    live = false;
    ++destroyed;
  }
  int value;
  std::string text;
  bool live = true;
};

}  // namespace

TEST_CASE("weft::shared counts its handles and destroys its object once", "[unit][handles]") {
  counted_message::destroyed = 0;
  {
    shared<counted_message> empty;
    CHECK(!empty);
    CHECK(empty == nullptr);
    CHECK(empty.get() == nullptr);
    CHECK(empty.use_count() == 0);
    shared<counted_message> a = shared<counted_message>::make(7, "seven");
    CHECK(a->value == 7);
    CHECK((*a).text == "seven");
    CHECK(a.use_count() == 1);
    shared<counted_message> b = a;
    CHECK(a == b);
    CHECK(a.use_count() == 2);
    shared<const counted_message> c = b;  // read-only, same object
    CHECK(c.get() == a.get());
    CHECK(a.use_count() == 3);
    shared<counted_message> d = std::move(b);
    CHECK(!b);
    CHECK(a.use_count() == 3);
    b = shared<counted_message>::make(8);
    CHECK(b != a);
    b = a;  // the 8 goes
    CHECK(counted_message::destroyed == 1);
    a.reset();
    d.reset();
    b.reset();
    CHECK(counted_message::destroyed == 1);  // c still holds the 7
    CHECK(c.use_count() == 1);
    CHECK(c->text == "seven");
  }
  CHECK(counted_message::destroyed == 2);
}

TEST_CASE_METHOD(fresh_runtime, "tasklets share weft::shared messages: each object is destroyed once, after its last handle",
                 "[unit][handles]") {
  // Through the mode matrix: at two workers with abort injection, copies and drops made in segments
  // that are rolled back are undone, and an object's destructor runs once, when the segment that
  // dropped its last handle commits (a std::shared_ptr's counts would be changed for good by every
  // attempt: objects destroyed while held, twice, or never).
  counted_message::destroyed = 0;
  counted_message::destroyed_twice = 0;
  constexpr int messages = 40, consumers = 3;
  event_log log;
  tvar<shared<const counted_message>> latest;  // the newest message, read by the consumers
  std::vector<channel<shared<const counted_message>>> inbox(consumers);
  for (int k = 0; k < consumers; ++k) {
    spawn([&, k] {
      int sum = 0;
      for (int i = 0; i < messages; ++i) {
        shared<const counted_message> m = inbox[static_cast<std::size_t>(k)].receive();
        shared<const counted_message> copy = m;  // copies and drops within the segment
        shared<const counted_message> seen = latest.get();
        sum += copy->value + (seen ? seen->value : 0);
        if (i % 10 == 9) schedule();  // a switch point with handles held across it
        m.reset();
      }
      log(fmt::format("c{}={}", k, sum));
    });
  }
  spawn([&] {
    for (int i = 0; i < messages; ++i) {
      shared<counted_message> m = shared<counted_message>::make(i, std::string(40, 'x'));  // heap text too
      latest.set(m);
      for (auto& c : inbox) c.send(m);  // each consumer gets a handle; ours goes at the end of the loop
    }
    latest.set(nullptr);
  });
  run();
  CHECK(log.str() == "c0=1560 c1=1560 c2=1560");
  fresh_runtime::check_clean();
  // The box `latest` held the last message in is freed by the epoch GC once no reader can hold it,
  // by the thread that retired it (a worker's, orphaned when the shutdown ends the worker threads).
  for (int i = 0; i < 1000 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  CHECK(counted_message::destroyed == messages);
  CHECK(counted_message::destroyed_twice == 0);
}

TEST_CASE_METHOD(fresh_runtime, "an on_abort hook holding a weft::shared made in its block is dropped safely with a rolled-back segment",
                 "[unit][handles]") {
  // The hook holds the only other handle to an object its own attempt made. When the segment is
  // rolled back (conflicts over x at two workers, or injection) the hook is dropped before the
  // attempt's memory is freed: dropped after it, its release wrote into the freed block (heap
  // corruption at two workers, a newcomer's program; ASan: use after free in abort_segment).
  counted_message::destroyed = 0;
  counted_message::destroyed_twice = 0;
  constexpr int tasklets = 6, rounds = 200;
  tvar<long> x{0};
  for (int t = 0; t < tasklets; ++t)
    spawn([&] {
      for (int r = 0; r < rounds; ++r) {
        atomically([&] {
          x.set(x.get() + 1);  // every block writes it: the segments conflict
          auto n = shared<counted_message>::make(r);
          on_abort([n] {});
        });
        if (r % 4 == 0) schedule();
      }
    });
  run();
  CHECK(x.get() == tasklets * rounds);
  fresh_runtime::check_clean();
  // One object per committed block, destroyed once (its last handle, the hook's, goes at the commit:
  // a committed block's on_abort hooks are dropped); those of rolled-back attempts never existed.
  CHECK(counted_message::destroyed == tasklets * rounds);
  CHECK(counted_message::destroyed_twice == 0);
}

TEST_CASE_METHOD(fresh_runtime, "weft::shared objects in tvar values a run replaced are all destroyed by shutdown",
                 "[unit][handles]") {
  // The old values a worker thread retired and could not free yet go to the GC's orphan list when
  // the thread ends, inside shutdown(): they are collected after it (a newcomer's program lost
  // 1-7 of 2400 destructions at 2 workers).
  counted_message::destroyed = 0;
  counted_message::destroyed_twice = 0;
  constexpr int tasklets = 8, sets = 300;
  std::deque<tvar<shared<counted_message>>> last(tasklets);
  for (int t = 0; t < tasklets; ++t)
    spawn([&, t] {
      for (int i = 0; i < sets; ++i) {
        last[static_cast<std::size_t>(t)].set(shared<counted_message>::make(i));
        if (i % 7 == 0) schedule();
      }
    });
  run();
  for (auto& l : last) l.set(nullptr);
  weft::shutdown();
  CHECK(counted_message::destroyed == tasklets * sets);
  CHECK(counted_message::destroyed_twice == 0);
}
