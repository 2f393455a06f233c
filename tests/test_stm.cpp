// stm/: tvar, atomically, retry/or_else, hooks, inevitability, allocation, conflict records.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <weft/detail/alloc_log.hpp>
#include <weft/detail/epoch.hpp>
#include <weft/stm.hpp>
#include <weft/weft.hpp>

#include <malloc.h>

#include "support.hpp"

using namespace weft;
using weft::test::my_counters;
using weft::test::fresh_runtime;
using weft::test::require_throws_message;
using weft::test::solo_on;

namespace {

// Waits (yielding) until pred() holds; false after `limit` (a guard against a hang, never a way to
// order events: tests wait for the event itself).
template <class P>
bool wait_until(P pred, std::chrono::seconds limit = std::chrono::seconds(120)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

std::uint64_t conflict_aborts(const stm_counters& c) { return c.aborts() - c.aborts_exception; }

// Runs `body` on a helper thread when `go` is raised, and raises `done` after.
struct helper_thread {
  std::atomic<bool> go{false}, done{false}, quit{false};
  std::thread th;
  template <class F>
  explicit helper_thread(F body)
      : th([this, body] {
          while (!quit.load()) {
            if (go.exchange(false)) {
              body();
              done.store(true);
            }
            std::this_thread::yield();
          }
        }) {}
  void run_and_wait() {
    done.store(false);
    go.store(true);
    while (!done.load()) std::this_thread::yield();
  }
  ~helper_thread() {
    quit.store(true);
    th.join();
  }
};
}  // namespace

TEST_CASE("tvar reads and writes outside and inside transactions", "[unit][stm]") {
  tvar<int> x{1, "x"};
  tvar<std::string> s{"boxed"};
  tvar<double> d{2.5};
  CHECK(x.get() == 1);
  CHECK(s.get() == "boxed");
  x.set(2);
  s.set(std::string(100, 'a'));
  CHECK(x.get() == 2);
  CHECK(s.get().size() == 100);
  CHECK(std::string(x.name()) == "x");
  int r = atomically([&] {
    x.set(x.get() + 40);
    s.modify([](std::string& v) { v += "b"; });
    CHECK(x.get() == 42);  // read-after-write
    d.set(d.get() * 2);
    return x.get();
  });
  CHECK(r == 42);
  CHECK(x.get() == 42);
  CHECK(s.get().size() == 101);
  CHECK(d.get() == 5.0);
  atomically([&] {
    for (int i = 0; i < 100; ++i) s.set(std::to_string(i));  // boxes replaced before commit are freed
  });
  CHECK(s.get() == "99");
}

TEST_CASE("tvar::view reads the value in place, outside and inside transactions and in tasklets", "[unit][stm]") {
  weft::tvar<std::vector<int>> big(std::vector<int>(1000, 7));
  weft::tvar<int> small(5);
  // Outside a transaction: the published value itself (no copy), what get() returns.
  const std::vector<int>* seen = nullptr;
  CHECK(big.view([&](const std::vector<int>& v) {
    seen = &v;
    return v.size();
  }) == 1000);
  CHECK(big.view([&](const std::vector<int>& v) { return &v; }) == seen);
  CHECK(small.view([](int v) { return v * 2; }) == 10);
  // Inside: the transaction's own write is what it sees; after commit, everyone sees it.
  const long sum = weft::atomically([&] {
    big.set(std::vector<int>(10, 3));
    return big.view([](const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0L); });
  });
  CHECK(sum == 30);
  CHECK(big.view([](const std::vector<int>& v) { return v.size(); }) == 10);
  // In tasklets (ordered mode in the mode matrix: segments read it like get()).
  weft::channel<long> out;
  for (int i = 0; i < 4; ++i)
    weft::spawn([&, i] {
      weft::atomically([&] { big.modify([&](std::vector<int>& v) { v.push_back(i); }); });
      out.send(big.view([](const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0L); }));
    });
  CHECK(out.receive() == 30);
  CHECK(out.receive() == 31);
  CHECK(out.receive() == 33);
  CHECK(out.receive() == 36);
  weft::run();
}

namespace {
struct alignas(64) cache_line_value {
  int v[20] = {};
};
bool aligned_64(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }
}  // namespace

TEST_CASE("a tvar of an over-aligned type keeps its value aligned", "[unit][stm]") {
  // Newcomer round 24: boxes came from malloc (16-byte aligned), and 80 of 100 views of an
  // alignas(64) value were misaligned. Each set makes a new box.
  weft::tvar<cache_line_value> t{cache_line_value{}};
  int misaligned = 0;
  for (int i = 0; i < 50; ++i) {
    cache_line_value next;
    next.v[0] = i;
    if (i % 2) {
      t.set(next);
    } else {
      weft::atomically([&] {
        t.set(next);
        t.view([&](const cache_line_value& x) { misaligned += !aligned_64(&x); });  // the write's own copy
      });
    }
    t.view([&](const cache_line_value& x) {
      misaligned += !aligned_64(&x);
      CHECK(x.v[0] == i);
    });
  }
  CHECK(misaligned == 0);
}

TEST_CASE("many writes in one transaction use the indexed write log", "[unit][stm]") {
  std::vector<std::unique_ptr<tvar<long>>> vars;
  for (int i = 0; i < 300; ++i) vars.push_back(std::make_unique<tvar<long>>(i));
  atomically([&] {
    for (int round = 0; round < 3; ++round)
      for (auto& v : vars) v->set(v->get() + 1);
  });
  long sum = 0;
  for (auto& v : vars) sum += v->get();
  CHECK(sum == 300 * 299 / 2 + 900);
}

TEST_CASE("the write log finds what a transaction wrote after a big rolled-back scope", "[unit][stm]") {
  // A scope of 9+ writes (past the log's linear part) rolled back leaves a short log: writes after it
  // must still be found by reads in the same transaction (they were not: the reads saw the committed
  // value, and the commit lost the earlier writes).
  std::vector<std::unique_ptr<tvar<long>>> vars;
  for (int i = 0; i < 12; ++i) vars.push_back(std::make_unique<tvar<long>>(0));
  for (const bool by_exception : {false, true}) {
    INFO((by_exception ? "an exception leaves a nested atomically" : "or_else's first branch retries"));
    for (auto& v : vars) v->set(0);
    atomically([&] {
      auto big = [&] {
        for (auto& v : vars) v->set(v->get() - 5);
      };
      if (by_exception) {
        try {
          atomically([&] { big(), throw std::runtime_error("undo"); });
        } catch (const std::runtime_error&) {
        }
      } else {
        or_else([&] { big(), retry(); }, [] {});
      }
      for (int round = 0; round < 3; ++round)
        for (int i = 0; i < 10; ++i) vars[i]->set(vars[i]->get() + 1);
    });
    for (int i = 0; i < 12; ++i) CHECK(vars[i]->get() == (i < 10 ? 3 : 0));
  }
}

TEST_CASE("a nested atomically that returns joins the enclosing transaction", "[unit][stm]") {
  tvar<int> x{0};
  atomically([&] {
    x.set(1);
    atomically([&] {
      CHECK(x.get() == 1);
      x.set(2);
    });
    CHECK(x.get() == 2);
  });
  CHECK(x.get() == 2);
  // An exception that leaves both aborts the whole.
  CHECK_THROWS_AS(atomically([&] {
                    x.set(3);
                    atomically([&] { throw std::runtime_error("inner"); });
                  }),
                  std::runtime_error);
  CHECK(x.get() == 2);
}

TEST_CASE("an exception aborts the transaction: nothing it wrote is visible", "[unit][stm]") {
  tvar<int> x{5};
  tvar<std::string> s{"keep"};
  auto before = my_counters();
  bool aborted = false, committed = false;
  CHECK_THROWS_WITH(atomically([&] {
                      x.set(6);
                      s.set("lost");
                      on_abort([&] { aborted = true; });
                      on_commit([&] { committed = true; });
                      throw std::runtime_error("stop");
                    }),
                    "stop");
  CHECK(x.get() == 5);
  CHECK(s.get() == "keep");
  CHECK(aborted);
  CHECK(!committed);
  CHECK(my_counters().aborts_exception == before.aborts_exception + 1);
}

TEST_CASE("on_commit hooks run after commit, in order, and outside a transaction at once", "[unit][stm]") {
  std::vector<int> order;
  tvar<int> x{0};
  atomically([&] {
    on_commit([&] { order.push_back(1); });
    x.set(1);
    on_commit([&] {
      order.push_back(2);
      CHECK(x.get() == 1);  // visible, and hooks may run transactions
      atomically([&] { x.set(2); });
    });
    CHECK(order.empty());
  });
  CHECK(order == std::vector<int>{1, 2});
  CHECK(x.get() == 2);
  on_commit([&] { order.push_back(3); });
  CHECK(order.back() == 3);
  on_abort([&] { order.push_back(4); });  // ignored outside
  CHECK(order.back() == 3);
}

TEST_CASE("on_abort runs for each conflicting attempt, on_commit once", "[unit][stm]") {
  tvar<int> x{0}, y{0};
  helper_thread writer([&] { x.set(x.get() + 100); });
  int attempts = 0, aborts = 0, commits = 0;
  atomically([&] {
    ++attempts;
    on_abort([&] { ++aborts; });
    on_commit([&] { ++commits; });
    int v = x.get();
    if (attempts == 1) writer.run_and_wait();  // x changes under us: this attempt must fail
    y.set(v + 1);
  });
  CHECK(attempts == 2);
  CHECK(aborts == 1);
  CHECK(commits == 1);
  CHECK(y.get() == 101);
}

TEST_CASE("an on_abort hook may use what its attempt allocated", "[unit][stm]") {
  // The hook runs, and is destroyed, before the rolled-back attempt's allocations are freed: a hook
  // holding a std::shared_ptr made in its attempt read the freed object and released into it (ASan:
  // heap use after free in rollback_after_conflict).
  tvar<int> x{0}, y{0};
  helper_thread writer([&] { x.set(x.get() + 1); });
  int attempts = 0;
  std::string seen;
  atomically([&] {
    ++attempts;
    auto note = std::make_shared<std::string>(fmt::format("attempt {} of a block that rolled back", attempts));
    on_abort([note, &seen] { seen += *note; });
    int v = x.get();
    if (attempts == 1) writer.run_and_wait();  // x changes under us: this attempt must fail
    y.set(v + 1);
  });
  CHECK(attempts == 2);
  CHECK(seen == "attempt 1 of a block that rolled back");
  CHECK(y.get() == 2);
}

TEST_CASE_METHOD(fresh_runtime, "on_abort hooks of an undone nested block may use what the block allocated",
                 "[unit][stm]") {
  // An or_else branch that retries and a nested atomically that an exception leaves: their hooks run
  // before the block's memory is freed (run after, a hook holding a std::shared_ptr made in the
  // block read the freed object and released into it), inside the enclosing transaction (their tvar
  // writes are its). In main's transactions and in tasklets' segments (rolled back and run again in
  // the ordered modes of the matrix).
  tvar<long> hooked{0}, blocks{0};
  auto block = [&](long round) {
    atomically([&] {
      blocks.set(blocks.get() + 1);
      // Never runs (main's transactions do not conflict; a tasklet's block that ends is never undone
      // by its segment's rollback): dropped with the attempt, before its memory is freed.
      auto kept = std::make_shared<std::string>(fmt::format("block of round {}", round));
      on_abort([kept, &hooked] { hooked.set(hooked.get() + 1000000 + static_cast<long>(kept->size())); });
      or_else(
          [&] {
            auto note = std::make_shared<std::string>(fmt::format("or_else branch of round {} undone", round));
            on_abort([note, &hooked] { hooked.set(hooked.get() + static_cast<long>(note->size())); });
            retry();
          },
          [] {});
      try {
        atomically([&] {
          auto note = std::make_shared<std::string>(fmt::format("nested block of round {} undone", round));
          on_abort([note, &hooked] { hooked.set(hooked.get() + static_cast<long>(note->size())); });
          throw std::runtime_error("undo");
        });
      } catch (const std::runtime_error&) {
      }
    });
  };
  auto expected = [](long round) {
    return static_cast<long>(fmt::format("or_else branch of round {} undone", round).size() +
                             fmt::format("nested block of round {} undone", round).size());
  };
  block(0);
  CHECK(hooked.get() == expected(0));
  long want = expected(0);
  constexpr int tasklets = 4, rounds = 50;
  for (int t = 0; t < tasklets; ++t)
    spawn([&, t] {
      for (int r = 1; r <= rounds; ++r) {
        block(t * 1000 + r);
        if (r % 3 == 0) schedule();
      }
    });
  for (int t = 0; t < tasklets; ++t)
    for (int r = 1; r <= rounds; ++r) want += expected(t * 1000 + r);
  run();
  CHECK(blocks.get() == 1 + tasklets * rounds);
  CHECK(hooked.get() == want);
  fresh_runtime::check_clean();
}

TEST_CASE("an exception from an on_abort hook leaves atomically, the attempt undone", "[unit][stm]") {
  // From the hooks of an or_else branch that retried, of a nested block an exception left, and of a
  // rolled-back attempt: the exception propagates from atomically, nothing the attempt did stays
  // (LSan: what the attempt and the hooks allocated is freed).
  tvar<int> x{0};
  for (const int where : {0, 1}) {
    INFO((where == 0 ? "or_else branch" : "nested block"));
    require_throws_message<std::runtime_error>(
        [&] {
          atomically([&] {
            x.set(1);
            auto undo = [&] {
              auto note = std::make_shared<std::string>("the hook of an undone block throws");
              on_abort([note] { throw std::runtime_error(*note); });
            };
            if (where == 0) {
              or_else([&] { undo(), retry(); }, [] {});
            } else {
              try {
                atomically([&] { undo(), throw std::logic_error("undo"); });
              } catch (const std::logic_error&) {
              }
            }
            x.set(2);
          });
        },
        "the hook of an undone block throws");
    CHECK(x.get() == 0);
  }
  helper_thread writer([&] { x.set(x.get() + 1); });
  int attempts = 0;
  require_throws_message<std::runtime_error>(
      [&] {
        atomically([&] {
          ++attempts;
          auto note = std::make_shared<std::string>("the hook of a rolled-back attempt throws");
          on_abort([note] { throw std::runtime_error(*note); });
          const int v = x.get();
          if (attempts == 1) writer.run_and_wait();  // x changes under us: this attempt fails
          x.set(v + 10);
        });
      },
      "the hook of a rolled-back attempt throws");
  CHECK(attempts == 1);
  CHECK(x.get() == 1);
}

TEST_CASE("retry blocks until something read changes", "[unit][stm]") {
  tvar<int> ready{0};
  tvar<int> value{0};
  std::atomic<bool> started{false};
  int seen = 0;
  std::thread waiter([&] {
    seen = atomically([&] {
      started.store(true);
      if (ready.get() == 0) retry();
      return value.get();
    });
  });
  while (!started.load()) std::this_thread::yield();
  atomically([&] {
    value.set(7);
    ready.set(1);
  });
  waiter.join();
  CHECK(seen == 7);
  CHECK(stats().total.retries >= 1);
  CHECK_THROWS_AS(retry(), std::logic_error);  // outside a transaction
  CHECK_THROWS_WITH(atomically([] { retry(); }),
                    "weft::retry(): the transaction read no tvar, so nothing could ever wake it");
}

TEST_CASE("or_else runs the second branch when the first retries, undoing the first", "[unit][stm]") {
  tvar<int> x{0}, y{1}, z{0};
  std::vector<std::string> hooks;
  int r = atomically([&] {
    y.set(10);  // before the scope: must survive
    return or_else(
        [&] {
          y.set(20);  // overwritten inside the scope: must be undone
          z.set(5);   // first written inside the scope: must go
          on_abort([&] { hooks.push_back("first-aborted"); });
          on_commit([&] { hooks.push_back("first-committed"); });
          if (x.get() == 0) retry();
          return 1;
        },
        [&] {
          on_commit([&] { hooks.push_back("second-committed"); });
          return 2;
        });
  });
  CHECK(r == 2);
  CHECK(y.get() == 10);
  CHECK(z.get() == 0);
  CHECK(hooks == std::vector<std::string>{"first-aborted", "second-committed"});
  // First branch succeeds: second not run.
  x.set(1);
  CHECK(or_else([&] { return x.get() == 1 ? 11 : (retry(), 0); }, [] { return 22; }) == 11);
  // Both retry: the whole transaction retries; nested or_else composes.
  tvar<std::string> s{"a"};
  std::string got = atomically([&] {
    return or_else([&]() -> std::string { retry(); },
                   [&]() -> std::string {
                     return or_else([&]() -> std::string {
                       s.set("b");
                       retry();
                     }, [&] { return s.get(); });
                   });
  });
  CHECK(got == "a");
  CHECK(s.get() == "a");
}

TEST_CASE("read-only transactions take no locks and commit as read-only", "[unit][stm]") {
  tvar<int> a{1}, b{2};
  auto before = my_counters();
  long sum = 0;
  for (int i = 0; i < 1000; ++i) sum += atomically([&] { return a.get() + b.get(); });
  auto after = my_counters();
  CHECK(sum == 3000);
  CHECK(after.locks_acquired == before.locks_acquired);
  CHECK(after.read_only_commits == before.read_only_commits + 1000);
  atomically([&] { a.set(5); });
  // Alone, a writing transaction runs solo (no lock); otherwise it locks what it writes.
  CHECK(my_counters().locks_acquired == after.locks_acquired + (solo_on() ? 0 : 1));
  CHECK(my_counters().solo == after.solo + (solo_on() ? 1 : 0));
  {
    std::atomic<bool> registered{false}, release{false};
    std::thread other([&] {
      atomically([&] { b.get(); });  // this thread now uses the STM too: nobody runs solo
      registered = true;
      while (!release) std::this_thread::yield();
    });
    while (!registered) std::this_thread::yield();
    auto before_write = my_counters();
    atomically([&] { a.set(6); });
    CHECK(my_counters().locks_acquired == before_write.locks_acquired + 1);
    CHECK(my_counters().solo == before_write.solo);
    release = true;
    other.join();
  }
  CHECK(a.get() == 6);
}

TEST_CASE("solo mode: a thread alone commits without locks, a second thread ends it, its exit restores it",
          "[unit][stm]") {
  tvar<long> x{0, "x"};
  auto c0 = my_counters();
  for (int i = 0; i < 100; ++i) atomically([&] { x.set(x.get() + 1); });
  auto c1 = my_counters();
  CHECK(c1.solo - c0.solo == (solo_on() ? 100u : 0u));
  CHECK(c1.locks_acquired - c0.locks_acquired == (solo_on() ? 0u : 100u));

  std::atomic<int> phase{0};
  stm_counters theirs;
  std::thread other([&] {
    atomically([&] { x.set(x.get() + 1000); });
    phase = 1;
    while (phase != 2) std::this_thread::yield();
    theirs = my_counters();
  });
  while (phase != 1) std::this_thread::yield();
  auto c2 = my_counters();
  atomically([&] { x.set(x.get() + 1); });
  auto c3 = my_counters();
  CHECK(c3.solo == c2.solo);  // two threads: the locked path
  CHECK(c3.locks_acquired == c2.locks_acquired + 1);
  phase = 2;
  other.join();
  CHECK(theirs.solo == 0);
  CHECK(theirs.commits == 1);

  atomically([&] { x.set(x.get() + 1); });  // alone again
  CHECK(my_counters().solo == c3.solo + (solo_on() ? 1 : 0));
  CHECK(x.get() == 1102);
}

TEST_CASE("solo mode: a direct write from another thread ends it", "[unit][stm]") {
  tvar<int> x{0};
  atomically([&] { x.set(1); });
  std::atomic<int> phase{0};
  std::thread writer([&] {
    x.set(2);  // outside a transaction: a one-write transaction of this thread
    phase = 1;
    while (phase != 2) std::this_thread::yield();
  });
  while (phase != 1) std::this_thread::yield();
  auto before = my_counters();
  atomically([&] { x.set(x.get() + 1); });
  CHECK(my_counters().solo == before.solo);
  phase = 2;
  writer.join();
  CHECK(x.get() == 3);
}

TEST_CASE("solo mode: retry() waits for another thread's write", "[unit][stm]") {
  // The producer commits only once main waits in retry() (the observer's tx_retry_wait event), so the
  // wait itself is tested, whatever the scheduling.
  static std::atomic<int> waits{0};
  waits = 0;
  set_observer([](const event& e, void*) {
    if (e.kind == event_kind::tx_retry_wait) waits.fetch_add(1);
  });
  tvar<bool> ready{false};
  tvar<int> value{0};
  bool waited = false;
  std::thread producer([&] {
    waited = wait_until([] { return waits.load() > 0; });
    atomically([&] {
      value.set(42);
      ready.set(true);
    });
  });
  const auto before = my_counters();
  int attempts = 0;
  const int got = atomically([&] {
    ++attempts;
    if (!ready.get()) retry();  // the first attempt may run solo: it is re-run normally, then waits
    return value.get();
  });
  producer.join();
  set_observer(nullptr);
  CHECK(waited);
  CHECK(got == 42);
  CHECK(waits.load() == 1);
  CHECK(attempts == (solo_on() ? 3 : 2));  // (solo: re-run to record reads,) wait, then succeed
  CHECK(my_counters().retries == before.retries + (solo_on() ? 2 : 1));
}

TEST_CASE("an exception from an on_commit callback propagates after the commit", "[unit][stm]") {
  tvar<int> x{0};
  const auto before = my_counters();
  CHECK_THROWS_WITH(atomically([&] {
                      x.set(1);
                      on_commit([] { throw std::runtime_error("from the hook"); });
                    }),
                    "from the hook");
  CHECK(x.get() == 1);  // committed
  const auto after = my_counters();
  CHECK(after.commits == before.commits + 1);
  CHECK(after.aborts_exception == before.aborts_exception);
  CHECK(detail::epoch_self().depth == 0);  // entered and left exactly once
  atomically([&] { x.set(x.get() + 1); });  // the descriptor is fine
  CHECK(x.get() == 2);
}

TEST_CASE("or_else: memory deleted in a branch that retries stays alive", "[unit][stm]") {
  tvar<std::vector<int>*> holder{nullptr};
  int seen = 0;
  atomically([&] {
    auto* v = new std::vector<int>(100, 7);  // allocated in this attempt, before the scope
    holder.set(v);
    seen = or_else([&]() -> int {
      delete holder.get();  // must not be freed: this branch is rolled back
      holder.set(nullptr);
      retry();
    }, [&] { return holder.get()->at(99); });  // ASan: no use after free
  });
  CHECK(seen == 7);
  REQUIRE(holder.get() != nullptr);
  CHECK(holder.get()->size() == 100u);
  // Deleted in a branch that commits: freed once (ASan: no leak, no double free).
  atomically([&] {
    auto* w = new std::vector<int>(3, 1);
    or_else([&] {
      delete w;
      delete holder.get();
      holder.set(nullptr);
    }, [] {});
  });
  CHECK(holder.get() == nullptr);
  // Deleted inside a branch, then an exception ends the attempt: freed, not leaked.
  CHECK_THROWS_AS(atomically([&] {
                    auto* u = new std::vector<int>(5, 2);
                    or_else([&] {
                      delete u;
                      throw std::runtime_error("out");
                    }, [] {});
                  }),
                  std::runtime_error);
  for (int i = 0; i < 50; ++i) detail::epoch_collect();
}

TEST_CASE("solo mode: or_else, exceptions and become_inevitable behave as with many threads", "[unit][stm]") {
  tvar<int> a{1}, b{2};
  int got = atomically([&] {
    a.set(10);
    return or_else([&]() -> int {
      b.set(20);
      retry();
    }, [&] { return a.get() + b.get(); });
  });
  CHECK(got == 12);
  CHECK(a.get() == 10);
  CHECK(b.get() == 2);
  CHECK_THROWS_AS(atomically([&] {
                    a.set(99);
                    throw std::runtime_error("boom");
                  }),
                  std::runtime_error);
  CHECK(a.get() == 10);
  const auto before = my_counters();
  atomically([&] {
    become_inevitable("test");
    a.set(a.get() + 1);
  });
  CHECK(a.get() == 11);
  CHECK(my_counters().inevitable == before.inevitable + 1);
  CHECK_THROWS_WITH(atomically([] { configure_stm({}); }),
                    "weft::configure_stm() called inside a transaction");
}

TEST_CASE("become_inevitable goes on where it is called and a thread that starts using the STM waits for it",
          "[unit][stm]") {
  // Alone in the STM (solo mode), the attempt used to start over on the multi-thread path: the code
  // before the call ran twice, a nested block's on_abort hook too. Now solo mode stays ours until
  // the transaction ends: a thread that starts using the STM meanwhile waits (and so is serialised
  // after it); what the attempt read stays current. With solo mode off (WEFT_STM_SOLO=0) the same
  // holds through reservations.
  tvar<long> x{0, "x"}, y{0, "y"};
  std::atomic<bool> go{false};
  long seen_by_other = -1;
  std::thread other([&] {  // made outside the transaction (a std::thread allocates)
    while (!go) std::this_thread::yield();
    atomically([&] {
      seen_by_other = y.get();
      x.set(x.get() + 10);
    });
  });
  int attempts = 0, hooks = 0;
  bool stable = true;
  const auto before = my_counters();
  atomically([&] {
    ++attempts;
    const long first = x.get();
    try {
      atomically([&] {
        on_abort([&] { ++hooks; });
        throw std::runtime_error("inner");
      });
    } catch (const std::runtime_error&) {
    }
    become_inevitable("test");
    go = true;  // the other thread now registers and tries to commit
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    stable = stable && x.get() == first;
    y.set(1);
  });
  other.join();
  CHECK(attempts == 1);
  CHECK(hooks == 1);
  CHECK(stable);
  CHECK(seen_by_other == 1);  // after the inevitable transaction, in the serial order
  CHECK(x.get() == 10);
  CHECK(my_counters().inevitable == before.inevitable + 1);
  // Both threads go on afterwards, solo mode handed back once the other has gone.
  atomically([&] { x.set(x.get() + 1); });
  CHECK(x.get() == 11);
}

TEST_CASE("solo mode: readers outside transactions see whole values while a thread runs solo", "[stress][stm]") {
  // A boxed tvar replaced by solo commits: readers on other threads (which never start a
  // transaction, so solo mode stays on) must always get a whole vector, never freed memory.
  tvar<std::vector<int>> v{std::vector<int>(1, 1)};
  std::atomic<bool> stop{false};
  std::atomic<long> bad{0}, reads{0};
  auto reader = [&] {
    while (!stop) {
      std::vector<int> got = v.get();
      for (int e : got)
        if (e != static_cast<int>(got.size())) bad.fetch_add(1);
      reads.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::thread r1(reader), r2(reader);
  while (reads.load() == 0) std::this_thread::yield();
  const auto before = my_counters();
  unsigned commits = 0;
  for (int i = 0; i < 20000 || reads.load() < 2000; ++i, ++commits)  // overlap many reads
    atomically([&] {
      const int n = 1 + (i % 64);
      v.set(std::vector<int>(static_cast<std::size_t>(n), n));
    });
  stop = true;
  r1.join();
  r2.join();
  CHECK(bad.load() == 0);
  CHECK(my_counters().solo - before.solo == (solo_on() ? commits : 0u));
}

TEST_CASE("solo mode: money is conserved while threads come and go", "[stress][stm]") {
  const std::uint64_t seed = weft::test::seed_from_env("stm solo handover");
  constexpr int accounts = 256;
  std::vector<std::unique_ptr<tvar<long>>> bank;
  for (int i = 0; i < accounts; ++i) bank.push_back(std::make_unique<tvar<long>>(1000));
  auto transfers = [&](std::uint64_t s, int n) {
    std::mt19937_64 rng(s);
    long bad_sums = 0;
    for (int i = 0; i < n; ++i) {
      const int from = static_cast<int>(rng() % accounts), to = static_cast<int>(rng() % accounts);
      const long amount = static_cast<long>(rng() % 100);
      if (rng() % 50 == 0) {
        const long total = atomically([&] {
          long t = 0;
          for (auto& a : bank) t += a->get();
          return t;
        });
        if (total != 1000L * accounts) ++bad_sums;
        continue;
      }
      atomically([&] {
        bank[from]->set(bank[from]->get() - amount);
        bank[to]->set(bank[to]->get() + amount);
      });
    }
    return bad_sums;
  };
  // Main keeps transferring (solo whenever it is alone) while helpers start and stop around it, so
  // solo mode is revoked and restored many times in the middle of main's stream of transactions.
  std::atomic<bool> stop{false};
  std::atomic<long> bad{0};
  std::atomic<long> helpers_during_main{0};
  std::atomic<bool> main_running{false};
  std::thread churn([&] {
    for (std::uint64_t k = 0; !stop; ++k) {
      std::thread helper([&, k] { bad += transfers(seed + 1 + k, 300); });
      helper.join();
      if (main_running && !stop) helpers_during_main.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));  // pacing: main alone between helpers
    }
  });
  const auto before = my_counters();
  main_running = true;
  bad += transfers(seed, 200000);
  // Solo, 200,000 transfers can end before the churn thread's first helper does (under ctest -j2 it
  // did, in 0.04 s): go on in small batches until helpers have come and gone, for at most 30 s.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (std::uint64_t k = 1; helpers_during_main.load() < 2 && std::chrono::steady_clock::now() < deadline; ++k)
    bad += transfers(seed + (k << 32), 1000);
  stop = true;
  churn.join();
  CHECK(helpers_during_main.load() > 0);  // helpers did come and go while main transferred
  long total = 0;
  for (auto& a : bank) total += a->get();
  CHECK(total == 1000L * accounts);
  CHECK(bad.load() == 0);
  if (solo_on()) CHECK(my_counters().solo > before.solo);  // main ran alone at times
}

TEST_CASE("opacity: a transaction never sees x + y != 0, even when doomed", "[stress][stm]") {
  // Every 100th reader transaction is doomed on purpose: between its read of x and its read of y the
  // writer commits (the reader waits for that commit), so the y it meets is newer than its x. Opacity
  // means the read of y aborts the attempt instead of returning; the test checks the sum never breaks
  // and that the doomed attempts did happen and abort.
  const std::uint64_t seed = weft::test::seed_from_env("opacity");
  tvar<long> x{0, "x"}, y{0, "y"};
  std::atomic<bool> stop{false};
  std::atomic<long> violations{0}, writer_commits{0};
  std::thread writer([&] {
    std::mt19937_64 rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      long d = static_cast<long>(rng() % 1000) - 500;
      atomically([&] {
        x.set(x.get() + d);
        y.set(y.get() - d);
      });
      writer_commits.fetch_add(1);
    }
  });
  REQUIRE(wait_until([&] { return writer_commits.load() > 0; }));  // both threads use the STM now
  const auto before = my_counters();
  constexpr int transactions = 100000, doomed_every = 100;
  int doomed = 0, stuck = 0;
  for (int i = 0; i < transactions; ++i) {
    int attempts = 0;
    atomically([&] {
      ++attempts;
      long a = x.get();
      if (attempts == 1 && i % doomed_every == 0) {
        // Two commits after c: the second surely commits after our read of x (see the bank test).
        const long c = writer_commits.load();
        if (!wait_until([&] { return writer_commits.load() > c + 1; })) ++stuck;
      } else {
        for (int k = 0; k < 20; ++k) asm volatile("" ::: "memory");  // widen the window
      }
      long b = y.get();
      if (a + b != 0) violations.fetch_add(1);
    });
    if (i % doomed_every == 0 && attempts > 1) ++doomed;
  }
  stop.store(true);
  writer.join();
  const auto after = my_counters();
  CHECK(stuck == 0);
  CHECK(violations.load() == 0);
  CHECK(x.get() + y.get() == 0);
  CHECK(doomed == transactions / doomed_every);  // every forced overlap aborted its attempt
  CHECK(conflict_aborts(after) - conflict_aborts(before) >= static_cast<std::uint64_t>(doomed));
}

TEST_CASE("bank: random transfers on two threads conserve money", "[stress][stm]") {
  // Two threads move money at random. Each thread adds up what its committed transfers moved in and
  // out of every account (after atomically() returns, so once per commit); at the end each account
  // must hold its initial balance plus both ledgers: a transfer applied twice, dropped or half
  // applied shows in the account it touched. Read-only audits must always see all the money.
  // Thread 0 also forces overlaps: every 500th transfer out of account 0 waits, between its read and
  // its commit, for thread 1 to commit a transfer touching account 0, so it must abort and re-run.
  const std::uint64_t seed = weft::test::seed_from_env("stm bank");
  for (int accounts : {64, 4096}) {
    std::vector<std::unique_ptr<tvar<long>>> bank;
    for (int i = 0; i < accounts; ++i) bank.push_back(std::make_unique<tvar<long>>(1000));
    std::vector<long> ledger[2] = {std::vector<long>(accounts, 0), std::vector<long>(accounts, 0)};
    std::atomic<long> bad_sums{0}, hot_commits{0}, stuck{0};
    std::atomic<bool> forcer_done{false};
    long forced = 0, forced_aborted = 0;
    stm_counters counters_of_0[2];
    auto transfer = [&](int self, int from, int to, long amount, bool force) {
      int attempts = 0;
      atomically([&] {
        ++attempts;
        const long f = bank[from]->get();
        if (force && attempts == 1) {
          // Two commits after c: the first may have committed before our read (and counted after
          // it); the second began after the first was counted, so it changes account 0 after our read.
          const long c = hot_commits.load();
          if (!wait_until([&] { return hot_commits.load() > c + 1; })) stuck.fetch_add(1);
        }
        bank[from]->set(f - amount);
        bank[to]->set(bank[to]->get() + amount);
      });
      ledger[self][from] -= amount;
      ledger[self][to] += amount;
      if (from == 0 || to == 0) hot_commits.fetch_add(1);
      return attempts;
    };
    auto worker = [&](int self, std::uint64_t s) {
      std::mt19937_64 rng(s);
      if (self == 0) counters_of_0[0] = my_counters();
      for (int i = 0; i < 60000 || (self == 1 && !forcer_done); ++i) {
        int from = static_cast<int>(rng() % accounts), to = static_cast<int>(rng() % accounts);
        const long amount = static_cast<long>(rng() % 100);
        const bool force = self == 0 && i % 500 == 0 && i < 60000;
        if (force) from = 0;
        if (self == 1 && i % 50 == 0) to = 0;  // keeps account 0 moving for the forced overlaps
        const bool audit = !force && (accounts <= 64 ? rng() % 10 == 0 : i % 500 == 1);
        if (audit) {  // read-only: every consistent snapshot holds all the money
          long total = atomically([&] {
            long t = 0;
            for (auto& a : bank) t += a->get();
            return t;
          });
          if (total != 1000L * accounts) bad_sums.fetch_add(1);
          continue;
        }
        const int attempts = transfer(self, from, to, amount, force);
        if (force) {
          ++forced;
          if (attempts > 1) ++forced_aborted;
        }
      }
      if (self == 0) {
        counters_of_0[1] = my_counters();
        forcer_done = true;
      }
    };
    std::thread t1(worker, 0, seed), t2(worker, 1, seed * 31 + 7);
    t1.join();
    t2.join();
    long total = 0, mismatched = 0;
    for (int i = 0; i < accounts; ++i) {
      const long balance = bank[i]->get();
      total += balance;
      if (balance != 1000 + ledger[0][i] + ledger[1][i]) ++mismatched;
    }
    INFO(accounts << " accounts");
    CHECK(total == 1000L * accounts);
    CHECK(mismatched == 0);
    CHECK(bad_sums.load() == 0);
    CHECK(stuck.load() == 0);
    CHECK(forced == 120);
    CHECK(forced_aborted == forced);
    CHECK(conflict_aborts(counters_of_0[1]) - conflict_aborts(counters_of_0[0]) >= static_cast<std::uint64_t>(forced));
  }
}

TEST_CASE("batches of transfers on two threads conserve money through the indexed write log",
          "[stress][stm]") {
  // Each transaction moves money 30 times (up to 60 tvars written: the log's index and filter), among
  // few enough accounts that a batch often writes an account twice (read-your-write through the
  // index) and the two threads conflict. Every third batch first tries 10 more transfers inside
  // or_else and retries there (rolled back: the index is rebuilt without them). Conserved: the total,
  // and each account against the ledgers of the committed batches.
  const std::uint64_t seed = weft::test::seed_from_env("stm indexed batches");
  constexpr int accounts = 512;
  std::vector<std::unique_ptr<tvar<long>>> bank;
  for (int i = 0; i < accounts; ++i) bank.push_back(std::make_unique<tvar<long>>(1000));
  std::vector<long> ledger[2] = {std::vector<long>(accounts, 0), std::vector<long>(accounts, 0)};
  std::atomic<long> bad_sums{0};
  auto worker = [&](int self, std::uint64_t s) {
    std::mt19937_64 rng(s);
    struct move {
      int from, to;
      long amount;
    };
    for (int batch = 0; batch < 1500; ++batch) {
      std::vector<move> moves(30), dropped(10);
      for (auto& m : moves) m = {int(rng() % accounts), int(rng() % accounts), long(rng() % 50)};
      for (auto& m : dropped) m = {int(rng() % accounts), int(rng() % accounts), long(rng() % 50)};
      auto apply = [&](const std::vector<move>& ms) {
        for (const move& m : ms) {
          bank[m.from]->set(bank[m.from]->get() - m.amount);
          bank[m.to]->set(bank[m.to]->get() + m.amount);
        }
      };
      atomically([&] {
        if (batch % 3 == 0)
          or_else([&] { apply(dropped), retry(); }, [] {});
        apply(moves);
      });
      for (const move& m : moves) ledger[self][m.from] -= m.amount, ledger[self][m.to] += m.amount;
      if (batch % 100 == 0) {
        const long total = atomically([&] {
          long t = 0;
          for (auto& a : bank) t += a->get();
          return t;
        });
        if (total != 1000L * accounts) bad_sums.fetch_add(1);
      }
    }
  };
  std::thread t1(worker, 0, seed), t2(worker, 1, seed * 31 + 7);
  t1.join();
  t2.join();
  long total = 0, mismatched = 0;
  for (int i = 0; i < accounts; ++i) {
    total += bank[i]->get();
    if (bank[i]->get() != 1000 + ledger[0][i] + ledger[1][i]) ++mismatched;
  }
  CHECK(total == 1000L * accounts);
  CHECK(mismatched == 0);
  CHECK(bad_sums.load() == 0);
}

TEST_CASE("an inevitable transaction never aborts while others commit", "[stress][stm]") {
  tvar<long> shared{0, "shared"}, other{0, "other"};
  std::atomic<bool> stop{false};
  std::atomic<long> other_commits{0}, shared_commits{0}, shared_attempts{0};
  std::atomic<bool> in_shared{false};  // the hammer is inside a transaction on `shared`
  std::atomic<bool> registered{false};
  std::thread hammer([&] {
    atomically([&] { other.get(); });
    registered = true;
    for (long i = 0; !stop.load(); ++i) {
      atomically([&] { other.set(other.get() + 1); });  // disjoint from the inevitable one: goes on
      other_commits.fetch_add(1);
      if (i % 16 == 0) {
        in_shared = true;
        atomically([&] {
          shared_attempts.fetch_add(1);
          shared.set(shared.get() + 1);  // conflicting: waits for it
        });
        in_shared = false;
        shared_commits.fetch_add(1);
      }
    }
  });
  // Others go on if they used the STM before it became inevitable; a thread alone in the STM stays
  // so until its inevitable transaction ends (the test above).
  while (!registered) std::this_thread::yield();
  for (int round = 0; round < 20; ++round) {
    int attempts_after_inevitable = 0;
    bool others_committed = false, hammer_tried = false;
    atomically([&] {
      become_inevitable("test output");
      ++attempts_after_inevitable;
      const long c0 = other_commits.load();  // others keep committing while we are inevitable
      others_committed = wait_until([&] { return other_commits.load() >= c0 + 5; });
      long v = shared.get();  // reserved from now on: the hammer cannot change it
      // Until the hammer tries to change it: it is in such a transaction (which cannot commit before
      // we do), or starts one.
      const long a0 = shared_attempts.load();
      hammer_tried = wait_until([&] { return in_shared.load() || shared_attempts.load() > a0; });
      shared.set(v + 1000);
    });
    CHECK(attempts_after_inevitable == 1);
    CHECK(others_committed);
    CHECK(hammer_tried);
  }
  stop.store(true);
  hammer.join();
  CHECK(shared.get() == 20 * 1000 + shared_commits.load());
  CHECK(other.get() == other_commits.load());
  CHECK(stats().total.inevitable >= 20);
}

TEST_CASE("after K aborts in a row a transaction runs inevitable", "[unit][stm]") {
  // Each attempt that is not inevitable is made to fail: a helper commits to what it read before it
  // commits. Attempt K + 1 must start inevitable (the observer hears why), and commit.
  static std::vector<std::string> reasons;
  set_observer([](const event& e, void*) {
    if (e.kind == event_kind::inevitable) reasons.emplace_back(e.reason);
  });
  for (unsigned k : {1u, 3u, 8u}) {
    INFO("K = " << k);
    reasons.clear();
    if (k != 8) configure_stm({.inevitable_after = k, .solo = solo_on()});  // 8: the default
    tvar<long> counter{0, "counter"};
    helper_thread writer([&] { atomically([&] { counter.set(counter.get() + 1); }); });
    writer.run_and_wait();  // the helper uses the STM: main runs the multi-thread path
    const auto before = my_counters();
    unsigned attempts = 0, first_inevitable = 0;
    atomically([&] {
      ++attempts;
      const long v = counter.get();
      if (detail::current_transaction()->inevitable()) {
        if (first_inevitable == 0) first_inevitable = attempts;
      } else {
        writer.run_and_wait();  // commits between our read and our commit: this attempt fails
      }
      counter.set(v + 100);
    });
    const auto after = my_counters();
    configure_stm({.solo = solo_on()});
    CHECK(attempts == k + 1);
    CHECK(first_inevitable == k + 1);
    CHECK(conflict_aborts(after) - conflict_aborts(before) == k);
    CHECK(after.inevitable == before.inevitable + 1);
    CHECK(counter.get() == static_cast<long>(1 + k + 100));
    REQUIRE(reasons.size() == 1);
    CHECK(reasons[0].find("too many aborts in a row") != std::string::npos);
  }
  set_observer(nullptr);
}

TEST_CASE("two threads hammering one counter with K = 1 lose no increment", "[stress][stm]") {
  configure_stm({.inevitable_after = 1, .solo = solo_on()});
  tvar<long> counter{0, "counter"};
  std::atomic<int> ready{0};
  auto bump = [&] {
    atomically([&] { counter.get(); });  // registered: from here on nobody runs solo
    ready.fetch_add(1);
    while (ready.load() < 2) std::this_thread::yield();  // start the contended part together
    for (int i = 0; i < 20000; ++i) atomically([&] { counter.set(counter.get() + 1); });
  };
  std::thread t1(bump), t2(bump);
  t1.join();
  t2.join();
  configure_stm({.solo = solo_on()});
  CHECK(counter.get() == 40000);
}

TEST_CASE("memory allocated in an aborted attempt is freed, deletes wait for commit", "[unit][stm]") {
  struct node {
    long value;
    node* next;
  };
  tvar<node*> head{nullptr};
  tvar<int> x{0};
  helper_thread writer([&] { x.set(x.get() + 1); });
  // Aborted attempts allocate nodes that are never published: freed at once, counted in every build
  // (and ASan would report a leak). The string is made and freed within each attempt: not undone.
  const auto c0 = my_counters();
  int attempts = 0;
  atomically([&] {
    ++attempts;
    x.get();
    node* n = new node{attempts, head.get()};
    std::string scratch(1000, 'x');  // a temporary freed within the attempt
    if (attempts < 4) writer.run_and_wait();
    head.set(n);
  });
  CHECK(attempts == 4);
  REQUIRE(head.get() != nullptr);
  CHECK(head.get()->value == 4);
  const auto c1 = my_counters();
  CHECK(c1.allocations_undone - c0.allocations_undone == 3);
  CHECK(c1.frees_deferred == c0.frees_deferred);
  // A delete in an aborted attempt does not happen; in a committed one it is deferred to the GC,
  // which frees it once no transaction can still read it.
  static std::atomic<std::uint64_t> gc_freed{0};
  gc_freed = 0;
  for (int i = 0; i < 1000 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  REQUIRE(detail::epoch_pending() == 0);
  set_observer([](const event& e, void*) {
    if (e.kind == event_kind::gc) gc_freed += e.count;
  });
  attempts = 0;
  atomically([&] {
    ++attempts;
    x.get();
    node* n = head.get();
    head.set(nullptr);
    delete n;
    if (attempts == 1) writer.run_and_wait();
  });
  CHECK(attempts == 2);
  CHECK(head.get() == nullptr);
  const auto c2 = my_counters();
  CHECK(c2.frees_deferred - c1.frees_deferred == 1);  // the committed delete only
  CHECK(c2.allocations_undone == c1.allocations_undone);
  CHECK(detail::epoch_pending() >= 1);  // not freed at commit: a reader may still hold it
  for (int i = 0; i < 1000 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  set_observer(nullptr);
  CHECK(detail::epoch_pending() == 0);
  CHECK(gc_freed.load() >= 1);
}

TEST_CASE("an attempt's allocation log finds its own allocations in any order, scopes and rollbacks included",
          "[unit][stm]") {
  // The index from address to position is built only when a delete needs it (round 13: hashing
  // every allocation of a segment that built a 400,000-node map was 15% of the program); deletes
  // in allocation order used to scan back through the whole log for each (quadratic).
  detail::alloc_log log;
  constexpr int n = 5000;
  std::vector<void*> p(n);
  for (auto& q : p) {
    q = std::malloc(32);
    log.record_alloc(q);
  }
  void* older = std::malloc(32);  // not the attempt's
  CHECK_FALSE(log.forget_alloc(older));
  for (int i = 0; i < n; i += 2) {  // oldest first: each is found, once
    REQUIRE(log.forget_alloc(p[i]));
    std::free(p[i]);
  }
  CHECK_FALSE(log.forget_alloc(older));
  // A nested scope: deleting the enclosing scope's allocations inside it is deferred.
  const detail::alloc_log::mark scope = log.position();
  const std::size_t outer_floor = log.set_floor(scope.allocs);
  void* inner = std::malloc(32);
  log.record_alloc(inner);
  CHECK_FALSE(log.forget_alloc(p[1]));  // the enclosing scope's
  CHECK(log.forget_alloc(inner));        // its own (the most recent: found without the index)
  std::free(inner);
  std::vector<void*> more(40);  // an unindexed tail longer than the scan: indexed on demand
  for (auto& q : more) {
    q = std::malloc(32);
    log.record_alloc(q);
  }
  CHECK(log.forget_alloc(more[0]));
  std::free(more[0]);
  CHECK(log.rollback_to(scope) == 39);  // frees the scope's remaining allocations
  log.set_floor(outer_floor);
  for (int i = 1; i < n; i += 2) {
    REQUIRE(log.forget_alloc(p[i]));  // the index survived the rollback
    std::free(p[i]);
  }
  CHECK(log.abort() == 0);  // nothing of the attempt is left to free
  std::free(older);
}

namespace {
std::vector<std::pair<void*, std::uint64_t>> stale_deletes;  // static: the quarantine stays on in this process
void note_stale_delete(void* block, std::uint64_t tag) noexcept { stale_deletes.emplace_back(block, tag); }
}  // namespace

TEST_CASE("the replay check's quarantine keeps a rolled-back run's memory, reports its deletes and forgets what it evicts",
          "[unit][stm]") {
  // WEFT_CHECK=replay: a broker kept a plain map across switch points; the rollback of a segment's
  // first run freed a node the map still held, and a later delete freed it again (round 13: glibc's
  // "double free", or silently wrong output). Quarantined, the node stays allocated and its delete is
  // reported. Past the limit the oldest blocks go back to malloc and are forgotten: their addresses
  // are reused by later allocations, whose deletes must not be taken for stale ones.
  stale_deletes.reserve(4096);
  constexpr std::size_t limit = 64 * 1024;
  detail::alloc_quarantine_start(&note_stale_delete, limit);
  detail::alloc_log log;
  constexpr int n = 2000;
  std::vector<void*> p(n);
  for (auto& q : p) {
    q = std::malloc(200);
    log.record_alloc(q);
  }
  // Oldest first out: what stays is the longest run of the newest that fits.
  int first_kept = n;
  for (std::size_t bytes = 0; first_kept > 0 && bytes + malloc_usable_size(p[first_kept - 1]) <= limit;)
    bytes += malloc_usable_size(p[--first_kept]);
  REQUIRE(first_kept > 0);  // (some were evicted)
  CHECK(log.abort_to_quarantine(7) == n);
  CHECK(log.empty());
  std::vector<char*> fresh(n);  // at the evicted blocks' addresses, many of them
  for (auto& f : fresh) f = new char[200];
  const std::size_t reused =
      std::count_if(fresh.begin(), fresh.end(), [&](char* f) { return std::find(p.begin(), p.end(), f) != p.end(); });
  INFO("fresh blocks at evicted addresses: " << reused);
  for (char* f : fresh) delete[] f;
  CHECK(stale_deletes.empty());
  for (int i = first_kept; i < n; ++i) ::operator delete(p[i]);  // reported, and still held
  REQUIRE(stale_deletes.size() == static_cast<std::size_t>(n - first_kept));
  for (int i = first_kept; i < n; ++i) {
    CHECK(stale_deletes[i - first_kept].first == p[i]);
    CHECK(stale_deletes[i - first_kept].second == 7);
  }
  stale_deletes.clear();
}

TEST_CASE("collections while a reader holds the epoch do not rescan what piled up behind it", "[unit][stm]") {
  // Newcomer round 13: after a parallel run, a finished segment waiting behind main's last segment
  // held the epoch while main deleted a map of 400,000 strings; every collection walked the whole
  // backlog (3 s instead of 7.5 ms). The entries looked at now grow with the retires, not their square.
  for (int i = 0; i < 100 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  detail::epoch_slot& reader = detail::epoch_slot_acquire();  // another participant, inside
  detail::epoch_enter(reader);
  constexpr int n = 100'000;
  const std::uint64_t scanned_before = detail::epoch_scanned();
  const std::size_t pending_before = detail::epoch_pending();
  for (int i = 0; i < n; ++i) detail::epoch_retire(std::malloc(16), &std::free);
  const std::uint64_t scanned = detail::epoch_scanned() - scanned_before;
  INFO("entries scanned for " << n << " retires: " << scanned);
  CHECK(scanned <= 4u * n);  // quadratic: ~n * n / (2 * 64) = 78 million
  CHECK(detail::epoch_pending() - pending_before == n);  // nothing freed while the reader is in
  detail::epoch_exit(reader);
  detail::epoch_slot_release(reader);
  for (int i = 0; i < 100 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  CHECK(detail::epoch_pending() == 0);  // and all of it once the reader left
}

TEST_CASE("boxed versions are reclaimed by the epoch GC, which reports to the observer", "[unit][stm]") {
  static std::atomic<std::uint64_t> freed_seen{0};
  freed_seen = 0;
  set_observer([](const event& e, void*) {
    if (e.kind == event_kind::gc) freed_seen += e.count;
  });
  tvar<std::string> s{"start"};
  for (int i = 0; i < 10000; ++i) atomically([&] { s.set(std::string(64, static_cast<char>('a' + i % 26))); });
  for (int i = 0; i < 10; ++i) detail::epoch_collect();
  set_observer(nullptr);
  CHECK(detail::epoch_pending() < 500);
  CHECK(freed_seen.load() > 9000);
}

TEST_CASE("in fenced mode (ordered runs) a collection frees retired memory without membarrier", "[unit][stm]") {
  // epoch.hpp: while fenced mode is on, readers fence when they enter and a collection is a scan and
  // a CAS; two collections advance the epoch twice and free what was retired before them.
  for (int i = 0; i < 1000 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  REQUIRE(detail::epoch_pending() == 0);
  CHECK_FALSE(detail::epoch_collect_is_cheap());
  detail::epoch_fenced_begin();
  CHECK(detail::epoch_collect_is_cheap());
  static int freed = 0;
  freed = 0;
  auto drop = [](void* p) {
    delete static_cast<int*>(p);
    ++freed;
  };
  for (int i = 0; i < 3; ++i) detail::epoch_retire(new int(i), drop, false);
  {
    detail::epoch_guard reader;  // entered: nothing retired from now on is freed until it leaves
    detail::epoch_collect();
    detail::epoch_collect();
    detail::epoch_retire(new int(3), drop, false);
    for (int i = 0; i < 5; ++i) detail::epoch_collect();
    CHECK(freed <= 3);
  }
  for (int i = 0; i < 5; ++i) detail::epoch_collect();
  CHECK(freed == 4);
  CHECK(detail::epoch_pending() == 0);
  detail::epoch_fenced_end();
  CHECK_FALSE(detail::epoch_collect_is_cheap());
}

TEST_CASE("a thread alone in the GC frees what it replaces within a few retires and beside another thread in batches", "[unit][stm]") {
  // epoch.cpp, alone_after_fence: with no other participant a collection needs no membarrier(), so it
  // runs every few retires and a serial program's replaced values go back to malloc soon. A retire
  // waits for two advances of the epoch, one per collection: at most twice the batch is pending.
  for (int i = 0; i < 1000 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  REQUIRE(detail::epoch_pending() == 0);
  tvar<std::string> s{"start"};
  s.set("first");
  REQUIRE(detail::epoch_participants_in_use() == 1);  // this thread (each test runs in its own process)
  std::size_t most = 0;
  for (int i = 0; i < 1000; ++i) {
    s.set(std::string(64, static_cast<char>('a' + i % 26)));
    atomically([&] { s.set(s.get() + "!"); });
    most = std::max(most, detail::epoch_pending());
  }
  CHECK(most <= 2 * detail::epoch_collect_alone_every);
  // Another thread taking part (registered, outside any critical section): collections go back to
  // one per epoch_collect_every retires, each with a membarrier().
  std::atomic<bool> registered{false}, leave{false};
  std::thread other([&] {
    (void)detail::epoch_self();
    registered = true;
    while (!leave) std::this_thread::yield();
  });
  while (!registered) std::this_thread::yield();
  CHECK(detail::epoch_participants_in_use() == 2);
  most = 0;
  for (int i = 0; i < 1000; ++i) {
    s.set(std::string(64, static_cast<char>('a' + i % 26)));
    most = std::max(most, detail::epoch_pending());
  }
  leave = true;
  other.join();
  CHECK(most > 2 * detail::epoch_collect_alone_every);
  CHECK(most <= 3 * detail::epoch_collect_every);
  CHECK(detail::epoch_participants_in_use() == 1);
}

TEST_CASE("threads that join the GC while it collects alone never read a freed value", "[unit][stm]") {
  // A thread that takes a record fences before it enters (take_participant): either the collector's
  // scan sees it, or it reads the value that replaced the retired one. Under ASan a value freed
  // early is a use-after-free; here every read also checks the value's contents. This thread stays
  // out of the GC, so that the writer is alone whenever no reader is running.
  const bool nobody_else = detail::epoch_participants_in_use() == 0;  // (run alone, as CTest runs it)
  std::atomic<tvar<std::string>*> shared{nullptr};
  std::atomic<bool> stop{false};
  std::atomic<long> bad{0}, reads{0}, alone_writes{0};
  std::thread writer([&] {
    tvar<std::string> s{std::string(200, 'a')};
    shared = &s;
    for (long i = 0; !stop; ++i) {
      s.set(std::string(200, static_cast<char>('a' + i % 26)));
      if (detail::epoch_participants_in_use() == 1) ++alone_writes;
    }
    while (shared.load() != nullptr) std::this_thread::yield();  // until no reader can reach s
  });
  while (!shared.load()) std::this_thread::yield();
  tvar<std::string>& s = *shared.load();
  for (int round = 0; round < 200; ++round) {
    std::thread reader([&] {
      for (int i = 0; i < 20; ++i) {
        const std::string v = atomically([&] { return s.get(); });
        if (v.size() != 200 || v.find_first_not_of(v[0]) != std::string::npos) ++bad;
        s.view([&](const std::string& w) {
          if (w.size() != 200 || w.find_first_not_of(w[0]) != std::string::npos) ++bad;
        });
        ++reads;
      }
    });
    reader.join();
  }
  stop = true;
  shared = nullptr;
  writer.join();
  CHECK(reads.load() == 200 * 20);
  CHECK(bad.load() == 0);
  if (nobody_else) CHECK(alone_writes.load() > 0);  // the path under test ran
}

TEST_CASE("in fenced mode a thread collects once per eighth of the participants' count of retires", "[unit][stm]") {
  // epoch_fenced_batch: a collection scans every participant, so with many (ordered mode's segment
  // records, ~5 per worker) a thread collects less often and the scan per retire stays bounded.
  std::vector<detail::epoch_slot*> held;
  for (int i = 0; i < 200; ++i) held.push_back(&detail::epoch_slot_acquire());  // 200 distinct records
  CHECK(detail::epoch_fenced_batch() >= 200 / 8);
  for (detail::epoch_slot* slot : held) detail::epoch_slot_release(*slot);
  CHECK(detail::epoch_fenced_batch() >= 200 / 8);  // records are reused, never unlinked: still scanned
}

TEST_CASE("the epoch GC frees nothing a reader holds while fenced mode turns on and off", "[stress][stm]") {
  // Two readers enter the epoch, load a shared pointer and check the object's value; a writer
  // replaces the object and retires the old one with a deleter that poisons it before freeing it, and
  // collects after every retire; a fourth thread turns fenced mode (what an ordered run starts and
  // stops) on and off all the while, so that collections alternate between membarrier and plain
  // fences, and some straddle a switch. A reader that sees the poison read freed memory (ASan: a
  // use after free). No randomness: the counts are printed.
  struct object {
    std::atomic<std::uint64_t> value;
  };
  constexpr std::uint64_t live = 0x5eedf00dULL, poison = 0xdeadULL;
  std::atomic<object*> shared{new object{live}};
  std::atomic<bool> stop{false};
  std::atomic<long> bad{0}, reads{0}, retires{0}, switches{0};
  auto reader = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      detail::epoch_guard guard;
      object* o = shared.load(std::memory_order_acquire);
      for (int i = 0; i < 16; ++i)
        if (o->value.load(std::memory_order_relaxed) != live) bad.fetch_add(1, std::memory_order_relaxed);
      reads.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::thread r1(reader), r2(reader);
  std::thread writer([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      object* old = shared.exchange(new object{live}, std::memory_order_acq_rel);
      detail::epoch_retire(old, [](void* p) {
        auto* o = static_cast<object*>(p);
        o->value.store(poison, std::memory_order_relaxed);
        delete o;
      }, false);
      detail::epoch_collect();
      retires.fetch_add(1, std::memory_order_relaxed);
    }
  });
  std::thread toggler([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      detail::epoch_fenced_begin();
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      detail::epoch_fenced_end();
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      switches.fetch_add(1, std::memory_order_relaxed);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  r1.join();
  r2.join();
  writer.join();
  toggler.join();
  std::printf("epoch fenced-mode stress: %ld reads, %ld retires, %ld mode switches\n", reads.load(), retires.load(),
              switches.load());
  CHECK(bad.load() == 0);
  CHECK(reads.load() > 0);
  CHECK(retires.load() > 0);
  delete shared.load();
  for (int i = 0; i < 1000 && detail::epoch_pending() > 0; ++i) detail::epoch_collect();
  CHECK(detail::epoch_pending() == 0);
}

TEST_CASE("a tvar's name goes with it and stays with the others while thousands of unnamed tvars come and go", "[unit][stm]") {
  // Destroying a tvar consults the name table only when its shard holds entries; the counts must
  // stay right through names given, names removed and unnamed tvars destroyed beside them.
  tvar<int> kept(1, "kept");
  alignas(tvar<int>) unsigned char storage[sizeof(tvar<int>)];
  for (int round = 0; round < 3; ++round) {
    auto* named = new (storage) tvar<int>(2, "temporary");
    CHECK(std::string(named->name()) == "temporary");
    named->~tvar<int>();
    auto* unnamed = new (storage) tvar<int>(3);  // the same address: it must not inherit the name
    CHECK(unnamed->name() == nullptr);
    unnamed->~tvar<int>();
    std::vector<std::unique_ptr<tvar<int>>> many;
    for (int i = 0; i < 5000; ++i) many.push_back(std::make_unique<tvar<int>>(i));
    many.clear();
    REQUIRE(kept.name() != nullptr);
    CHECK(std::string(kept.name()) == "kept");
  }
}

TEST_CASE("conflicts are reported to the observer with names and source locations", "[unit][stm]") {
  static std::mutex lock;
  static std::vector<conflict_record> records;
  records.clear();
  set_observer([](const event& e, void*) {
    if (e.kind == event_kind::tx_abort && e.conflict) {
      std::lock_guard g(lock);
      records.push_back(*e.conflict);
    }
  });
  tvar<int> hot{0, "hot"};
  helper_thread writer([&] { atomically([&] { hot.set(hot.get() + 1); }); });
  const std::uint_least32_t write_line = __LINE__ - 1;
  // Once: the helper now uses the STM too, so main runs the multi-thread path (a thread alone runs
  // solo, keeps no read log, and has no reads to name in a conflict).
  writer.run_and_wait();
  const auto before = my_counters();
  constexpr int forced = 5;
  std::uint_least32_t read_line = 0;
  for (int round = 0; round < forced; ++round) {
    int attempts = 0;
    atomically([&] {
      ++attempts;
      read_line = __LINE__ + 1;
      int v = hot.get();
      if (attempts == 1) writer.run_and_wait();  // hot changes under us: this attempt fails
      hot.set(v + 1);
    });
    CHECK(attempts == 2);
  }
  set_observer(nullptr);
  const auto after = my_counters();
  // Every conflict, not only the first: as many records as conflict aborts, each complete.
  CHECK(conflict_aborts(after) - conflict_aborts(before) == static_cast<std::uint64_t>(forced));
  REQUIRE(records.size() == static_cast<std::size_t>(forced));
  for (const conflict_record& r : records) {
    CHECK(r.kind == conflict_kind::read_write);
    CHECK(r.object == &hot);
    CHECK(std::string(r.name) == "hot");
    CHECK(r.read_at.line() == read_line);
    CHECK(r.write_at.line() == write_line);
    CHECK(r.thread == std::this_thread::get_id());
  }
  CHECK(hot.get() == 1 + 2 * forced);
}

TEST_CASE("read-write conflicts forced between two threads are counted", "[unit][stm]") {
  // Also what the WEFT_PROFILE=1 CTest test runs: its report at exit must name this read-write site.
  tvar<int> hot{0, "hot"};
  helper_thread writer([&] { atomically([&] { hot.set(hot.get() + 1); }); });
  writer.run_and_wait();  // the helper uses the STM: main runs the multi-thread path
  const auto before = my_counters();
  for (int round = 0; round < 4; ++round) {
    int attempts = 0;
    atomically([&] {
      ++attempts;
      const int v = hot.get();
      if (attempts == 1) writer.run_and_wait();
      hot.set(v + 10);
    });
    CHECK(attempts == 2);
  }
  const auto after = my_counters();
  CHECK(conflict_aborts(after) - conflict_aborts(before) == 4);
  CHECK(after.commits - before.commits == 4);
  CHECK(hot.get() == 1 + 4 * 11);
}

TEST_CASE("a commit judges the tvars it locked by their version before the lock, in small and indexed logs",
          "[unit][stm]") {
  // A tvar read and then written is locked by the committer when its reads are validated: valid only
  // if its version before the lock is still the one read. The commit looks that up only when a tvar
  // it locked was newer than its snapshot (here: a blind write to `blind`, changed meanwhile) — a
  // changed read must abort either way, an unchanged one must commit either way.
  for (const int n : {4, 40}) {  // 40: past the write log's linear part (index and filter)
    INFO(n << " tvars read and written");
    std::vector<std::unique_ptr<tvar<long>>> vars;
    for (int i = 0; i < n; ++i) vars.push_back(std::make_unique<tvar<long>>(i));
    tvar<long> blind{0};
    bool change_read = false;
    helper_thread writer([&] {
      atomically([&] {
        if (change_read)
          vars.back()->set(vars.back()->get() + 100);
        else
          blind.set(blind.get() + 1);
      });
    });
    writer.run_and_wait();  // the helper uses the STM: main runs the multi-thread path
    for (const bool blind_changed : {false, true}) {
      for (const bool read_changed : {false, true}) {
        INFO("blind write to a changed tvar " << blind_changed << ", a read tvar changed " << read_changed);
        const auto before = my_counters();
        int attempts = 0;
        atomically([&] {
          ++attempts;
          std::vector<long> seen;
          for (auto& v : vars) seen.push_back(v->get());
          if (attempts == 1) {
            if (blind_changed) {
              change_read = false;
              writer.run_and_wait();
            }
            if (read_changed) {
              change_read = true;
              writer.run_and_wait();
            }
          }
          for (int i = 0; i < n; ++i) vars[i]->set(seen[i] + 1);
          blind.set(-1);
        });
        CHECK(attempts == (read_changed ? 2 : 1));
        CHECK(conflict_aborts(my_counters()) - conflict_aborts(before) == (read_changed ? 1u : 0u));
        CHECK(blind.get() == -1);
      }
    }
    long sum = 0;
    for (auto& v : vars) sum += v->get();
    CHECK(sum == n * (n - 1) / 2 + 4 * n + 2 * 100);
  }
}

TEST_CASE("the conflict profiler sums conflicts by site, costliest first", "[unit][stm]") {
  tvar<int> hot{0, "hot"}, cold{0};
  helper_thread writer([&] { atomically([&] { hot.set(hot.get() + 1); }); });
  const std::uint_least32_t write_line = __LINE__ - 1;
  writer.run_and_wait();  // the helper uses the STM too: main runs the multi-thread path
  start_profiling();
  std::uint_least32_t read_line = 0;
  for (int round = 0; round < 3; ++round) {
    int attempts = 0;
    atomically([&] {
      ++attempts;
      read_line = __LINE__ + 1;
      int v = hot.get();
      if (attempts == 1) writer.run_and_wait();  // hot changes under us: this attempt fails
      hot.set(v + 1);
    });
    CHECK(attempts == 2);
  }
  atomically([&] {
    become_inevitable("profiler test");
    cold.set(1);
  });
  const profile p = stop_profiling();
  REQUIRE(!p.sites.empty());
  const conflict_site& s = p.sites.front();
  CHECK(s.kind == conflict_kind::read_write);
  CHECK(s.object == "hot");
  CHECK(s.read_at.line() == read_line);
  CHECK(s.write_at.line() == write_line);
  CHECK(s.aborts == 3);
  CHECK(s.threads == 1);
  CHECK(s.time_lost_ns > 0);
  CHECK(p.conflicts >= 3);
  CHECK(p.inevitable == 1);
  REQUIRE(p.inevitable_reasons.size() == 1);
  CHECK(p.inevitable_reasons[0].first == "profiler test");
  CHECK(p.stats.total.commits >= 4);
  const std::string text = format_profile(p);
  INFO(text);
  CHECK(text.find("weft conflict profile:") == 0);
  CHECK(text.find("read-write") != std::string::npos);
  CHECK(text.find("hot") != std::string::npos);
  CHECK(text.find("test_stm.cpp:" + std::to_string(read_line)) != std::string::npos);
  CHECK(text.find("\"profiler test\" x1") != std::string::npos);
  CHECK(text.find(" by a conflict, ") != std::string::npos);
  // Threads by name or number (a std::thread::id's hash was printed: a 19-digit number).
  CHECK(text.find("main thread: ") != std::string::npos);
  // Stopped: later conflicts are not counted; a new start clears the tables.
  atomically([&] { hot.set(0); });
  CHECK(profile_snapshot().conflicts == p.conflicts);
  start_profiling();
  CHECK(stop_profiling().sites.empty());
}

TEST_CASE("a switch point inside a transaction is refused", "[unit][stm]") {
  weft::test::fresh_runtime fresh;
  tvar<int> x{0};
  channel<int> ch;
  weft::spawn([&] { ch.receive(); });
  std::string what;
  try {
    atomically([&] {
      x.set(1);
      ch.send(1);
    });
  } catch (const std::logic_error& e) {
    what = e.what();
  }
  CHECK(what.find("inside weft::atomically") != std::string::npos);
  CHECK(x.get() == 0);
  CHECK(ch.balance() == 0);  // the receiver has not run yet: nothing was queued or delivered
  weft::run();
  CHECK(ch.balance() == -1);
  ch.send(2);
  fresh.check_clean();
}

TEST_CASE("objects holding tvars can be made and deleted inside transactions", "[unit][stm]") {
  struct node {
    tvar<std::string> label;
    tvar<int> count{0};
    explicit node(std::string s) : label(std::move(s)) {}
  };
  node* first = new node(std::string(64, 'x'));
  tvar<node*> head{first};
  tvar<int> x{0};
  // Deleted in an attempt that is abandoned: the node and its tvars stay intact.
  CHECK_THROWS_AS(atomically([&] {
                    node* victim = head.get();
                    head.set(nullptr);
                    delete victim;
                    throw std::runtime_error("abandon");
                  }),
                  std::runtime_error);
  REQUIRE(head.get() == first);
  CHECK(head.get()->label.get().size() == 64);
  // Made, then the attempt conflicts: the first attempt's node (and its box) are freed (ASan checks).
  {
    std::atomic<bool> go{false}, done{false};
    std::thread writer([&] {
      while (!go.load()) std::this_thread::yield();
      x.set(1);
      done.store(true);
    });
    int attempts = 0;
    atomically([&] {
      ++attempts;
      x.get();
      node* fresh = new node(std::string(100, 'y'));
      tvar<std::string> scratch{std::string(50, 'z')};  // made and destroyed within the attempt
      if (attempts == 1) {
        go.store(true);
        while (!done.load()) std::this_thread::yield();
      }
      node* old = head.get();
      head.set(fresh);
      delete old;  // committed at the second attempt: its box goes to the epoch GC
    });
    writer.join();
    CHECK(attempts == 2);
  }
  CHECK(head.get()->label.get().size() == 100);
  atomically([&] {
    delete head.get();
    head.set(nullptr);
  });
  for (int i = 0; i < 50; ++i) detail::epoch_collect();
}

namespace {
// Random transaction programs checked against a model (a plain copy of the values, updated as the
// program runs). An op reads a tvar (it must hold what the model says: the program's own writes,
// through the write log, its index and its filter), writes one (an inline value or a boxed string,
// whose replaced boxes are freed), makes and drops a tvar of its own, calls become_inevitable, or
// opens a block: a nested atomically that returns or throws, or_else whose first branch returns or
// retries.
// Blocks that throw or retry must leave no trace; the rest joins the transaction.
struct program_op {
  enum kind_t {
    get, set, get_boxed, set_boxed, local, commit_hook, abort_hook,
    nested, nested_throw, or_else_first, or_else_retry, inevitable
  } kind;
  int var = 0;
  long value = 0;
  std::vector<program_op> a, b;
};

std::vector<program_op> random_program(std::mt19937_64& rng, int vars, int depth, int length) {
  std::vector<program_op> ops;
  for (int i = 0; i < length; ++i) {
    program_op op{program_op::get, 0, 0, {}, {}};
    const unsigned r = static_cast<unsigned>(rng() % 100);
    op.var = static_cast<int>(rng() % static_cast<unsigned>(vars));
    op.value = static_cast<long>(rng() % 1000);
    if (r < 28) {
      op.kind = program_op::get;
    } else if (r < 38) {
      op.kind = program_op::get_boxed;
    } else if (r < 62 || depth >= 3) {
      op.kind = program_op::set;
    } else if (r < 76) {
      op.kind = program_op::set_boxed;
    } else if (r < 80) {
      op.kind = program_op::local;
    } else if (r < 83) {
      op.kind = program_op::commit_hook;
    } else if (r < 86) {
      op.kind = program_op::abort_hook;
    } else if (r < 99) {
      static constexpr program_op::kind_t blocks[] = {program_op::nested, program_op::nested_throw,
                                                      program_op::or_else_first, program_op::or_else_retry};
      op.kind = blocks[rng() % 4];
      op.a = random_program(rng, vars, depth + 1, static_cast<int>(rng() % 24));
      op.b = random_program(rng, vars, depth + 1, static_cast<int>(rng() % 24));
    } else {
      op.kind = program_op::inevitable;
    }
    ops.push_back(std::move(op));
  }
  return ops;
}

struct block_undone {};

constexpr int program_vars = 48;  // per program: programs often write past the write log's linear part

// The tvars a program runs on (from `first`): inline values and boxed ones (std::string, short enough
// for the small-string buffer), and the model of both; the counters its on_commit and on_abort hooks
// bump, and how many runs of each the model expects. The model is held by value (arrays): on a
// tasklet's stack it is restored with the stack when a segment rolls back, as heap memory written in
// the segment would not be.
struct program_state {
  std::vector<std::unique_ptr<tvar<long>>>* vars;
  std::vector<std::unique_ptr<tvar<std::string>>>* boxed;
  int first;
  long* commit_runs;
  long* abort_runs;
  std::array<long, program_vars> model{};
  std::array<std::string, program_vars> boxed_model;
  long commits_expected = 0;  // on_commit hooks registered in the blocks still standing
  long aborts_pending = 0;    // on_abort hooks likewise: they run if their block rolls back
  long aborts_expected = 0;   // on_abort runs so far (blocks rolled back in this attempt)
  long bad = 0;
  program_state(std::vector<std::unique_ptr<tvar<long>>>& v, std::vector<std::unique_ptr<tvar<std::string>>>& b,
                int f, long* commits, long* aborts)
      : vars(&v), boxed(&b), first(f), commit_runs(commits), abort_runs(aborts) {
    boxed_model.fill("0");
  }
  /// A new attempt from the committed state (no hooks pending).
  void restart_from(const program_state& committed) {
    model = committed.model;
    boxed_model = committed.boxed_model;
    commits_expected = aborts_pending = aborts_expected = bad = 0;
  }
  /// A block rolled back to `before`: its writes and on_commit hooks go, its on_abort hooks ran.
  void roll_back_to(const program_state& before) {
    model = before.model;
    boxed_model = before.boxed_model;
    aborts_expected += aborts_pending - before.aborts_pending;
    commits_expected = before.commits_expected;
    aborts_pending = before.aborts_pending;
  }
};

// Runs `ops`, keeping the model in step; counts reads that disagree in `st.bad`.
void run_program(const std::vector<program_op>& ops, program_state& st) {
  for (const program_op& op : ops) {
    const auto at = static_cast<std::size_t>(op.var);
    tvar<long>& v = *(*st.vars)[static_cast<std::size_t>(st.first) + at];
    tvar<std::string>& sv = *(*st.boxed)[static_cast<std::size_t>(st.first) + at];
    switch (op.kind) {
      case program_op::get:
        if (v.get() != st.model[at]) ++st.bad;
        break;
      case program_op::set:
        v.set(op.value);
        st.model[at] = op.value;
        break;
      case program_op::get_boxed:
        if (sv.get() != st.boxed_model[at]) ++st.bad;
        break;
      case program_op::set_boxed:
        sv.set(std::to_string(op.value));
        st.boxed_model[at] = std::to_string(op.value);
        break;
      case program_op::commit_hook:
        on_commit([runs = st.commit_runs] { ++*runs; });
        ++st.commits_expected;
        break;
      case program_op::abort_hook:
        on_abort([runs = st.abort_runs] { ++*runs; });
        ++st.aborts_pending;
        break;
      case program_op::local: {  // a tvar made and destroyed inside the transaction
        tvar<std::string> made{std::to_string(op.value)};
        made.set(made.get() + "+");
        if (made.get() != std::to_string(op.value) + "+") ++st.bad;
        break;
      }
      case program_op::nested:
        atomically([&] { run_program(op.a, st); });
        break;
      case program_op::nested_throw: {
        const program_state before = st;  // what the block must leave when it throws
        try {
          atomically([&] {
            run_program(op.a, st);
            throw block_undone{};
          });
        } catch (const block_undone&) {
          st.roll_back_to(before);
        }
        break;
      }
      case program_op::or_else_first:
        or_else([&] { run_program(op.a, st); }, [&] { ++st.bad; });
        break;
      case program_op::or_else_retry: {
        const program_state before = st;
        or_else([&] { run_program(op.a, st), retry(); },
                [&] {
                  st.roll_back_to(before);
                  run_program(op.b, st);
                });
        break;
      }
      case program_op::inevitable:
        become_inevitable("program");
        break;
    }
  }
}
// Runs `program` as one transaction from the committed state `committed` (also_inside() runs in it
// after the program); returns the state the committed attempt left. Copied outside the transaction:
// memory an attempt allocates goes with it when it aborts.
template <class F>
program_state run_transaction(const std::vector<program_op>& program, const program_state& committed, F also_inside) {
  program_state st = committed;
  atomically([&] {
    st.restart_from(committed);
    run_program(program, st);
    also_inside();
  });
  return st;
}

// How many of the state's tvars differ from its model.
long tvars_disagreeing(const program_state& st) {
  long wrong = 0;
  for (std::size_t i = 0; i < std::size_t{program_vars}; ++i) {
    const std::size_t at = static_cast<std::size_t>(st.first) + i;
    if ((*st.vars)[at]->get() != st.model[i] || (*st.boxed)[at]->get() != st.boxed_model[i]) ++wrong;
  }
  return wrong;
}
}  // namespace

TEST_CASE("random transaction programs with nested blocks agree with a model", "[stress][stm]") {
  // In main (with a second thread committing beside it for half the rounds: the multi-thread path,
  // whose conflicts re-run the programs) and in tasklets that switch between transactions (in the
  // mode matrix: segments, their rollbacks, injected aborts). After each transaction: every tvar as
  // the model says, each on_commit hook of a block still standing run once, each on_abort hook of a
  // block rolled back run once.
  const std::uint64_t seed = weft::test::seed_from_env("stm programs");
  constexpr int vars_each = program_vars;
  SECTION("in main, alone and beside another thread") {
    std::vector<std::unique_ptr<tvar<long>>> vars;
    std::vector<std::unique_ptr<tvar<std::string>>> boxed;
    for (int i = 0; i < vars_each + 2; ++i) vars.push_back(std::make_unique<tvar<long>>(0));
    for (int i = 0; i < vars_each; ++i) boxed.push_back(std::make_unique<tvar<std::string>>("0"));
    long commit_runs = 0, abort_runs = 0, hooks_wrong = 0;
    program_state committed(vars, boxed, 0, &commit_runs, &abort_runs);
    std::mt19937_64 rng(seed);
    long bad = 0, torn = 0;
    for (int half = 0; half < 2; ++half) {
      std::atomic<bool> stop{false};
      std::thread other;
      if (half == 1)  // keeps the last two tvars equal, in transactions the programs' reads conflict with
        other = std::thread([&] {
          for (long n = 1; !stop.load(); ++n)
            atomically([&] { vars[vars_each]->set(n), vars[vars_each + 1]->set(n); });
        });
      for (int round = 0; round < 400; ++round) {
        const auto program = random_program(rng, vars_each, 0, static_cast<int>(rng() % 80));
        const long commits_before = commit_runs, aborts_before = abort_runs;
        const program_state st = run_transaction(program, committed, [&] {
          if (half == 1 && vars[vars_each]->get() != vars[vars_each + 1]->get()) ++torn;
        });
        bad += st.bad;
        // Beside the other thread an attempt may also abort by a conflict: its on_abort hooks run too.
        const long aborts_ran = abort_runs - aborts_before;
        if (commit_runs - commits_before != st.commits_expected ||
            (half == 0 ? aborts_ran != st.aborts_expected : aborts_ran < st.aborts_expected))
          ++hooks_wrong;
        committed.restart_from(st);
        bad += tvars_disagreeing(committed);
      }
      stop = true;
      if (other.joinable()) other.join();
    }
    CHECK(bad == 0);
    CHECK(torn == 0);
    CHECK(hooks_wrong == 0);
  }
  SECTION("in tasklets, each on its own tvars") {
    constexpr int tasklets = 4;
    std::vector<std::unique_ptr<tvar<long>>> vars;
    std::vector<std::unique_ptr<tvar<std::string>>> boxed;
    for (int i = 0; i < tasklets * vars_each; ++i) vars.push_back(std::make_unique<tvar<long>>(0));
    for (int i = 0; i < tasklets * vars_each; ++i) boxed.push_back(std::make_unique<tvar<std::string>>("0"));
    tvar<long> bad{0};
    for (int t = 0; t < tasklets; ++t)
      weft::spawn([&, t] {
        // Its generator and model live on its stack: a rolled-back segment restarts them. (Its
        // programs are on the heap, but made in the segment that uses them, and only read.)
        std::mt19937_64 rng(seed + static_cast<std::uint64_t>(t) * 7919);
        long commit_runs = 0, abort_runs = 0;  // (a segment's on_abort hooks run only when its block throws)
        program_state committed(vars, boxed, t * vars_each, &commit_runs, &abort_runs);
        for (int round = 0; round < 150; ++round) {
          const auto program = random_program(rng, vars_each, 0, static_cast<int>(rng() % 80));
          const long commits_before = commit_runs, aborts_before = abort_runs;
          const program_state st = run_transaction(program, committed, [] {});
          committed.restart_from(st);
          long wrong = st.bad + tvars_disagreeing(committed);
          if (commit_runs - commits_before != st.commits_expected || abort_runs - aborts_before != st.aborts_expected)
            ++wrong;
          if (wrong) atomically([&] { bad.set(bad.get() + wrong); });
          if (round % 3 == 0) weft::schedule();
        }
      });
    weft::run();
    CHECK(bad.get() == 0);
  }
}
