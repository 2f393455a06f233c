// Shared plumbing for the C++ peers of weft's microthread benchmarks (fiber/, fcontext/).
//
// Owns only what every peer program needs around a workload and nothing of the workloads themselves:
// the command line `prog WORKLOAD [N] [K]`, the monotonic clock, the resident-set probe and the one JSON
// line each run prints on stdout:
//   {"impl":...,"workload":...,"n":...,"k":...,"ns_per_op":...,"total_ms":...,"checksum":...,
//    "bytes_per_task":...,"teardown_ms":...}
// ns_per_op = total / n. The workload definitions live in ../shared/ANCHORS.md and in the header of
// each peer's workloads.cpp. Header-only; single-threaded programs only.
#pragma once

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace peers {

// Defaults match ANCHORS.md.
inline constexpr std::uint64_t kDefaultYieldSwitches = 10'000'000;
inline constexpr std::uint64_t kDefaultPingPongRounds = 1'000'000;
inline constexpr std::uint64_t kDefaultSpawnTasks = 1'000'000;
inline constexpr std::uint64_t kDefaultSievePrimes = 2'000;
inline constexpr std::uint64_t kDefaultHackysackPasses = 1'000'000;
inline constexpr std::uint64_t kDefaultHackysackTasks = 1'000;
inline constexpr std::uint64_t kXorshiftSeed = 88172645463325252ULL;
inline constexpr std::size_t kStackBytes = 16 * 1024;  // per-task stack, as in ANCHORS

struct result {
    std::string workload;
    std::uint64_t n = 0;
    std::uint64_t k = 0;
    std::int64_t total_ns = 0;
    std::uint64_t checksum = 0;
    double bytes_per_task = 0;
    std::int64_t teardown_ns = 0;
};

inline std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// The xorshift64 step of the hackysack definition.
inline std::uint64_t xorshift64(std::uint64_t& x) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

// Current resident set size in bytes (VmRSS from /proc/self/status), 0 if unavailable.
inline std::int64_t rss_bytes() {
    std::FILE* f = std::fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    std::int64_t kb = 0;
    while (std::fgets(line, sizeof line, f)) {
        if (std::strncmp(line, "VmRSS:", 6) == 0) {
            kb = std::strtoll(line + 6, nullptr, 10);
            break;
        }
    }
    std::fclose(f);
    return kb * 1024;
}

[[noreturn]] inline void usage(const char* prog, const char* workloads) {
    std::fprintf(stderr, "usage: %s {%s} [N] [K]\n", prog, workloads);
    std::exit(2);
}

// Positional argument i as a positive integer, or def when absent.
inline std::uint64_t arg_or(int argc, char** argv, int i, std::uint64_t def, const char* workloads) {
    if (argc <= i) return def;
    char* end = nullptr;
    unsigned long long v = std::strtoull(argv[i], &end, 10);
    if (end == argv[i] || *end != '\0' || v == 0) usage(argv[0], workloads);
    return v;
}

inline void print_json(const char* impl, const result& r) {
    std::printf(
        "{\"impl\":\"%s\",\"workload\":\"%s\",\"n\":%" PRIu64 ",\"k\":%" PRIu64
        ",\"ns_per_op\":%.2f,\"total_ms\":%.3f,\"checksum\":%" PRIu64
        ",\"bytes_per_task\":%.1f,\"teardown_ms\":%.3f}\n",
        impl, r.workload.c_str(), r.n, r.k, double(r.total_ns) / double(r.n), double(r.total_ns) / 1e6,
        r.checksum, r.bytes_per_task, double(r.teardown_ns) / 1e6);
    std::fflush(stdout);
}

}  // namespace peers
