// bench/stm/main.cpp — weft_stm_bench: throughput of weft's STM against its peers on the workloads of
// issue 4, one run per invocation, one JSON line on stdout.
//
//   weft_stm_bench WORKLOAD VARIANT THREADS [PARAM] [--seconds S] [--warmup S] [--seed N]
//
//   WORKLOAD  bank              PARAM accounts (default 1000000); 90% transfers (read 2, write 2),
//                               10% read-only sums of 8 accounts; check: the total is conserved
//             intset-list       PARAM keys (default 1024) of [0, 2 PARAM) in a sorted linked list;
//                               80% contains, 10% insert, 10% remove of random keys
//             intset-skiplist   the same on a skip list (default 65536 keys)
//             hashmap           PARAM keys (default 32768) of [0, 2 PARAM) in 2 PARAM buckets (rounded
//                               up to a power of two); 80% lookups, 10% insert, 10% remove
//             intset and hashmap check at the end: structure well formed, size = initial + inserts -
//             removes that succeeded
//   VARIANT   unsync | mutex | striped | libitm | weft | weft-nosolo   (see variant_*.cpp; unsync:
//             THREADS = 1 only; weft-nosolo: weft with solo mode off)
//   --seconds measured window (default 1); --warmup unmeasured time before it (default 0.2);
//   --seed    base seed of the per-thread streams and of the initial contents
//
// Output: {"workload":"bank","param":1000000,"variant":"weft","threads":2,"mtx_per_s":12.3,
//          "aborts_per_commit":0.01,"check":"ok","transactions":...,"seconds":...,"inevitable":0}
//   mtx_per_s = committed transactions (all threads) / measured seconds / 1e6; aborts_per_commit is null
//   for variants without an abort counter. Exit status: 0 ok, 1 the check failed (the line says why, and
//   a warning goes to stderr), 2 bad command line, 3 variant not available (libitm not built, unsync
//   with more than one thread).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "harness.hpp"

namespace {

using namespace stm_bench;

constexpr int exit_check_failed = 1, exit_usage = 2, exit_unavailable = 3;

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "weft_stm_bench: %s\n"
               "usage: weft_stm_bench bank|intset-list|intset-skiplist|hashmap "
               "unsync|mutex|striped|libitm|weft|weft-nosolo THREADS [PARAM] [--seconds S] [--warmup S] [--seed N]\n",
               why);
  std::exit(exit_usage);
}

bool parse_workload(const std::string& name, config& cfg) {
  struct entry {
    const char* name;
    workload_kind kind;
    long default_param;
  };
  static constexpr entry table[] = {{"bank", workload_kind::bank, 1'000'000},
                                    {"intset-list", workload_kind::intset_list, 1024},
                                    {"intset-skiplist", workload_kind::intset_skiplist, 65536},
                                    {"hashmap", workload_kind::hashmap, 32768}};
  for (const entry& e : table)
    if (name == e.name) {
      cfg.workload = e.kind;
      cfg.workload_name = name;
      cfg.param = e.default_param;
      return true;
    }
  return false;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    out += c;
  }
  return out + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  config cfg;
  double seconds = 1.0;
  std::uint64_t seed = cfg.seed;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::strtod(argv[++i], nullptr);
    } else if (a == "--warmup" && i + 1 < argc) {
      cfg.warmup = std::strtod(argv[++i], nullptr);
    } else if (a == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 0);
    } else if (a == "-h" || a == "--help") {
      usage("help");
    } else if (a.starts_with("--")) {
      usage(("unknown option " + a).c_str());
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() < 3 || positional.size() > 4) usage("expected WORKLOAD VARIANT THREADS [PARAM]");
  if (!parse_workload(positional[0], cfg)) usage(("unknown workload " + positional[0]).c_str());
  const std::string variant = positional[1];
  cfg.threads = std::atoi(positional[2].c_str());
  if (positional.size() == 4) cfg.param = std::atol(positional[3].c_str());
  cfg.seconds = seconds;
  cfg.seed = seed;
  if (cfg.threads < 1 || cfg.threads > 256) usage("THREADS must be 1..256");
  if (cfg.param < 2 || cfg.param > (1L << 30)) usage("PARAM must be 2..2^30");
  if (!(cfg.seconds > 0)) usage("--seconds must be positive");
  if (!(cfg.warmup >= 0)) usage("--warmup must not be negative");

  outcome (*run)(const config&) = nullptr;
  if (variant == "unsync") {
    if (cfg.threads != 1) {
      std::fprintf(stderr, "weft_stm_bench: unsync runs with 1 thread only\n");
      return exit_unavailable;
    }
    run = run_unsync;
  } else if (variant == "mutex") {
    run = run_mutex;
  } else if (variant == "striped") {
    run = run_striped;
  } else if (variant == "libitm") {
#ifdef WEFT_STM_BENCH_LIBITM
    run = run_libitm;
#else
    std::fprintf(stderr, "weft_stm_bench: built without libitm (-fgnu-tm)\n");
    return exit_unavailable;
#endif
  } else if (variant == "weft") {
    run = run_weft;
  } else if (variant == "weft-nosolo") {
    run = run_weft_nosolo;
  } else {
    usage(("unknown variant " + variant).c_str());
  }

  outcome out;
  try {
    out = run(cfg);
  } catch (const std::exception& e) {
    out.check = std::string("exception: ") + e.what();
  }

  std::string aborts = "null";
  if (out.aborts_per_commit >= 0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", out.aborts_per_commit);
    aborts = buf;
  }
  const double mtx = out.seconds > 0 ? static_cast<double>(out.transactions) / out.seconds / 1e6 : 0.0;
  std::printf(
      "{\"workload\":%s,\"param\":%ld,\"variant\":%s,\"threads\":%d,\"mtx_per_s\":%.3f,\"aborts_per_commit\":%s,"
      "\"check\":%s,\"transactions\":%llu,\"seconds\":%.3f,\"inevitable\":%llu,\"seed\":%llu}\n",
      json_string(cfg.workload_name).c_str(), cfg.param, json_string(variant).c_str(), cfg.threads, mtx,
      aborts.c_str(), json_string(out.check).c_str(), static_cast<unsigned long long>(out.transactions), out.seconds,
      static_cast<unsigned long long>(out.inevitable), static_cast<unsigned long long>(cfg.seed));
  std::fflush(stdout);
  if (out.check != "ok") {
    std::fprintf(stderr, "weft_stm_bench: WARNING: %s %ld %s %d threads: check failed: %s\n",
                 cfg.workload_name.c_str(), cfg.param, variant.c_str(), cfg.threads, out.check.c_str());
    return exit_check_failed;
  }
  return 0;
}
