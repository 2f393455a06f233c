// WEFT_CHECK=replay (CTest `replay_*`, tests/CMakeLists.txt).
//   replay_child          a tasklet that breaks the memory contract (DESIGN.md §5) in a way abort
//                         injection cannot see: it increments a plain global and prints it. The check
//                         must report it with the tasklet's name, and abort.
//   replay_child nodes    a tasklet that keeps to the contract and stores pointers to nodes it
//                         allocates in a tvar<node*> (a linked stack): each run of a segment gets new
//                         addresses, which the check must not take for a difference.
//   replay_child intents  tasklets that keep to the contract and end segments at intents that set up
//                         the segment after them: an insert() that throws its misuse error (caught),
//                         a kill() and a raise_exception() of runnable tasklets. The check must find no
//                         difference (it reported one: the replay ran inevitable, printing directly).
//   replay_child branch   a tasklet whose next switch point depends on a plain global it increments:
//                         the check must name the two operations (it printed "intent 1 then 9").
//   replay_child lines    the same, choosing between two weft::schedule() calls on different lines: the
//                         check must see the difference (the intents alone are equal) and name both lines.
//   replay_child plain_thread
//                         tasklets that keep to the contract and branch on a tvar that a plain thread
//                         keeps incrementing: the two runs of a segment may read different values,
//                         which is no breach. The check must not report it (it did: "plain threads
//                         make them differ too", README).
//   replay_child plain_map
//                         a broker that keeps its subscriptions in a plain std::map across switch
//                         points (newcomer round 13): a segment's first run adds a node, the rollback
//                         frees it, the map still points there, and the second run or main's delete
//                         freed it again (glibc: "double free"; the segments print nothing, so their
//                         records were equal). The check must name the breach.
#include <atomic>
#include <chrono>
#include <map>
#include <thread>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <weft/weft.hpp>

namespace {
int counter = 0;  // plain shared state, written by a tasklet: outside the contract

struct node {
  int value;
  node* next;
};

int plain_global() {
  weft::channel<int> ch;
  weft::tasklet t = weft::spawn([&] {
    for (int i = 0; i < 3; ++i) {
      ++counter;
      weft::print("counter {}\n", counter);
      ch.send(i);
    }
  });
  t.set_name("counting");
  for (int i = 0; i < 3; ++i) ch.receive();
  weft::print("done\n");
  return 0;
}

int nodes() {
  weft::tvar<node*> top{nullptr, "top"};
  for (int k = 0; k < 3; ++k)
    weft::spawn([&, k] {
      for (int i = 0; i < 4; ++i) {
        top.set(new node{k * 10 + i, top.get()});
        weft::schedule();
      }
    });
  weft::run();
  int sum = 0, count = 0;
  for (node* n = top.get(); n;) {
    sum += n->value, ++count;
    node* next = n->next;
    delete n;
    n = next;
  }
  weft::print("{} nodes, sum {}\n", count, sum);
  return 0;
}
int branch() {
  weft::channel<int> ch;
  weft::tasklet t = weft::spawn([&] {
    for (int i = 0; i < 3; ++i) {
      if (++counter % 2)
        weft::schedule();
      else
        ch.send(i);
    }
  });
  t.set_name("branching");
  weft::spawn([&] {
    for (int i = 0; i < 1; ++i) ch.receive();
  });
  weft::run();
  weft::print("done\n");
  return 0;
}

int lines() {
  weft::tasklet t = weft::spawn([&] {
    for (int i = 0; i < 3; ++i) {
      if (++counter % 2)
        weft::schedule();  // LINE-A
      else
        weft::schedule();  // LINE-B
    }
  });
  t.set_name("two_lines");
  weft::run();
  weft::print("done\n");
  return 0;
}

// Outside the contract too (plain memory, not rolled back), but atomic: at 2 workers the tasklets
// that increment it run on both threads, and a plain int would be a data race (TSan).
std::atomic<long> breach_counter{0};

int plain_thread(bool breach) {
  weft::tvar<long> ticks{0, "ticks"};
  weft::tvar<long> odd{0, "odd"};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    // Bursts of commits with pauses between: segments run twice during a burst see the writer's
    // commits between their runs, those run during a pause do not (and are compared).
    while (!stop.load(std::memory_order_relaxed)) {
      for (int i = 0; i < 200; ++i) weft::atomically([&] { ticks.set(ticks.get() + 1); });
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  weft::channel<int> ch;
  for (int k = 0; k < 4; ++k)
    weft::spawn([&] {
      for (int i = 0; i < 2000; ++i) {
        // What the writer did decides the switch point and the write; with `breach`, so does a plain
        // global that the tasklets increment.
        if ((ticks.get() + (breach ? breach_counter.fetch_add(1, std::memory_order_relaxed) + 1 : 0)) % 2) {
          odd.set(odd.get() + 1);
          weft::schedule();
        } else {
          ch.send(i);
        }
      }
    });
  weft::spawn([&] {
    for (;;) ch.receive();
  });
  weft::run();
  stop = true;
  writer.join();
  weft::print("done\n");  // (the counts depend on the writer's timing: not printed)
  return 0;
}

// A program's own printing helper that forwards its format string to weft::print.
template <class... A>
void say(fmt::format_string<A...> format, A&&... args) {
  weft::print(format, std::forward<A>(args)...);
}

int plain_map() {
  std::map<std::string, std::vector<int>> subscribers;  // plain state the broker writes: outside the contract
  weft::channel<std::pair<std::string, int>> subscribe;
  weft::tasklet broker = weft::spawn([&] {
    for (int i = 0; i < 6; ++i) {
      auto [topic, id] = subscribe.receive();
      subscribers[topic].push_back(id);
    }
  });
  broker.set_name("broker");
  for (int i = 0; i < 6; ++i) subscribe.send({i % 2 ? "news" : "sport", i});
  weft::run();
  const std::string line = "{}: {} subscribers\n";  // (a format known at run time: fmt::runtime)
  for (const auto& [topic, ids] : subscribers) weft::print(fmt::runtime(line), topic, ids.size());
  say("{} topics\n", subscribers.size());
  return 0;
}

int intents() {
  weft::tasklet dead = weft::spawn([] {});
  weft::run();
  weft::spawn([dead]() mutable {
    weft::print("inserter a\n");
    try {
      dead.insert();
    } catch (const std::logic_error& e) {
      weft::print("caught: {}\n", e.what());
    }
    weft::print("inserter b\n");
  });
  weft::run();
  for (const bool kill : {true, false}) {
    weft::tasklet victim = weft::spawn([] {
      try {
        for (int i = 0; i < 5; ++i) weft::schedule();
      } catch (const weft::tasklet_exit&) {
        weft::print("victim killed\n");
        throw;
      } catch (const std::runtime_error& e) {
        weft::print("victim got: {}\n", e.what());
      }
    });
    weft::spawn([victim, kill]() mutable {
      weft::print("attacker a\n");
      if (kill)
        victim.kill();
      else
        victim.raise_exception(std::make_exception_ptr(std::runtime_error("raised")));
      weft::print("attacker b\n");
    });
    weft::run();
  }
  weft::print("end\n");
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "nodes") return nodes();
  if (argc > 1 && std::string(argv[1]) == "intents") return intents();
  if (argc > 1 && std::string(argv[1]) == "plain_map") return plain_map();
  if (argc > 1 && std::string(argv[1]) == "branch") return branch();
  if (argc > 1 && std::string(argv[1]) == "lines") return lines();
  if (argc > 1 && std::string(argv[1]) == "plain_thread") return plain_thread(argc > 2);
  return plain_global();
}
