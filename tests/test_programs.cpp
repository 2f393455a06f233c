// Whole programs: SEMANTICS.md §7 (hackysack) and seeded stress programs with conserved invariants.
#include <cstdlib>
#include <random>
#include <variant>

#include "support.hpp"

using namespace weft;
using weft::test::event_log;
using weft::test::fresh_runtime;

namespace {
// One generator shared by the players: its state is a tvar (DESIGN.md §5), so the draws come in the
// order the players commit, as with one worker, and a segment run again draws nothing twice.
struct xorshift64 {
  tvar<std::uint64_t> x{88172645463325252ULL, "xorshift64"};
  std::uint64_t operator()() {
    return atomically([&] {
      std::uint64_t v = x.get();
      v ^= v << 13;
      v ^= v >> 7;
      v ^= v << 17;
      x.set(v);
      return v;
    });
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
  // kills. Every order and every payment has an identity, so the checks see what a conserved total
  // cannot: an order or a payment lost or delivered twice. At the end:
  //   * each order reached its account exactly once (at most once if the account was killed);
  //   * each payment was delivered exactly once (at most once if the payee was killed), to its payee,
  //     with its amount;
  //   * each account that was never killed holds its initial balance plus the payments delivered to
  //     it minus those it made, both taken from the payment table, not from its own arithmetic;
  //   * balances + balances of killed accounts + payments not delivered = all the money (also checked
  //     along the way).
  const std::uint64_t seed = weft::test::seed_from_env("account transfers");
  std::mt19937_64 rng(seed);
  constexpr int accounts = 64;
  constexpr long initial = 1000;
  struct order {
    std::size_t id;  // orders: index in `orders_seen`; payments: index in `payments`
    int to;
    long amount;
    bool payment;
  };
  struct payment_record {
    int from, to;
    long amount;
    int delivered = 0;
  };
  // What the account tasklets write is in tvars (DESIGN.md §5), in tables made at full size before
  // any tasklet runs (at most one order per step and one payment per order), so that nothing
  // reallocates while tasklets use them. `killed` and `order_to` are main's alone.
  constexpr int steps = 20000;
  std::vector<channel<order>> inbox(accounts);
  std::vector<tvar<long>> balance(accounts);
  for (auto& b : balance) b.set(initial);
  std::vector<tvar<int>> orders_seen(steps);
  std::size_t orders = 0;  // orders_seen[0, orders) are in use
  std::vector<int> order_to;
  std::vector<tvar<payment_record>> payments(steps);
  tvar<std::size_t> payment_count{0};  // payments[0, payment_count) are in use
  std::vector<bool> killed(accounts, false);
  tvar<long> lost_to_kills{0}, bad_payments{0};
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
          if (o.payment) {
            payment_record p = payments.at(o.id).get();
            if (p.to != i || p.amount != o.amount) bad_payments.set(bad_payments.get() + 1);
            ++p.delivered;
            payments.at(o.id).set(p);
            balance[i].set(balance[i].get() + o.amount);
            continue;
          }
          orders_seen.at(o.id).set(orders_seen.at(o.id).get() + 1);
          const long amount = std::min<long>(o.amount, balance[i].get());
          balance[i].set(balance[i].get() - amount);
          const std::size_t id = payment_count.get();
          payments.at(id).set({i, o.to, amount});
          payment_count.set(id + 1);
          spawn([&inbox, id, to = o.to, amount] { inbox[to].send({id, to, amount, true}); });
          if (r() % 4 == 0) schedule();
        }
      } catch (const tasklet_exit&) {
        lost_to_kills.set(lost_to_kills.get() + balance[i].get());
        balance[i].set(0);
        throw;
      }
    }));
  }
  run();
  auto all_money = [&] {  // one transaction: a consistent view even while tasklets are runnable
    return atomically([&] {
      long total = lost_to_kills.get();
      for (const auto& b : balance) total += b.get();
      for (std::size_t id = 0, n = payment_count.get(); id < n; ++id) {
        const payment_record p = payments[id].get();
        if (p.delivered == 0) total += p.amount;
      }
      return total;
    });
  };
  long kills = 0;
  for (int step = 0; step < steps; ++step) {
    int from = static_cast<int>(rng() % accounts);
    int to = static_cast<int>(rng() % accounts);
    if (killed[from] || killed[to] || from == to) continue;
    if (rng() % 1000 == 0) {
      tasks[from].kill();
      killed[from] = true;
      ++kills;
      continue;
    }
    order_to.push_back(from);
    inbox[from].send({orders++, to, static_cast<long>(rng() % 50), false});
    if (rng() % 8 == 0) run();
    if (step % 1000 == 0) REQUIRE(all_money() == accounts * initial);
  }
  run();
  CHECK(all_money() == accounts * initial);
  CHECK(bad_payments.get() == 0);
  long orders_wrong = 0, payments_wrong = 0, balances_wrong = 0;
  for (std::size_t id = 0; id < orders; ++id) {
    const int seen = orders_seen[id].get();
    if (seen > 1 || (seen == 0 && !killed[order_to[id]])) ++orders_wrong;
  }
  std::vector<long> paid_in(accounts, 0), paid_out(accounts, 0);
  const std::size_t payments_made = payment_count.get();
  for (std::size_t id = 0; id < payments_made; ++id) {
    const payment_record p = payments[id].get();
    if (p.delivered > 1 || (p.delivered == 0 && !killed[p.to])) ++payments_wrong;
    paid_out[p.from] += p.amount;
    if (p.delivered == 1) paid_in[p.to] += p.amount;
  }
  for (int i = 0; i < accounts; ++i)
    if (!killed[i] && balance[i].get() != initial + paid_in[i] - paid_out[i]) ++balances_wrong;
  INFO(orders << " orders, " << payments_made << " payments, " << kills << " kills");
  CHECK(orders_wrong == 0);
  CHECK(payments_wrong == 0);
  CHECK(balances_wrong == 0);
  CHECK(payments_made > 10000);
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
    tvar<long> sum{0}, count{0};  // written by the sink tasklet, read by main after run()
    spawn([&] {
      for (long v : links[0 + stages]) {
        sum.set(sum.get() + v);
        count.set(count.get() + 1);
      }
    });
    spawn([&] {
      for (long i = 0; i < items; ++i) links[0].send(i);
      links[0].close();
    });
    run();
    CHECK(count.get() == items);
    CHECK(sum.get() == static_cast<long>(items) * (items - 1) / 2 + static_cast<long>(items) * stages);
  }
  check_clean();
}
