// Shared plumbing for the C++ peers of weft's microthread benchmarks (fiber/, fcontext/).
//
// Owns only what every peer program needs around a workload and nothing of the workloads themselves:
// the command line `prog WORKLOAD [N] [K]`, the monotonic clock, the resident-set probe, the stack size
// and the one JSON line each run prints on stdout:
//   {"impl":...,"workload":...,"n":...,"k":...,"ns_per_op":...,"total_ms":...,"checksum":...,
//    "bytes_per_task":...,"teardown_ms":...,"stack_bytes":65536,"build":"Release",
//    "cxxflags":"-O3 -DNDEBUG","sanitize":"","compiler":"gcc 12.2.0"}
// ns_per_op = total / n. build, cxxflags and sanitize are the CMake build type, the flags of that build
// type and WEFT_SANITIZE the program was compiled with (WEFT_BENCH_BUILD_TYPE, WEFT_BENCH_CXXFLAGS,
// WEFT_BENCH_SANITIZE, defined by bench/CMakeLists.txt and bench/peers/CMakeLists.txt), so that
// bench/compare.sh can check that every implementation was compiled alike and refuse a debug or
// sanitizer weft. The workload definitions live in ../shared/ANCHORS.md and in the header of each
// peer's workloads.cpp. Header-only; single-threaded programs only.
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
// Per-task stack of every C++ implementation: weft's default tasklet stack (weft::options::stack_size,
// 64 KiB; weft_workloads static_asserts the two are equal). The workloads measure weft as its users get
// it, so the peers run on the same size rather than weft on the peers' usual 16 KiB (ANCHORS.md's peer
// numbers were taken with 16 KiB). Every stack here is reserved, not committed: a task costs the pages
// it touches. Go cannot be told: its goroutine stacks start small and grow.
inline constexpr std::size_t kStackBytes = 64 * 1024;

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

#ifndef WEFT_BENCH_BUILD_TYPE
#define WEFT_BENCH_BUILD_TYPE "unknown"
#endif
#ifndef WEFT_BENCH_CXXFLAGS
#define WEFT_BENCH_CXXFLAGS "unknown"
#endif
#ifndef WEFT_BENCH_SANITIZE
#define WEFT_BENCH_SANITIZE "unknown"
#endif
#if defined(__clang__)
inline constexpr const char* kCompiler = "clang " __clang_version__;
#elif defined(__GNUC__)
inline constexpr const char* kCompiler = "gcc " __VERSION__;
#else
inline constexpr const char* kCompiler = "unknown";
#endif

// s as the body of a JSON string (quotes and backslashes escaped; the flags are plain ASCII).
inline std::string json_escaped(const char* s) {
    std::string out;
    for (; *s; ++s) {
        if (*s == '"' || *s == '\\') out += '\\';
        out += *s;
    }
    return out;
}

// stack_bytes: the per-task stack the run used (weft reports its configuration, which the environment
// can change; the peers report kStackBytes).
inline void print_json(const char* impl, const result& r, std::size_t stack_bytes = kStackBytes) {
    std::printf(
        "{\"impl\":\"%s\",\"workload\":\"%s\",\"n\":%" PRIu64 ",\"k\":%" PRIu64
        ",\"ns_per_op\":%.2f,\"total_ms\":%.3f,\"checksum\":%" PRIu64
        ",\"bytes_per_task\":%.1f,\"teardown_ms\":%.3f,\"stack_bytes\":%zu,\"build\":\"%s\""
        ",\"cxxflags\":\"%s\",\"sanitize\":\"%s\",\"compiler\":\"%s\"}\n",
        impl, r.workload.c_str(), r.n, r.k, double(r.total_ns) / double(r.n), double(r.total_ns) / 1e6,
        r.checksum, r.bytes_per_task, double(r.teardown_ns) / 1e6, stack_bytes,
        json_escaped(WEFT_BENCH_BUILD_TYPE).c_str(), json_escaped(WEFT_BENCH_CXXFLAGS).c_str(),
        json_escaped(WEFT_BENCH_SANITIZE).c_str(), json_escaped(kCompiler).c_str());
    std::fflush(stdout);
}

}  // namespace peers
