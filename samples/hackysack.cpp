// samples/hackysack.cpp — the classic Stackless benchmark: K players kick one ball around.
//
// Usage: weft_sample_hackysack [K] [P] [--verbose]      (defaults K = 10000 players, P = 1000000)
//
// Each player is a tasklet blocked receiving on its own channel. Main sends ball 0 to player 0. The
// holder of ball b computes nb = b + 1; if nb == P the game is over, otherwise it picks the next player
// t = xorshift64() % K (itself -> (t + 1) % K), adds t to a checksum and sends nb to t. At the end the
// holder sends `exit` to every other player in index order (each leaves at once: the channels keep
// their default preference -1, so a send switches straight to the waiting receiver), then leaves
// itself and signals main (SEMANTICS.md §7). With K = 5, P = 5 and --verbose the exit lines are
// p0-exit p1-exit p2-exit p4-exit p3-exit main-got-signal.
//
// The generator state and the checksum travel with the ball instead of living in globals: a player
// touches only its own stack and the message it holds, so the program needs no shared mutable state
// and keeps its output when segments run speculatively in parallel (DESIGN.md §5).
//
// Output: stdout is deterministic and ends with `checksum: <sum of all t>` (K=1000, P=1000000 gives
// 499382756; K=100000 gives 50011331750). The time of the game goes to stderr as `time: <ms> ms`.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <fmt/format.h>
#include <weft/weft.hpp>

namespace {

constexpr std::uint64_t xorshift_seed = 88172645463325252ULL;

std::uint64_t xorshift64(std::uint64_t& x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

// What a player receives: the ball (or -1 = exit) with the game's generator state and checksum.
struct kick {
  long ball;
  std::uint64_t rng;
  std::uint64_t checksum;
};
constexpr long exit_ball = -1;

struct game {
  long players;
  long passes;
  bool verbose;
  std::vector<weft::channel<kick>> inbox;  // one per player; the vector is never written during play
  weft::channel<kick> done;                // the last holder's signal to main
};

void player(game& g, long self) {
  for (;;) {
    kick k = g.inbox[self].receive();
    if (k.ball == exit_ball) {
      if (g.verbose) weft::print("p{}-exit\n", self);
      return;
    }
    const long nb = k.ball + 1;
    if (nb == g.passes) {
      for (long other = 0; other < g.players; ++other)
        if (other != self) g.inbox[other].send(kick{exit_ball, 0, 0});
      if (g.verbose) weft::print("p{}-exit\n", self);
      g.done.send(kick{self, k.rng, k.checksum});  // the ball field names the last holder
      return;
    }
    long t = static_cast<long>(xorshift64(k.rng) % static_cast<std::uint64_t>(g.players));
    if (t == self) t = (t + 1) % g.players;
    k.checksum += static_cast<std::uint64_t>(t);
    g.inbox[t].send(kick{nb, k.rng, k.checksum});
  }
}

[[noreturn]] void usage(const char* prog) {
  std::fprintf(stderr, "usage: %s [K players >= 2] [P passes >= 1] [--verbose]\n", prog);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  long numbers[2] = {10000, 1000000};
  int given = 0;
  bool verbose = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--verbose") == 0) {
      verbose = true;
      continue;
    }
    char* end = nullptr;
    const long v = std::strtol(argv[i], &end, 10);
    if (given == 2 || end == argv[i] || *end != '\0') usage(argv[0]);
    numbers[given++] = v;
  }
  if (numbers[0] < 2 || numbers[1] < 1) usage(argv[0]);

  game g{numbers[0], numbers[1], verbose, {}, {}};
  g.inbox.resize(static_cast<std::size_t>(g.players));
  for (long i = 0; i < g.players; ++i) weft::spawn([&g, i] { player(g, i); });
  weft::run();  // every player runs up to its first receive and blocks there

  weft::print("hackysack: {} players, {} passes\n", g.players, g.passes);
  const auto start = std::chrono::steady_clock::now();
  g.inbox[0].send(kick{0, xorshift_seed, 0});
  const kick last = g.done.receive();
  const auto stop = std::chrono::steady_clock::now();
  if (verbose) weft::print("main-got-signal\n");
  weft::run();  // the last holder returns from its signal and ends

  const std::size_t left = weft::resources().live_tasklets;  // every player has ended: 0
  weft::print("last holder: {}\n", last.ball);
  weft::print("tasklets left: {}\n", left);
  weft::print("checksum: {}\n", last.checksum);
  fmt::print(stderr, "time: {:.1f} ms\n", std::chrono::duration<double, std::milli>(stop - start).count());
  weft::shutdown();
  return left == 0 ? 0 : 1;
}
