// samples/sieve.cpp — Go's concurrent prime sieve, a chain of tasklets joined by channels.
//
// Usage: weft_sample_sieve [N]      (default N = 2000 primes)
//
// A generator sends 2, 3, 4, ... into the first channel. Main receives the next prime p from the end
// of the chain, then appends a filter tasklet that passes on only the numbers p does not divide, and
// the filter's output channel becomes the new end. After N primes the chain (the generator and N
// filters, every one blocked in a channel operation or about to be) is still alive: weft::shutdown()
// kills it, which unwinds each tasklet's stack (SEMANTICS.md §6, Shutdown).
//
// Output (stdout, deterministic): the count, the last prime, how many tasklets the chain held, how
// many are left after shutdown (0), and `checksum: <sum of the primes>` (N = 2000: 16274627).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include <weft/weft.hpp>

namespace {

void generate(weft::channel<long> out) {
  for (long i = 2;; ++i) out.send(i);
}

void filter(weft::channel<long> in, weft::channel<long> out, long prime) {
  for (;;) {
    const long v = in.receive();
    if (v % prime != 0) out.send(v);
  }
}

}  // namespace

int main(int argc, char** argv) {
  long count = 2000;
  if (argc > 2) {
    std::fprintf(stderr, "usage: %s [N primes >= 1]\n", argv[0]);
    return 2;
  }
  if (argc == 2) {
    char* end = nullptr;
    count = std::strtol(argv[1], &end, 10);
    if (end == argv[1] || *end != '\0' || count < 1) {
      std::fprintf(stderr, "usage: %s [N primes >= 1]\n", argv[0]);
      return 2;
    }
  }

  const auto start = std::chrono::steady_clock::now();
  weft::channel<long> end_of_chain;
  weft::spawn([out = end_of_chain] { generate(out); });
  std::uint64_t sum = 0;
  long prime = 0;
  for (long i = 0; i < count; ++i) {
    prime = end_of_chain.receive();
    sum += static_cast<std::uint64_t>(prime);
    weft::channel<long> next;
    weft::spawn([in = end_of_chain, out = next, prime] { filter(in, out, prime); });
    end_of_chain = next;
  }

  const auto stop = std::chrono::steady_clock::now();
  const std::size_t chain = weft::resources().live_tasklets;
  const weft::resource_counts after = weft::shutdown();
  weft::print("primes: {}\n", count);
  weft::print("last prime: {}\n", prime);
  weft::print("tasklets in the chain: {}\n", chain);
  weft::print("tasklets left after shutdown: {}\n", after.live_tasklets);
  weft::print("checksum: {}\n", sum);
  std::fprintf(stderr, "time: %.1f ms\n", std::chrono::duration<double, std::milli>(stop - start).count());
  return after.live_tasklets == 0 ? 0 : 1;
}
