// samples/pingpong.cpp — two tasklets bat a number back and forth over two channels.
//
// Usage: weft_sample_pingpong [N] [--verbose]      (default N = 1000000 round trips)
//
// `ping` sends i = 0 .. N-1 on one channel; `pong` answers i + 1 on the other; ping adds up the
// answers. Main only starts them (weft::run()) and waits until both have ended. With --verbose every
// exchange is printed, in the order the tasklets run (SEMANTICS.md §2: a send with the default
// preference -1 switches straight to a waiting receiver).
//
// Output (stdout, deterministic): the number of round trips and `checksum: <sum of answers>` =
// N(N+1)/2. The elapsed time goes to stderr.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <weft/weft.hpp>

namespace {

[[noreturn]] void usage(const char* prog) {
  std::fprintf(stderr, "usage: %s [N round trips >= 1] [--verbose]\n", prog);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  long rounds = 1000000;
  bool verbose = false;
  bool given = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--verbose") == 0) {
      verbose = true;
      continue;
    }
    char* end = nullptr;
    rounds = std::strtol(argv[i], &end, 10);
    if (given || end == argv[i] || *end != '\0' || rounds < 1) usage(argv[0]);
    given = true;
  }

  weft::channel<long> to_pong;
  weft::channel<long> to_ping;
  // Ping's running sum lives on its stack; it hands the total to main through a tvar (DESIGN.md §5:
  // a tasklet writes shared state only through weft's transactional types).
  weft::tvar<std::uint64_t> sum{0};

  weft::spawn([&] {
    std::uint64_t total = 0;
    for (long i = 0; i < rounds; ++i) {
      if (verbose) weft::print("ping sends {}\n", i);
      to_pong.send(i);
      const long answer = to_ping.receive();
      if (verbose) weft::print("ping got {}\n", answer);
      total += static_cast<std::uint64_t>(answer);
    }
    sum.set(total);
    to_pong.send(-1);  // game over
  });
  weft::spawn([&] {
    for (;;) {
      const long v = to_pong.receive();
      if (v < 0) break;
      if (verbose) weft::print("pong got {}, answers {}\n", v, v + 1);
      to_ping.send(v + 1);
    }
  });

  const auto start = std::chrono::steady_clock::now();
  weft::run();  // returns when both tasklets have ended
  const auto stop = std::chrono::steady_clock::now();

  weft::print("round trips: {}\n", rounds);
  weft::print("tasklets left: {}\n", weft::resources().live_tasklets);
  weft::print("checksum: {}\n", sum.get());
  const double ms = std::chrono::duration<double, std::milli>(stop - start).count();
  fmt::print(stderr, "time: {:.1f} ms ({:.1f} ns per round trip)\n", ms, ms * 1e6 / double(rounds));
  weft::shutdown();
  return 0;
}
