// Boost.Fiber peer for weft's microthread benchmarks (bench/compare.sh).
//
// What it measures: Boost.Fiber 1.74 on one thread, round-robin scheduler, every fiber on a
// fixedsize_stack of peers::kStackBytes (64 KiB, weft's tasklet stack; malloc'd, untouched pages stay
// uncommitted), channels = boost::fibers::unbuffered_channel (a push completes only when a consumer has
// taken the value: the rendezvous semantics of Go's and Stackless' unbuffered channels). Workloads as
// defined in ../shared/ANCHORS.md ("Microthread runtimes"):
//
//   yield      2 fibers calling this_fiber::yield(); N switches in total (default 10,000,000).
//              ns_per_op = ns per switch; checksum = number of yield calls (= N).
//   pingpong   main pushes i on one unbuffered channel, a partner fiber answers i+1 on another; N round
//              trips (default 1,000,000). ns_per_op = ns per round trip; checksum = N(N+1)/2.
//   spawn      N fibers (default 1,000,000) each blocking in pop() on ONE shared channel.
//              ns_per_op = ns per fiber to create it and get it blocked; bytes_per_task = VmRSS delta / N;
//              teardown_ms = close the channel, let all N fibers finish and the scheduler release them;
//              checksum = number of fibers that finished (= N).
//   sieve      the classic concurrent prime sieve (generator + one filter fiber per prime, chained by
//              unbuffered channels), first N primes (default 2,000; sum 16274627). checksum = sum.
//              teardown_ms = stop the generator, let a sentinel run down the chain (each fiber forwards
//              it and ends), drain the end of the chain and release all the fibers.
//   hackysack  K fibers (default 1,000) each owning an unbuffered channel; main sends ball 0 to task 0;
//              the holder computes nb = ball + 1, stops at nb == P (P = N, default 1,000,000), else picks
//              t = xorshift64() % K (t == self -> (t + 1) % K), adds t to the checksum and sends nb to t.
//              xorshift64: x ^= x << 13; x ^= x >> 7; x ^= x << 17, seed 88172645463325252.
//              Checksums: K=1,000 -> 499382756, K=100,000 -> 50011331750.
//              total_ms covers creating the K channels and fibers plus all passes; teardown_ms = close all
//              channels, let the K fibers finish and release them.
//
// Usage: fiber_workloads WORKLOAD [N] [K]; prints one JSON line (see ../common/peer_common.hpp).
// Timing: steady_clock around the workload only. Fibers are detached and counted rather than joined so
// that no per-task handle inflates bytes_per_task.
#include <boost/fiber/all.hpp>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "../common/peer_common.hpp"

namespace {

namespace bf = boost::fibers;
using channel = bf::unbuffered_channel<std::uint64_t>;
using peers::now_ns;
using peers::result;

constexpr const char* kWorkloads = "yield|pingpong|spawn|sieve|hackysack";

// fiber_workloads runs on weft's 64 KiB; fiber16k_workloads (the same source) on Boost.Fiber's usual
// 16 KiB fixed-size stacks, the yardstick issue 11 §6 names (fewer pages and cache sets per task).
#ifndef PEERS_FIBER_STACK_BYTES
#define PEERS_FIBER_STACK_BYTES peers::kStackBytes
#define PEERS_FIBER_IMPL "fiber"
#endif
constexpr std::size_t kFiberStackBytes = PEERS_FIBER_STACK_BYTES;

template <class Fn>
bf::fiber make_fiber(Fn&& fn) {
    return bf::fiber(std::allocator_arg, bf::fixedsize_stack(kFiberStackBytes), std::forward<Fn>(fn));
}

template <class Fn>
void spawn_detached(Fn&& fn) {
    make_fiber(std::forward<Fn>(fn)).detach();
}

// Yields until `count` reaches `target`, then lets the dispatcher run once: sleeping with nothing else
// ready switches to the dispatcher fiber, which frees terminated fibers (and their stacks) before it
// wakes us again. Without this the release would happen outside the measured teardown.
void wait_for_count_then_release(const std::uint64_t& count, std::uint64_t target) {
    while (count < target) boost::this_fiber::yield();
    boost::this_fiber::sleep_for(std::chrono::nanoseconds(0));
}

result yield_bench(std::uint64_t n) {
    std::uint64_t calls[2] = {0, 0};
    const std::uint64_t counts[2] = {n - n / 2, n / 2};
    const std::int64_t start = now_ns();
    bf::fiber a = make_fiber([&] {
        for (std::uint64_t i = 0; i < counts[0]; ++i) {
            boost::this_fiber::yield();
            ++calls[0];
        }
    });
    bf::fiber b = make_fiber([&] {
        for (std::uint64_t i = 0; i < counts[1]; ++i) {
            boost::this_fiber::yield();
            ++calls[1];
        }
    });
    a.join();
    b.join();
    const std::int64_t total = now_ns() - start;
    return {"yield", n, 0, total, calls[0] + calls[1], 0, 0};
}

result pingpong_bench(std::uint64_t n) {
    channel ping, pong;
    std::uint64_t sum = 0;
    const std::int64_t start = now_ns();
    bf::fiber partner = make_fiber([&] {
        std::uint64_t v;
        while (ping.pop(v) == bf::channel_op_status::success) {
            if (pong.push(v + 1) != bf::channel_op_status::success) break;
        }
    });
    for (std::uint64_t i = 0; i < n; ++i) {
        ping.push(i);
        std::uint64_t v = 0;
        pong.pop(v);
        sum += v;
    }
    const std::int64_t total = now_ns() - start;
    ping.close();
    partner.join();
    return {"pingpong", n, 0, total, sum, 0, 0};
}

result spawn_bench(std::uint64_t n) {
    channel ch;
    std::uint64_t blocked = 0, finished = 0;
    const std::int64_t rss_before = peers::rss_bytes();

    const std::int64_t start = now_ns();
    for (std::uint64_t i = 0; i < n; ++i) {
        spawn_detached([&] {
            ++blocked;
            std::uint64_t v;
            ch.pop(v);  // blocks until close()
            ++finished;
        });
    }
    // New fibers are queued behind us; one round of the ring runs each to its pop().
    while (blocked < n) boost::this_fiber::yield();
    const std::int64_t total = now_ns() - start;
    const std::int64_t rss_after = peers::rss_bytes();

    const std::int64_t tstart = now_ns();
    ch.close();
    wait_for_count_then_release(finished, n);
    const std::int64_t teardown = now_ns() - tstart;
    return {"spawn", n, 0, total, finished, double(rss_after - rss_before) / double(n), teardown};
}

// Sieve teardown sends a sentinel down the chain instead of closing channels: in Boost 1.74,
// unbuffered_channel::close() wakes a producer whose value is still in the slot but leaves the value
// there, so a consumer that pops it afterwards schedules that producer a second time (and reads the
// slot from its finished frame); the chain always has such pending pushes. 0 is never a candidate.
constexpr std::uint64_t kSieveStop = 0;

result sieve_bench(std::uint64_t n) {
    std::vector<std::unique_ptr<channel>> chain;  // owns every channel of the chain
    chain.reserve(n + 1);
    bool stopping = false;
    std::uint64_t started = 0, finished = 0;
    std::uint64_t sum = 0;

    const std::int64_t start = now_ns();
    chain.push_back(std::make_unique<channel>());
    ++started;
    spawn_detached([out = chain.back().get(), &stopping, &finished] {
        for (std::uint64_t i = 2; !stopping; ++i) out->push(i);
        out->push(kSieveStop);
        ++finished;
    });
    channel* in = chain.back().get();
    for (std::uint64_t i = 0; i < n; ++i) {
        std::uint64_t prime = 0;
        in->pop(prime);
        sum += prime;
        chain.push_back(std::make_unique<channel>());
        channel* out = chain.back().get();
        ++started;
        spawn_detached([in, out, prime, &finished] {
            for (;;) {
                std::uint64_t v = 0;
                in->pop(v);
                if (v == kSieveStop) break;
                if (v % prime != 0) out->push(v);
            }
            out->push(kSieveStop);
            ++finished;
        });
        in = out;
    }
    const std::int64_t total = now_ns() - start;

    // Stop the generator, then drain the end of the chain until the sentinel has passed every filter.
    const std::int64_t tstart = now_ns();
    stopping = true;
    for (std::uint64_t v = 1; v != kSieveStop;) in->pop(v);
    wait_for_count_then_release(finished, started);
    const std::int64_t teardown = now_ns() - tstart;
    return {"sieve", n, 0, total, sum, 0, teardown};
}

result hackysack_bench(std::uint64_t p, std::uint64_t k) {
    // rng and checksum are touched only by the current ball holder; one thread, so plain variables.
    std::uint64_t rng = peers::kXorshiftSeed;
    std::uint64_t checksum = 0, finished = 0;
    std::vector<std::unique_ptr<channel>> chans;
    channel done;

    const std::int64_t start = now_ns();
    chans.reserve(k);
    for (std::uint64_t i = 0; i < k; ++i) chans.push_back(std::make_unique<channel>());
    for (std::uint64_t i = 0; i < k; ++i) {
        spawn_detached([&, self = i] {
            channel& mine = *chans[self];
            std::uint64_t ball;
            while (mine.pop(ball) == bf::channel_op_status::success) {
                const std::uint64_t nb = ball + 1;
                if (nb == p) {
                    done.push(nb);
                    continue;
                }
                std::uint64_t t = peers::xorshift64(rng) % k;
                if (t == self) t = (t + 1) % k;
                checksum += t;
                if (chans[t]->push(nb) != bf::channel_op_status::success) break;
            }
            ++finished;
        });
    }
    chans[0]->push(0);
    std::uint64_t last = 0;
    done.pop(last);
    const std::int64_t total = now_ns() - start;

    const std::int64_t tstart = now_ns();
    for (auto& c : chans) c->close();
    wait_for_count_then_release(finished, k);
    const std::int64_t teardown = now_ns() - tstart;
    return {"hackysack", p, k, total, checksum, 0, teardown};
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) peers::usage(argv[0], kWorkloads);
    bf::use_scheduling_algorithm<bf::algo::round_robin>();
    const std::string w = argv[1];
    auto arg = [&](int i, std::uint64_t def) { return peers::arg_or(argc, argv, i, def, kWorkloads); };
    result r;
    if (w == "yield") {
        r = yield_bench(arg(2, peers::kDefaultYieldSwitches));
    } else if (w == "pingpong") {
        r = pingpong_bench(arg(2, peers::kDefaultPingPongRounds));
    } else if (w == "spawn") {
        r = spawn_bench(arg(2, peers::kDefaultSpawnTasks));
    } else if (w == "sieve") {
        r = sieve_bench(arg(2, peers::kDefaultSievePrimes));
    } else if (w == "hackysack") {
        const std::uint64_t k = arg(3, peers::kDefaultHackysackTasks);
        if (k < 2) peers::usage(argv[0], kWorkloads);
        r = hackysack_bench(arg(2, peers::kDefaultHackysackPasses), k);
    } else {
        peers::usage(argv[0], kWorkloads);
    }
    peers::print_json(PEERS_FIBER_IMPL, r, kFiberStackBytes);
    return 0;
}
