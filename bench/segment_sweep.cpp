// bench/segment_sweep.cpp — how long must a segment be for ordered mode to pay (issue 10, DESIGN.md
// §4.7.10)? A ring of T tasklets, each doing W nanoseconds of private arithmetic per segment, then
// schedule(), S times. Run it at one worker (serial) and at two (ordered, WEFT_GUARD=0) and divide:
// the prototype's fit was speedup = 2s / (s + 0.57 us) for segment length s.
//
//   weft_segment_sweep --calibrate             prints the ns one work step takes here
//   weft_segment_sweep TASKLETS SEGMENTS STEPS  prints {"tasklets":T,"segments":S,"steps":N,"total_ms":...,"checksum":...}
//
// The work is a dependent chain of integer multiplies, STEPS per segment (bench/ordered.sh converts
// microseconds to steps with --calibrate once), so every worker count does the same steps and the
// checksum (sum of the tasklets' results, sent to main) must be the same.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <weft/weft.hpp>

namespace {
[[gnu::noinline]] std::uint64_t work(std::uint64_t x, std::uint64_t steps) {
  for (std::uint64_t i = 0; i < steps; ++i) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  return x;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--calibrate") {
    const std::uint64_t probe = 50'000'000;
    const auto c0 = std::chrono::steady_clock::now();
    volatile std::uint64_t sink = work(1, probe);
    (void)sink;
    std::printf("%.4f\n",
                std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - c0).count() / double(probe));
    return 0;
  }
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s TASKLETS SEGMENTS STEPS | --calibrate\n", argv[0]);
    return 2;
  }
  const int tasklets = std::atoi(argv[1]);
  const int segments = std::atoi(argv[2]);
  const auto steps = static_cast<std::uint64_t>(std::strtoull(argv[3], nullptr, 10));

  weft::channel<std::uint64_t> results;
  const auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < tasklets; ++t) {
    weft::spawn([&, t] {
      std::uint64_t x = static_cast<std::uint64_t>(t) + 1;
      for (int s = 0; s < segments; ++s) {
        x = work(x, steps);
        weft::schedule();
      }
      results.send(x);
    });
  }
  std::uint64_t checksum = 0;
  for (int t = 0; t < tasklets; ++t) checksum += results.receive();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"tasklets\":%d,\"segments\":%d,\"steps\":%llu,\"total_ms\":%.3f,\"checksum\":%llu}\n", tasklets,
              segments, static_cast<unsigned long long>(steps), ms, static_cast<unsigned long long>(checksum));
  return 0;
}
