// Whole programs: SEMANTICS.md §7 (hackysack) and seeded stress programs with conserved invariants.
#include <cstdlib>
#include <random>
#include <variant>

#include "support.hpp"

using namespace weft;
using weft::test::event_log;
using weft::test::fresh_runtime;

namespace {
struct xorshift64 {
  std::uint64_t x = 88172645463325252ULL;
  std::uint64_t operator()() {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  }
};

}  // namespace

TEST_CASE_METHOD(fresh_runtime, "7 hackysack with 5 players: pass sequence and exit order", "[model][program]") {
  constexpr int players = 5;
  constexpr long passes = 5;  // with this generator the ball ends with player 3
  event_log log;
  struct exit_msg {};
  using message = std::variant<long, exit_msg>;
  std::vector<channel<message>> chans(players);
  channel<int> done;
  xorshift64 rng;
  for (int i = 0; i < players; ++i) {
    spawn([&, i] {
      for (;;) {
        message m = chans[i].receive();
        if (std::holds_alternative<exit_msg>(m)) {
          log("p" + std::to_string(i) + "-exit");
          return;
        }
        long nb = std::get<long>(m) + 1;
        if (nb == passes) {
          for (int j = 0; j < players; ++j)
            if (j != i) chans[j].send(exit_msg{});
          log("p" + std::to_string(i) + "-exit");
          done.send(i);
          return;
        }
        int t = static_cast<int>(rng() % players);
        if (t == i) t = (t + 1) % players;
        log(std::to_string(i) + "->" + std::to_string(t));
        chans[t].send(nb);
      }
    });
  }
  chans[0].send(0L);
  int holder = done.receive();
  CHECK(holder == 3);
  CHECK(log.str() == "0->2 2->0 0->2 2->3 p0-exit p1-exit p2-exit p4-exit p3-exit");
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "stress: random transfers between account tasklets conserve money", "[stress][program]") {
  // Main sends payment orders to account tasklets; an account pays out of its balance and hands the
  // money to a courier tasklet that delivers it to the payee's inbox. Random preferences, yields and
  // kills; money is conserved: balances + money in couriers + balances of killed accounts.
  const std::uint64_t seed = weft::test::seed_from_env("account transfers");
  std::mt19937_64 rng(seed);
  constexpr int accounts = 64;
  constexpr long initial = 1000;
  struct order {
    int to;
    long amount;
    bool deposit;
  };
  std::vector<channel<order>> inbox(accounts);
  std::vector<long> balance(accounts, initial);
  long in_flight = 0, lost_to_kills = 0;
  for (auto& c : inbox) {
    c.preference(static_cast<int>(rng() % 3) - 1);
    c.schedule_all(rng() % 8 == 0);
  }
  std::vector<tasklet> tasks;
  for (int i = 0; i < accounts; ++i) {
    std::uint64_t local_seed = rng();
    tasks.push_back(spawn([&, i, local_seed] {
      std::mt19937_64 r(local_seed);
      try {
        for (order o : inbox[i]) {
          if (o.deposit) {
            in_flight -= o.amount;
            balance[i] += o.amount;
            continue;
          }
          long amount = std::min<long>(o.amount, balance[i]);
          balance[i] -= amount;
          in_flight += amount;
          spawn([&inbox, to = o.to, amount] { inbox[to].send({to, amount, true}); });
          if (r() % 4 == 0) schedule();
        }
      } catch (const tasklet_exit&) {
        lost_to_kills += balance[i];
        balance[i] = 0;
        throw;
      }
    }));
  }
  run();
  std::vector<bool> killed(accounts, false);
  long kills = 0;
  for (int step = 0; step < 20000; ++step) {
    int from = static_cast<int>(rng() % accounts);
    int to = static_cast<int>(rng() % accounts);
    if (killed[from] || killed[to] || from == to) continue;
    if (rng() % 1000 == 0) {
      tasks[from].kill();
      killed[from] = true;
      ++kills;
      continue;
    }
    inbox[from].send({to, static_cast<long>(rng() % 50), false});
    if (rng() % 8 == 0) run();
    long total = lost_to_kills + in_flight;
    for (long b : balance) total += b;
    REQUIRE(total == accounts * initial);
  }
  run();
  long total = lost_to_kills + in_flight;
  for (long b : balance) total += b;
  CHECK(total == accounts * initial);
  CHECK(kills > 0);
  check_clean();
}

TEST_CASE_METHOD(fresh_runtime, "stress: pipelines of random length and preference deliver every item once", "[stress][program]") {
  const std::uint64_t seed = weft::test::seed_from_env("pipelines");
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 50; ++round) {
    int stages = 1 + static_cast<int>(rng() % 20);
    int items = static_cast<int>(rng() % 200);
    std::vector<channel<long>> links(stages + 1);
    for (auto& c : links) {
      c.preference(static_cast<int>(rng() % 3) - 1);
      c.schedule_all(rng() % 5 == 0);
    }
    for (int s = 0; s < stages; ++s) {
      spawn([&links, s] {
        for (long v : links[s]) links[s + 1].send(v + 1);
        links[s + 1].close();
      });
    }
    long sum = 0, count = 0;
    spawn([&] {
      for (long v : links[0 + stages]) {
        sum += v;
        ++count;
      }
    });
    spawn([&] {
      for (long i = 0; i < items; ++i) links[0].send(i);
      links[0].close();
    });
    run();
    CHECK(count == items);
    CHECK(sum == static_cast<long>(items) * (items - 1) / 2 + static_cast<long>(items) * stages);
  }
  check_clean();
}
