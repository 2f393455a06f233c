// Raw Boost.Context peer for weft's microthread benchmarks (bench/compare.sh): the floor.
//
// What it measures: the bare cost of a stack switch with boost::context::detail::make_fcontext /
// jump_fcontext (Boost 1.74), with no scheduler, no run queue and no channel. Every context runs on a
// stack of peers::kStackBytes (64 KiB, weft's tasklet stack) carved from ONE mmap(MAP_NORESERVE)
// region (one mapping per stack would hit vm.max_map_count = 65,530). Workloads as defined in
// ../shared/ANCHORS.md ("Microthread runtimes"), where this column is "raw fcontext":
//
//   yield      main and one context jump back and forth; N jumps in total (default 10,000,000; an odd N
//              is rounded down). ns_per_op = ns per switch; checksum = number of jumps (= N).
//   spawn      N contexts (default 1,000,000), each made on its own stack, jumped into once and jumping
//              straight back (= "blocked"). ns_per_op = ns per context made + entered + parked;
//              bytes_per_task = VmRSS delta / N (includes the 8-byte handle main keeps per context, the
//              analogue of a channel's wait list); teardown_ms = resume each once so it finishes, then
//              munmap the region. checksum = number of contexts that finished (= N).
//   hackysack  K contexts (default 1,000) and P passes (N, default 1,000,000) as in ANCHORS: main sends
//              ball 0 to task 0; the holder computes nb = ball + 1, stops at nb == P, else picks
//              t = xorshift64() % K (t == self -> (t + 1) % K), adds t to the checksum and "sends" nb to
//              t by jumping straight into t's context with nb as the transfer data (direct hand-off, no
//              queue). xorshift64: x ^= x << 13; x ^= x >> 7; x ^= x << 17, seed 88172645463325252.
//              Checksums: K=1,000 -> 499382756, K=100,000 -> 50011331750. total_ms covers the mmap, making
//              the K contexts and all passes; teardown_ms = resume each context once with a stop value so
//              it finishes, then munmap.
//   pingpong and sieve are not implemented here (they need a channel); the program exits with status 3.
//
// Usage: fcontext_workloads WORKLOAD [N] [K]; prints one JSON line (see ../common/peer_common.hpp).
// Timing: steady_clock around the workload only.
//
// Protocol of a jump: jump_fcontext(to, data) suspends the caller and resumes `to`; the resumed side gets
// {fctx of the suspended caller, data}. Whoever resumes must store that fctx in the caller's slot, so a
// jump is always preceded by recording who is jumping (prev) and where to (cur).
#include <boost/context/detail/fcontext.hpp>

#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <vector>

#include "../common/peer_common.hpp"

namespace {

namespace ctxd = boost::context::detail;
using peers::now_ns;
using peers::result;

constexpr const char* kWorkloads = "yield|spawn|hackysack";

// One MAP_NORESERVE region holding `count` stacks of kStackBytes; pages are committed on first touch.
class stack_region {
public:
    explicit stack_region(std::uint64_t count) : bytes_(count * peers::kStackBytes) {
        void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (p == MAP_FAILED) {
            std::perror("mmap");
            std::exit(1);
        }
        base_ = static_cast<char*>(p);
    }
    ~stack_region() { release(); }
    stack_region(const stack_region&) = delete;
    stack_region& operator=(const stack_region&) = delete;

    // Stacks grow down: make_fcontext takes the top address.
    void* top(std::uint64_t i) const { return base_ + (i + 1) * peers::kStackBytes; }
    void release() {
        if (base_) munmap(base_, bytes_);
        base_ = nullptr;
    }

private:
    std::size_t bytes_;
    char* base_ = nullptr;
};

ctxd::fcontext_t make_context(const stack_region& r, std::uint64_t i, void (*fn)(ctxd::transfer_t)) {
    return ctxd::make_fcontext(r.top(i), peers::kStackBytes, fn);
}

void* as_data(std::uint64_t v) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(v)); }
std::uint64_t from_data(void* p) { return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(p)); }

// ---- yield ----------------------------------------------------------------------------------------

struct yield_state {
    std::uint64_t jumps = 0;
    bool stop = false;
};
yield_state g_yield;

void yield_entry(ctxd::transfer_t t) {
    for (;;) {
        ++g_yield.jumps;  // the jump that brought us here
        if (g_yield.stop) break;
        t = ctxd::jump_fcontext(t.fctx, nullptr);
    }
    ctxd::jump_fcontext(t.fctx, nullptr);  // final: never resumed
}

result yield_bench(std::uint64_t n) {
    stack_region region(1);
    const std::uint64_t rounds = n / 2;
    ctxd::fcontext_t other = make_context(region, 0, yield_entry);
    const std::int64_t start = now_ns();
    for (std::uint64_t i = 0; i < rounds; ++i) {
        other = ctxd::jump_fcontext(other, nullptr).fctx;
        ++g_yield.jumps;  // the jump back to main
    }
    const std::int64_t total = now_ns() - start;
    const std::uint64_t jumps = g_yield.jumps;
    g_yield.stop = true;
    ctxd::jump_fcontext(other, nullptr);
    return {"yield", n, 0, total, jumps, 0, 0};
}

// ---- spawn ----------------------------------------------------------------------------------------

struct spawn_state {
    std::uint64_t blocked = 0;
    std::uint64_t finished = 0;
};
spawn_state g_spawn;

void spawn_entry(ctxd::transfer_t t) {
    ++g_spawn.blocked;
    t = ctxd::jump_fcontext(t.fctx, nullptr);  // park: back to the spawner
    ++g_spawn.finished;
    ctxd::jump_fcontext(t.fctx, nullptr);  // final: never resumed
}

result spawn_bench(std::uint64_t n) {
    std::vector<ctxd::fcontext_t> parked;
    parked.reserve(n);
    const std::int64_t rss_before = peers::rss_bytes();

    const std::int64_t start = now_ns();
    stack_region region(n);
    for (std::uint64_t i = 0; i < n; ++i) {
        ctxd::fcontext_t c = make_context(region, i, spawn_entry);
        parked.push_back(ctxd::jump_fcontext(c, nullptr).fctx);
    }
    const std::int64_t total = now_ns() - start;
    const std::int64_t rss_after = peers::rss_bytes();

    const std::int64_t tstart = now_ns();
    for (ctxd::fcontext_t c : parked) ctxd::jump_fcontext(c, nullptr);
    region.release();
    const std::int64_t teardown = now_ns() - tstart;
    return {"spawn", n, 0, total, g_spawn.finished, double(rss_after - rss_before) / double(n), teardown};
}

// ---- hackysack (direct jumps) ----------------------------------------------------------------------

constexpr std::uint64_t kStopBall = ~std::uint64_t{0};

struct hackysack_state {
    std::vector<ctxd::fcontext_t> ctx;  // K task contexts, then main's at index K
    std::uint64_t k = 0, p = 0;
    std::uint64_t prev = 0, cur = 0;  // who jumped last, who runs now (index K = main)
    std::uint64_t rng = peers::kXorshiftSeed;
    std::uint64_t checksum = 0;
    std::uint64_t finished = 0;

    // Record the jump and make it; on resumption store the suspended jumper and return the ball.
    std::uint64_t jump(std::uint64_t from, std::uint64_t to, std::uint64_t ball) {
        prev = from;
        cur = to;
        ctxd::transfer_t r = ctxd::jump_fcontext(ctx[to], as_data(ball));
        ctx[prev] = r.fctx;
        return from_data(r.data);
    }
};
hackysack_state g_hs;

void hackysack_entry(ctxd::transfer_t t) {
    hackysack_state& s = g_hs;
    s.ctx[s.prev] = t.fctx;
    const std::uint64_t self = s.cur;
    std::uint64_t ball = from_data(t.data);
    while (ball != kStopBall) {
        const std::uint64_t nb = ball + 1;
        std::uint64_t to = s.k;  // main, when the game is over
        if (nb != s.p) {
            to = peers::xorshift64(s.rng) % s.k;
            if (to == self) to = (to + 1) % s.k;
            s.checksum += to;
        }
        ball = s.jump(self, to, nb);
    }
    ++s.finished;
    s.prev = self;
    s.cur = s.k;
    ctxd::jump_fcontext(s.ctx[s.k], nullptr);  // final: never resumed
}

result hackysack_bench(std::uint64_t p, std::uint64_t k) {
    hackysack_state& s = g_hs;
    s.k = k;
    s.p = p;
    const std::int64_t start = now_ns();
    stack_region region(k);
    s.ctx.resize(k + 1);
    for (std::uint64_t i = 0; i < k; ++i) s.ctx[i] = make_context(region, i, hackysack_entry);
    s.jump(k, 0, 0);  // returns when the holder of ball P jumps back
    const std::int64_t total = now_ns() - start;

    const std::int64_t tstart = now_ns();
    for (std::uint64_t i = 0; i < k; ++i) s.jump(k, i, kStopBall);
    region.release();
    const std::int64_t teardown = now_ns() - tstart;
    return {"hackysack", p, k, total, s.checksum, 0, teardown};
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) peers::usage(argv[0], kWorkloads);
    const std::string w = argv[1];
    auto arg = [&](int i, std::uint64_t def) { return peers::arg_or(argc, argv, i, def, kWorkloads); };
    result r;
    if (w == "yield") {
        r = yield_bench(arg(2, peers::kDefaultYieldSwitches));
    } else if (w == "spawn") {
        r = spawn_bench(arg(2, peers::kDefaultSpawnTasks));
    } else if (w == "hackysack") {
        const std::uint64_t k = arg(3, peers::kDefaultHackysackTasks);
        if (k < 2) peers::usage(argv[0], kWorkloads);
        r = hackysack_bench(arg(2, peers::kDefaultHackysackPasses), k);
    } else if (w == "pingpong" || w == "sieve") {
        std::fprintf(stderr, "%s: workload '%s' needs a channel; not part of the raw fcontext floor\n", argv[0],
                     w.c_str());
        return 3;
    } else {
        peers::usage(argv[0], kWorkloads);
    }
    peers::print_json("fcontext", r);
    return 0;
}
