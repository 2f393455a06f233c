// Channel and tasklet handles as the message types of real programs use them (issue 11 §3): a reply
// channel inside the message it answers, operations through const handles, handles as map keys with
// an identity that follows serial order, empty handles, moves.
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>

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
