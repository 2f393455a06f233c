// bench/stm/harness.hpp — what every variant of weft_stm_bench shares: the run configuration, the
// per-thread random streams, the operation mixes of the workloads and the timed multi-thread driver.
//
// Measures: transactions committed per second by T threads running one workload: the threads run
// `warmup` seconds unmeasured (caches, allocator, first-use setup), then a window of `seconds`
// wall-clock time is counted from their own counters. Every variant draws its operations from the
// same generators below, so for a given seed and thread index the stream of operations is the same
// whatever the synchronisation.
//
// Invariants of the driver:
//   * No shared random state: thread i owns a xorshift64* stream seeded by splitmix64(seed, i).
//   * Operations are drawn *outside* the transaction, so a transaction that runs again (STM abort)
//     repeats the same operation.
//   * Per-thread state is one 64-byte line (thread_state), written only by its thread; main only
//     reads its transaction counter (relaxed) when the window opens and closes, the rest after join.
//   * The only shared words of the driver are the start/stop flags, in their own line; workers only
//     read them while running (main writes each once).
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace stm_bench {

enum class workload_kind { bank, intset_list, intset_skiplist, hashmap };

struct config {
  workload_kind workload = workload_kind::bank;
  std::string workload_name;  ///< as given on the command line
  long param = 0;             ///< accounts (bank), initial keys (intset, hashmap)
  int threads = 1;
  double seconds = 1.0;       ///< measured window
  double warmup = 0.2;        ///< unmeasured run before the window opens
  std::uint64_t seed = 0x5eed;
};

/// What a variant reports for one run.
struct outcome {
  std::uint64_t transactions = 0;      ///< committed, all threads, inside the measured window
  std::uint64_t all_transactions = 0;  ///< committed, warm-up included
  double seconds = 0;                  ///< the measured window as it really was
  std::string check = "ok";            ///< "ok" or what the end-of-run check found wrong
  double aborts_per_commit = -1;       ///< < 0: the variant has no abort counter (printed as null)
  std::uint64_t inevitable = 0;        ///< weft: transactions that ran inevitable (serialised)
};

// --- random numbers ------------------------------------------------------------------------------

inline std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// xorshift64*; below(n) maps to [0, n) with a multiply (Lemire), no division.
struct rng {
  std::uint64_t x = 1;
  std::uint64_t next() noexcept {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return x * 0x2545f4914f6cdd1dULL;
  }
  std::uint64_t below(std::uint64_t n) noexcept {
    __extension__ using u128 = unsigned __int128;
    return static_cast<std::uint64_t>((static_cast<u128>(next()) * n) >> 64);
  }
};

inline rng seeded_rng(std::uint64_t seed, std::uint64_t stream) noexcept {
  std::uint64_t s = seed ^ (stream * 0xd1b54a32d192ed03ULL);
  rng r;
  r.x = splitmix64(s) | 1;  // xorshift must not start at 0
  return r;
}

struct alignas(64) thread_state {
  rng random;
  /// Committed transactions, warm-up included. Written by the owner only (load + store, no
  /// read-modify-write); main reads it relaxed while the run goes on, to open and close the window.
  std::atomic<std::uint64_t> transactions{0};
  std::uint64_t inserted = 0;  ///< successful inserts (intset, hashmap): the size check at the end
  std::uint64_t removed = 0;   ///< successful removes
  std::uint64_t sink = 0;      ///< results of read-only transactions, kept so they cannot be optimised away
};
static_assert(sizeof(thread_state) == 64, "one cache line per thread");

// --- operation mixes -------------------------------------------------------------------------------

/// bank: 90% transfers between two distinct accounts, 10% read-only sums of 8 random accounts.
struct bank_op {
  static constexpr int sum_width = 8;
  bool read_only;
  std::uint32_t from, to;
  long amount;
  std::uint32_t picks[sum_width];
};

inline bank_op draw_bank_op(rng& r, std::uint64_t accounts) noexcept {
  bank_op op{};
  if (r.below(10) == 0) {
    op.read_only = true;
    for (std::uint32_t& p : op.picks) p = static_cast<std::uint32_t>(r.below(accounts));
  } else {
    op.read_only = false;
    op.from = static_cast<std::uint32_t>(r.below(accounts));
    std::uint64_t to = op.from + 1 + r.below(accounts - 1);  // another account, uniformly
    if (to >= accounts) to -= accounts;
    op.to = static_cast<std::uint32_t>(to);
    op.amount = static_cast<long>(1 + r.below(100));
  }
  return op;
}

/// intset and hashmap: 80% lookups, 10% inserts, 10% removes of keys uniform in [0, range).
struct key_op {
  enum kind_t : std::uint8_t { lookup, insert, remove } kind;
  int height;  ///< skip list: the height a new node gets (drawn here so that a rerun repeats it)
  long key;
  long value;  ///< hashmap: the value an insert stores
};

/// Geometric heights (p = 1/2) capped at `levels`.
inline int draw_height(rng& r, int levels) noexcept {
  return 1 + std::countr_zero(r.next() | (std::uint64_t{1} << (levels - 1)));
}

inline key_op draw_key_op(rng& r, long range, int levels) noexcept {
  key_op op{};
  const std::uint64_t roll = r.below(10);
  op.kind = roll < 8 ? key_op::lookup : roll == 8 ? key_op::insert : key_op::remove;
  op.key = static_cast<long>(r.below(static_cast<std::uint64_t>(range)));
  op.height = op.kind == key_op::insert ? draw_height(r, levels) : 1;
  op.value = static_cast<long>(r.next() >> 1);
  return op;
}

/// Shape of an intset / hashmap run: `keys` distinct keys drawn from [0, range) at the start.
struct key_space {
  long keys;
  long range;
  int levels;  ///< skip list height cap: bit width of `keys` (17 for 64K keys)
};

inline key_space key_space_of(const config& cfg) noexcept {
  const int width = static_cast<int>(std::bit_width(static_cast<unsigned long>(cfg.param)));
  return {cfg.param, 2 * cfg.param, std::max(4, width)};
}

// --- the timed driver ------------------------------------------------------------------------------

struct timed_run {
  explicit timed_run(std::size_t threads) : states(threads) {}
  std::vector<thread_state> states;
  std::uint64_t window_transactions = 0;  ///< committed inside the measured window
  double seconds = 0;                      ///< the window as it really was
  std::uint64_t all_transactions() const noexcept {  ///< warm-up and window, after join
    std::uint64_t n = 0;
    for (const thread_state& s : states) n += s.transactions.load(std::memory_order_relaxed);
    return n;
  }
  std::int64_t net_inserted() const noexcept {
    std::int64_t n = 0;
    for (const thread_state& s : states)
      n += static_cast<std::int64_t>(s.inserted) - static_cast<std::int64_t>(s.removed);
    return n;
  }
};

/// Called by main when the window opens and closes (weft reads its counters there).
struct no_probe {
  void open() {}
  void close() {}
};

/// A Sync that just runs the operation: no synchronisation at all (unsync), or a structure that
/// locks itself (the hand-over-hand list).
struct call_directly : no_probe {
  template <class F>
  void read(F&& f) {
    f();
  }
  template <class F>
  void write(F&& f) {
    f();
  }
};

/// Runs `body(thread_state&)` (one transaction per call) on cfg.threads threads: cfg.warmup seconds
/// unmeasured, then the window of cfg.seconds, counted from the threads' own counters.
template <class Body, class Probe = no_probe>
timed_run run_timed(const config& cfg, Body body, Probe&& probe = {}) {
  timed_run run(static_cast<std::size_t>(cfg.threads));
  for (std::size_t i = 0; i < run.states.size(); ++i) run.states[i].random = seeded_rng(cfg.seed, i + 1);

  struct alignas(64) flags_t {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::atomic<bool> stop{false};
  } flags;

  std::vector<std::thread> workers;
  workers.reserve(run.states.size());
  for (thread_state& st : run.states) {
    workers.emplace_back([&flags, &st, &body] {
      flags.ready.fetch_add(1, std::memory_order_relaxed);
      while (!flags.go.load(std::memory_order_acquire)) std::this_thread::yield();  // pairs with main's release
      std::uint64_t done = 0;
      while (!flags.stop.load(std::memory_order_relaxed)) {
        body(st);
        st.transactions.store(++done, std::memory_order_relaxed);  // read by main's window snapshots
      }
    });
  }
  auto snapshot = [&run] {
    std::uint64_t n = 0;
    for (const thread_state& st : run.states) n += st.transactions.load(std::memory_order_relaxed);
    return n;
  };
  while (flags.ready.load(std::memory_order_relaxed) < cfg.threads) std::this_thread::yield();
  flags.go.store(true, std::memory_order_release);  // pairs with the workers' acquire load
  std::this_thread::sleep_for(std::chrono::duration<double>(cfg.warmup));

  probe.open();
  const std::uint64_t first = snapshot();
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(cfg.seconds));
  const std::uint64_t last = snapshot();
  const auto end = std::chrono::steady_clock::now();
  probe.close();

  flags.stop.store(true, std::memory_order_relaxed);
  for (std::thread& t : workers) t.join();  // join orders the workers' states before our reads
  run.window_transactions = last - first;
  run.seconds = std::chrono::duration<double>(end - start).count();
  return run;
}

inline outcome make_outcome(const timed_run& run, std::string check) {
  outcome out;
  out.transactions = run.window_transactions;
  out.all_transactions = run.all_transactions();
  out.seconds = run.seconds;
  out.check = std::move(check);
  return out;
}

// --- the variants (one translation unit each) ----------------------------------------------------

outcome run_unsync(const config& cfg);
outcome run_mutex(const config& cfg);
outcome run_striped(const config& cfg);
outcome run_libitm(const config& cfg);  ///< defined only when built with -fgnu-tm (WEFT_STM_BENCH_LIBITM)
outcome run_weft(const config& cfg);
outcome run_weft_nosolo(const config& cfg);

}  // namespace stm_bench
