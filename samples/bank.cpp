// samples/bank.cpp — a bank: tasklets move money between accounts in transactions, auditors count it.
//
// Usage: weft_sample_bank [ACCOUNTS] [TRANSFERS] [TASKLETS] [AUDITORS] [SEED]
//        (defaults 1000000 accounts, 100000 transfers per tasklet, 8 tasklets, 2 auditors, seed 1)
//
// Every account starts with 1000. Worker tasklet w (spawned in index order, then the auditors) makes
// TRANSFERS transfers in batches of 100, calling weft::schedule() after each batch, so that with one
// worker the batches run round-robin: batch 0 of workers 0, 1, ..., then batch 1 of each, and so on.
// A transfer draws three numbers from the worker's own splitmix64 generator, whose state starts at
// SEED ^ ((w + 1) * 0xD1B54A32D192ED03): from = r1 % ACCOUNTS, to = r2 % ACCOUNTS (to == from ->
// (to + 1) % ACCOUNTS), amount = r3 % 100 + 1; then, in one weft::atomically, it moves
// min(amount, balance[from]) from `from` to `to` (balances never go negative).
//
// An auditor calls weft::schedule() BATCHES / 4 times (BATCHES = a worker's batches: that many
// rounds of the ring pass), then audits: in one weft::atomically that first calls
// weft::become_inevitable("audit"), it numbers the audit (a shared counter) and sums every account.
// It prints `audit <k>: total <sum>` and does this 4 times. The sum must always be ACCOUNTS * 1000.
//
// Output (stdout, deterministic): a header, the audit lines, `audits: <n>`, the final total,
// `conserved: yes` (every audit and the final total equal ACCOUNTS * 1000; else `NO` and exit 1),
// `tasklets left: 0` and `checksum: <sum over i of (i + 1) * balance[i] mod 2^61 - 1>`. The final
// balances depend on the order of the transfers (min() clamps against the current balance), which is
// the serial order at any worker count. Time to stderr.
//
// Why it is written this way (DESIGN.md §5): the balances are shared by every tasklet and change
// while tasklets run, so each account is a weft::tvar (one per account: transfers touching different
// accounts never conflict). The accounts live in a std::deque that main fills before run() and never
// resizes while tasklets run (the container itself is read-only shared data; only the tvars in it
// change). A million accounts by default: two batches of 100 transfers rarely touch the same
// account, so speculative batches seldom conflict. The audit number and the count of failed audits
// are tvars too, written only by auditors.
// A worker's generator state and loop counters live on its own stack, so a rolled-back segment
// restarts them with it; the random draws happen outside atomically(), whose function may run more
// than once. With one worker atomically() is a transaction of its own; in the parallel modes it is
// a nested block of the segment's transaction. An audit reads every account: inevitable, it cannot
// be aborted by the transfers that commit beside it. Output goes through weft::print; main reads the
// balances only after run().
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>

#include <fmt/format.h>
#include <weft/weft.hpp>

namespace {

constexpr std::int64_t opening_balance = 1000;
constexpr long batch_size = 100;     // transfers per segment
constexpr long audits_each = 4;      // audits per auditor
constexpr std::uint64_t prime61 = (std::uint64_t{1} << 61) - 1;

struct splitmix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
};

struct bank {
  long accounts;
  long transfers;  // per worker
  std::uint64_t seed;
  long batches;    // per worker: ceil(transfers / batch_size)
  std::deque<weft::tvar<std::int64_t>> balance;  // filled by main before run(), never resized after
  weft::tvar<long> audits_done{0, "audits_done"};
  weft::tvar<long> audits_failed{0, "audits_failed"};
  std::int64_t expected_total() const { return accounts * opening_balance; }
};

void worker(bank& b, long self) {
  splitmix64 rng{b.seed ^ (static_cast<std::uint64_t>(self + 1) * 0xD1B54A32D192ED03ULL)};
  const auto n = static_cast<std::uint64_t>(b.accounts);
  for (long done = 0; done < b.transfers;) {
    const long batch_end = std::min(done + batch_size, b.transfers);
    for (; done < batch_end; ++done) {
      const auto from = static_cast<std::size_t>(rng.next() % n);
      auto to = static_cast<std::size_t>(rng.next() % n);
      if (to == from) to = (to + 1) % static_cast<std::size_t>(n);
      const auto amount = static_cast<std::int64_t>(rng.next() % 100 + 1);
      weft::atomically([&] {
        const std::int64_t available = b.balance[from].get();
        const std::int64_t moved = std::min(amount, available);
        b.balance[from].set(available - moved);
        b.balance[to].set(b.balance[to].get() + moved);
      });
    }
    weft::schedule();  // the end of a batch: the next worker's batch runs
  }
}

void auditor(bank& b) {
  const long gap = std::max(1L, b.batches / audits_each);
  for (long a = 0; a < audits_each; ++a) {
    for (long i = 0; i < gap; ++i) weft::schedule();
    struct audit {
      long number;
      std::int64_t total;
    };
    const audit result = weft::atomically([&] {
      weft::become_inevitable("audit");
      const long number = b.audits_done.get() + 1;
      b.audits_done.set(number);
      std::int64_t total = 0;
      for (const weft::tvar<std::int64_t>& account : b.balance) total += account.get();
      if (total != b.expected_total()) b.audits_failed.set(b.audits_failed.get() + 1);
      return audit{number, total};
    });
    weft::print("audit {}: total {}\n", result.number, result.total);
  }
}

[[noreturn]] void usage(const char* prog) {
  std::fprintf(stderr, "usage: %s [ACCOUNTS >= 2] [TRANSFERS >= 0] [TASKLETS >= 1] [AUDITORS >= 0] [SEED]\n",
               prog);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  long arg[5] = {1000000, 100000, 8, 2, 1};
  if (argc > 6) usage(argv[0]);
  for (int i = 1; i < argc; ++i) {
    char* end = nullptr;
    arg[i - 1] = std::strtol(argv[i], &end, 10);
    if (end == argv[i] || *end != '\0') usage(argv[0]);
  }
  const long accounts = arg[0], transfers = arg[1], workers = arg[2], auditors = arg[3];
  if (accounts < 2 || accounts > 100000000 || transfers < 0 || workers < 1 || auditors < 0 || arg[4] < 0)
    usage(argv[0]);

  const long batches = (transfers + batch_size - 1) / batch_size;
  bank b{accounts, transfers, static_cast<std::uint64_t>(arg[4]), batches, {}};
  // Unnamed: a tvar's name costs a side-table entry (~1 us each), and a conflict report can say
  // which account by its address.
  for (long i = 0; i < accounts; ++i) b.balance.emplace_back(opening_balance);

  weft::print("bank: {} accounts, {} tasklets x {} transfers, {} auditors, seed {}\n", accounts, workers,
              transfers, auditors, arg[4]);
  const auto start = std::chrono::steady_clock::now();
  for (long w = 0; w < workers; ++w) weft::spawn([&b, w] { worker(b, w); });
  for (long a = 0; a < auditors; ++a) weft::spawn([&b] { auditor(b); });
  weft::run();
  const auto stop = std::chrono::steady_clock::now();

  std::int64_t total = 0;
  std::uint64_t checksum = 0;
  for (long i = 0; i < accounts; ++i) {
    const std::int64_t v = b.balance[static_cast<std::size_t>(i)].get();
    total += v;
    __extension__ using u128 = unsigned __int128;
    const u128 term = u128(static_cast<std::uint64_t>(i + 1)) * u128(static_cast<std::uint64_t>(v) % prime61);
    checksum = static_cast<std::uint64_t>((u128(checksum) + term) % prime61);
  }
  const bool conserved = b.audits_failed.get() == 0 && total == b.expected_total();
  const std::size_t left = weft::resources().live_tasklets;
  weft::print("audits: {}\n", b.audits_done.get());
  weft::print("total: {}\n", total);
  weft::print("conserved: {}\n", conserved ? "yes" : "NO");
  weft::print("tasklets left: {}\n", left);
  weft::print("checksum: {}\n", checksum);
  fmt::print(stderr, "time: {:.1f} ms\n", std::chrono::duration<double, std::milli>(stop - start).count());
  weft::shutdown();
  return conserved && left == 0 ? 0 : 1;
}
