// bench/weft_workloads.cpp — weft's side of the microthread comparison (bench/compare.sh).
//
// Runs one workload of ../shared/ANCHORS.md ("Microthread runtimes") with weft on one worker and
// prints exactly one JSON line on stdout, with the same command line and fields as the peers in
// bench/peers/ (Go, Boost.Fiber, raw fcontext), so compare.sh can put them side by side:
//
//   weft_workloads WORKLOAD [N] [K]
//   {"impl":"weft","workload":...,"n":...,"k":...,"ns_per_op":...,"total_ms":...,"checksum":...,
//    "bytes_per_task":...,"teardown_ms":...,"stack_bytes":...,"build":...,"cxxflags":...,"sanitize":...,
//    "compiler":...}
//
// build, cxxflags and sanitize: how this binary and weft were compiled (bench/CMakeLists.txt defines
// them); stack_bytes: the tasklet stack size in force. Tasklets run on weft's default stack
// (weft::options::stack_size, 64 KiB), which is also the peers' (peers::kStackBytes; static_assert
// below); WEFT_STACK_SIZE in the environment would change it, which is why compare.sh scrubs WEFT_*.
//
//   yield      2 tasklets calling weft::schedule(), main in weft::run(); N switches in total (default
//              10,000,000). ns_per_op = ns per switch; checksum = number of schedule() calls (= N).
//   pingpong   main sends i on one channel, a partner tasklet answers i + 1 on another; N round trips
//              (default 1,000,000). ns_per_op = ns per round trip; checksum = N(N+1)/2.
//   spawn      N tasklets (default 1,000,000), each blocking in receive() on ONE shared channel; timed
//              until weft::run() returns, i.e. all are blocked. ns_per_op = ns per tasklet spawned and
//              blocked; bytes_per_task = VmRSS delta / N; teardown_ms = weft::shutdown(), which kills them
//              all (each unwinds) and takes their stacks back; checksum = tasklets that ended (= N).
//   sieve      Go's prime sieve (generator + one filter tasklet per prime, chained by channels), first N
//              primes (default 2,000); checksum = their sum (16274627). teardown_ms = weft::shutdown()
//              killing the chain.
//   hackysack  K tasklets (default 1,000) each blocked receiving on its own channel; main sends ball 0 to
//              tasklet 0; the holder computes nb = ball + 1, stops at nb == P (P = N, default 1,000,000),
//              else picks t = xorshift64() % K (t == self -> (t + 1) % K), adds t to the checksum and
//              sends nb to t. Checksums: K=1,000 -> 499382756, K=100,000 -> 50011331750. total_ms covers
//              making the K channels and tasklets plus all passes (as the peers); teardown_ms =
//              weft::shutdown() killing the K tasklets.
//
// Channels keep their default preference -1 (a send switches straight to the waiting receiver). Timing:
// std::chrono::steady_clock around the workload only. Tasklets share plain variables (counters, the
// generator): fine with one worker, which is all these workloads measure.
//
// Exit status: 0; 1 if the run went wrong (a tasklet or stack survived weft::shutdown(), or not every
// spawned tasklet blocked): the JSON line is still printed, and the message is on stderr; 2 usage.
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <weft/weft.hpp>

#include "peers/common/peer_common.hpp"

namespace {

constexpr const char* workloads = "yield|pingpong|spawn|sieve|hackysack";
constexpr std::uint64_t xorshift_seed = peers::kXorshiftSeed;
static_assert(weft::options{}.stack_size == peers::kStackBytes,
              "weft's default tasklet stack and the peers' stack must be the same size");

// Set when the run went wrong in a way its checksum does not show; main() then exits with status 1.
bool run_failed = false;

// The run's plumbing (clock, RSS probe, command line, JSON line) is the peers' own, so that every
// implementation is measured and reported the same way.
using peers::now_ns;
using peers::result;
using peers::rss_bytes;
using peers::xorshift64;

// Times weft::shutdown(); fails the run if a tasklet or a stack survived it.
std::int64_t timed_shutdown() {
  const std::int64_t start = now_ns();
  const weft::resource_counts left = weft::shutdown();
  const std::int64_t took = now_ns() - start;
  if (left.live_tasklets != 0 || left.stacks_in_use != 0) {
    std::fprintf(stderr, "weft_workloads: tasklets left after shutdown: %zu (stacks in use: %zu)\n",
                 left.live_tasklets, left.stacks_in_use);
    run_failed = true;
  }
  return took;
}

// Counts the tasklets that ended, however they ended (returned or unwound by a kill). A tvar, not a
// plain counter: with workers > 1 the tasklets' segments (their kills' unwinding included) may run
// on two threads at once and may be rolled back and run again (weft's memory contract, README).
struct count_on_exit {
  weft::tvar<std::uint64_t>& ended;
  ~count_on_exit() { ended.set(ended.get() + 1); }
};

result yield_bench(std::uint64_t n) {
  std::uint64_t calls[2] = {0, 0};
  const std::uint64_t counts[2] = {n - n / 2, n / 2};
  const std::int64_t start = now_ns();
  for (int i = 0; i < 2; ++i) {
    weft::spawn([&, i] {
      for (std::uint64_t c = 0; c < counts[i]; ++c) {
        weft::schedule();
        ++calls[i];
      }
    });
  }
  weft::run();
  const std::int64_t total = now_ns() - start;
  timed_shutdown();
  return {"yield", n, 0, total, calls[0] + calls[1], 0, 0};
}

result pingpong_bench(std::uint64_t n) {
  weft::channel<std::uint64_t> ping, pong;
  std::uint64_t sum = 0;
  const std::int64_t start = now_ns();
  weft::spawn([&] {
    for (;;) pong.send(ping.receive() + 1);
  });
  for (std::uint64_t i = 0; i < n; ++i) {
    ping.send(i);
    sum += pong.receive();
  }
  const std::int64_t total = now_ns() - start;
  timed_shutdown();  // kills the partner, blocked in ping.receive()
  return {"pingpong", n, 0, total, sum, 0, 0};
}

result spawn_bench(std::uint64_t n) {
  weft::channel<std::uint64_t> ch;
  weft::tvar<std::uint64_t> ended{0};
  const std::int64_t rss_before = rss_bytes();

  const std::int64_t start = now_ns();
  for (std::uint64_t i = 0; i < n; ++i) {
    weft::spawn([&] {
      count_on_exit guard{ended};
      ch.receive();  // blocks until shutdown kills it
    });
  }
  weft::run();  // runs each new tasklet up to its receive(); returns when none is runnable
  const std::int64_t total = now_ns() - start;
  const std::int64_t rss_after = rss_bytes();
  // The channel's balance counts its blocked receivers (negative): main reads it after run().
  const auto blocked = static_cast<std::uint64_t>(-ch.balance());
  if (blocked != n) {
    std::fprintf(stderr, "weft_workloads: only %" PRIu64 " of %" PRIu64 " blocked\n", blocked, n);
    run_failed = true;
  }

  const std::int64_t teardown = timed_shutdown();
  return {"spawn", n, 0, total, ended.get(), double(rss_after - rss_before) / double(n), teardown};
}

void sieve_generate(weft::channel<std::uint64_t> out) {
  for (std::uint64_t i = 2;; ++i) out.send(i);
}

void sieve_filter(weft::channel<std::uint64_t> in, weft::channel<std::uint64_t> out, std::uint64_t prime) {
  for (;;) {
    const std::uint64_t v = in.receive();
    if (v % prime != 0) out.send(v);
  }
}

result sieve_bench(std::uint64_t n) {
  std::uint64_t sum = 0;
  const std::int64_t start = now_ns();
  weft::channel<std::uint64_t> end_of_chain;
  weft::spawn([out = end_of_chain] { sieve_generate(out); });
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint64_t prime = end_of_chain.receive();
    sum += prime;
    weft::channel<std::uint64_t> next;
    weft::spawn([in = end_of_chain, out = next, prime] { sieve_filter(in, out, prime); });
    end_of_chain = next;
  }
  const std::int64_t total = now_ns() - start;
  end_of_chain = {};  // drop main's handle so that teardown frees every channel
  const std::int64_t teardown = timed_shutdown();
  return {"sieve", n, 0, total, sum, 0, teardown};
}

result hackysack_bench(std::uint64_t passes, std::uint64_t k) {
  // rng and checksum are touched only by the ball's holder; one worker, so plain variables.
  std::uint64_t rng = xorshift_seed;
  std::uint64_t checksum = 0;

  const std::int64_t start = now_ns();
  std::vector<weft::channel<std::uint64_t>> inbox(k);
  weft::channel<std::uint64_t> done;
  for (std::uint64_t i = 0; i < k; ++i) {
    weft::spawn([&, self = i] {
      for (;;) {
        const std::uint64_t nb = inbox[self].receive() + 1;
        if (nb == passes) {
          done.send(nb);
          continue;
        }
        std::uint64_t t = xorshift64(rng) % k;
        if (t == self) t = (t + 1) % k;
        checksum += t;
        inbox[t].send(nb);
      }
    });
  }
  inbox[0].send(0);
  done.receive();
  const std::int64_t total = now_ns() - start;

  const std::int64_t teardown = timed_shutdown();
  return {"hackysack", passes, k, total, checksum, 0, teardown};
}

[[noreturn]] void usage(const char* prog) { peers::usage(prog, workloads); }
std::uint64_t arg_or(int argc, char** argv, int i, std::uint64_t def) {
  return peers::arg_or(argc, argv, i, def, workloads);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) usage(argv[0]);
  const std::string w = argv[1];
  result r;
  if (w == "yield") {
    r = yield_bench(arg_or(argc, argv, 2, 10'000'000));
  } else if (w == "pingpong") {
    r = pingpong_bench(arg_or(argc, argv, 2, 1'000'000));
  } else if (w == "spawn") {
    r = spawn_bench(arg_or(argc, argv, 2, 1'000'000));
  } else if (w == "sieve") {
    r = sieve_bench(arg_or(argc, argv, 2, 2'000));
  } else if (w == "hackysack") {
    const std::uint64_t k = arg_or(argc, argv, 3, 1'000);
    if (k < 2) usage(argv[0]);
    r = hackysack_bench(arg_or(argc, argv, 2, 1'000'000), k);
  } else {
    usage(argv[0]);
  }
  peers::print_json("weft", r, weft::configuration().stack_size);
  return run_failed ? 1 : 0;
}
