// std::exit from a tasklet and from main while other tasklets are in flight (issue 10: "std::exit
// from a tasklet running on a worker thread does not crash in static destruction"). Run with
// WEFT_WORKERS=2 (and abort injection) the output must be the serial one: every line that serial
// order prints before the exit, nothing after it, and the exit status given to std::exit.
//
//   weft_exit_child tasklet   tasklet 2 calls std::exit(3) in its second segment
//   weft_exit_child main      main calls std::exit(4) while tasklets still run
//   weft_exit_child in_block  as `tasklet`, but the exit comes inside an atomically block that
//                             registered an on_commit hook: the block never commits, so the hook
//                             never runs (round 8: it ran in every ordered mode)
//   weft_exit_child main_in_block
//                             main calls std::exit(5) inside an atomically block while a tasklet
//                             waits on a channel: nothing can switch to it, so it is left as it is,
//                             quietly (round 8: four "switch point inside atomically" warnings and
//                             "refused to die")
//   weft_exit_child main_returns
//                             main returns after its last receive while the senders are runnable:
//                             serial order never runs what follows their sends (the shutdown kills
//                             them), a loop that never ends; a speculative run of it must stop when
//                             the kill dooms it (round 13: the shutdown waited for it forever)
//   weft_exit_child main_exits_after_sends
//                             the same, but main calls std::exit(6): the exit waits for the other
//                             threads to reach a switch point, which that loop never does
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <weft/weft.hpp>

namespace {

// Long enough that the other segments are in flight on the other thread when the exit comes.
std::uint64_t spin(std::uint64_t seed) {
  std::uint64_t x = seed;
  for (int i = 0; i < 200000; ++i) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  return x;
}

// A static with a destructor that prints: it must run once, after every line of the run.
struct at_exit_line {
  ~at_exit_line() { std::fputs("static destructor ran\n", stdout); }
} last_line;

weft::tvar<std::uint64_t> total{0};

}  // namespace

bool forever = true;  // never written

// A new string each call (not elided: std::string's allocator calls operator new).
__attribute__((noinline)) std::size_t make_some(std::size_t n) {
  std::string s(n, 'x');
  return s.size();
}

struct unwound_line {
  ~unwound_line() { weft::print("tasklet unwound\n"); }
};

int main(int argc, char** argv) {
  if (argc > 1 && (std::strcmp(argv[1], "main_returns") == 0 || std::strcmp(argv[1], "main_exits_after_sends") == 0)) {
    const bool exits = std::strcmp(argv[1], "main_exits_after_sends") == 0;
    // Several senders: endless segments then run ahead on both threads, while main waits for the
    // main thread, or a finished head for the thread that ran it (1-4 hangs in 30-40 runs before
    // those threads' segments were stopped too).
    weft::channel<int> results;
    const int senders = 6;
    for (int i = 0; i < senders; ++i)
      weft::spawn([results, i]() mutable {
        results.send(i);
        std::size_t made = 0;
        while (forever) made += make_some(100);
        weft::print("never printed {}\n", made);
      });
    int sum = 0;
    for (int i = 0; i < senders; ++i) sum += results.receive();
    std::uint64_t x = 0;
    for (int k = 0; k < 40; ++k) x ^= spin(k);  // ~10 ms: the other thread runs what follows the sends
    weft::print("main {}, sum {}, {}\n", exits ? "exits" : "returns", sum, x & 1);
    if (exits) std::exit(6);
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "main_in_block") == 0) {
    weft::channel<int> never;
    weft::spawn([never]() mutable {
      unwound_line u;
      never.receive();
    });
    weft::run();
    weft::atomically([] {
      total.set(7);
      weft::print("main exits inside a block\n");
      std::exit(5);
    });
  }
  const bool from_main = argc > 1 && std::strcmp(argv[1], "main") == 0;
  const bool in_block = argc > 1 && std::strcmp(argv[1], "in_block") == 0;
  for (int i = 0; i < 6; ++i) {
    weft::spawn([i, from_main, in_block] {
      for (int round = 0; round < 3; ++round) {
        const std::uint64_t x = spin(static_cast<std::uint64_t>(i * 10 + round));
        weft::atomically([&] { total.set(total.get() + (x & 0xff)); });
        weft::print("tasklet {} round {}\n", i, round);
        if (!from_main && i == 2 && round == 1) {
          weft::print("tasklet 2 exits, total {}\n", weft::atomically([] { return total.get(); }));
          if (in_block)
            weft::atomically([] {
              weft::on_commit([] { weft::print("on_commit of a block that never ended\n"); });
              std::exit(3);
            });
          std::exit(3);
        }
        weft::schedule();
      }
    });
  }
  if (from_main) {
    weft::schedule();  // every tasklet runs its first round
    weft::print("main exits, total {}\n", total.get());
    std::exit(4);
  }
  weft::run();
  weft::print("not reached\n");
  return 0;
}
