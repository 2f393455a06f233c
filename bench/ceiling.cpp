// bench/ceiling.cpp — what plain threads get from the machine on the parallel samples' work: the
// ceiling against which bench/ordered.sh reads weft's 2-worker speedups.
//
// Usage: weft_ceiling agents|mandelbrot|bank THREADS
//
// The same computation, sizes and allocations as the samples at their defaults (samples/agents.cpp:
// game of life on a 1024 x 1024 torus, 16 tiles of 64 rows, 100 ticks, seed 1, each tick's
// generation a new vector, the old one freed; samples/mandelbrot.cpp: 1024 x 1024, 64 bands of 16
// rows, 255 iterations at most; samples/bank.cpp: 1,000,000 accounts, 8 streams of 100,000 transfers
// drawn as the sample draws them, 2 auditors x 4 audits), with no runtime: THREADS std::threads share
// the work the best way plain threads can — agents: tile k on thread k % THREADS, a spinning barrier
// between ticks (no futex wake-up, which takes 50-150 us on a VM); mandelbrot: bands handed out by an
// atomic counter; bank: stream w on thread w % THREADS, each transfer locking its two accounts
// (a lock bit in a 16-byte account, as a tvar's lock word beside its value), the audits at four
// spinning barriers, each scan split between the threads.
// The kernels are copied from the samples (which stay single-file programs for readers): the
// checksums printed here are the samples' (agents `checksum:`, mandelbrot `checksum:` of the weighted
// sum), so a drift between the copies shows. Bank's final balances depend on the order of the
// transfers, which plain threads do not fix: it prints the total (1,000,000,000, conserved) instead,
// and exits 1 if an audit or the total differs.
//
// Output: `checksum: N` on stdout, `time: X ms` (the parallel part only, as the samples time theirs)
// on stderr.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <algorithm>
#include <thread>
#include <vector>

namespace {

using cells = std::vector<std::uint8_t>;

struct splitmix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
};

// Runs work(0) on this thread and work(1) .. work(threads - 1) on new ones; returns the wall time in
// milliseconds (the parallel part only, as the samples time theirs).
template <class Work>
double timed_on_threads(int threads, Work& work) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> helpers;
  for (int i = 1; i < threads; ++i) helpers.emplace_back([&work, i] { work(i); });
  work(0);
  for (auto& h : helpers) h.join();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// samples/agents.cpp's step on plain pointers. Its live count is used (the sample sends it to its
// coordinator): unused, the compiler dropped its loop and the run took 2/3 of the sample's time.
[[gnu::noinline]] long next_generation(const std::uint8_t* above, const std::uint8_t* mine, const std::uint8_t* below,
                                       std::uint8_t* next, std::size_t rows, std::size_t width) {
  long alive = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    const std::uint8_t* up = r == 0 ? above : mine + (r - 1) * width;
    const std::uint8_t* mid = mine + r * width;
    const std::uint8_t* down = r + 1 == rows ? below : mine + (r + 1) * width;
    std::uint8_t* out = next + r * width;
    auto neighbours = [&](std::size_t left, std::size_t x, std::size_t right) -> unsigned {
      return up[left] + up[x] + up[right] + mid[left] + mid[right] + down[left] + down[x] + down[right];
    };
    auto rule = [](unsigned n, std::uint8_t cell) -> std::uint8_t { return n == 3 || (n == 2 && cell); };
    const std::size_t last = width - 1;
    out[0] = rule(neighbours(last, 0, 1), mid[0]);
    for (std::size_t x = 1; x < last; ++x) out[x] = rule(neighbours(x - 1, x, x + 1), mid[x]);
    out[last] = rule(neighbours(last - 1, last, 0), mid[last]);
    for (std::size_t x = 0; x < width; ++x) alive += out[x];
  }
  return alive;
}

double agents(int threads, std::uint64_t& checksum) {
  // Read at run time, as the sample reads its arguments (constants would let the compiler specialise
  // the kernel for a width of 1024: 1.5x faster than the sample's code, not the same work).
  static volatile long sizes[4] = {1024, 1024, 16, 100};
  const long width = sizes[0], height = sizes[1], tiles = sizes[2], ticks = sizes[3];
  auto first_row = [&](long k) { return k * height / tiles; };
  struct tile {
    cells* rows[2] = {};
    cells* top[2] = {};
    cells* bottom[2] = {};
  };
  std::vector<tile> state(static_cast<std::size_t>(tiles));
  auto publish = [&](tile& t, int parity, cells* next) {
    delete t.top[parity];
    delete t.bottom[parity];
    delete t.rows[parity];
    t.top[parity] = new cells(next->begin(), next->begin() + width);
    t.bottom[parity] = new cells(next->end() - width, next->end());
    t.rows[parity] = next;
  };
  splitmix64 rng{1};
  for (long k = 0; k < tiles; ++k) {
    auto* rows = new cells(static_cast<std::size_t>((first_row(k + 1) - first_row(k)) * width));
    for (std::uint8_t& c : *rows) c = rng.next() % 100 < 30;
    publish(state[static_cast<std::size_t>(k)], 0, rows);
  }
  std::atomic<long> arrived{0};
  std::vector<long> alive(static_cast<std::size_t>(threads));  // summed as the sample's coordinator does
  auto work = [&](int id) {
    for (long tick = 0; tick < ticks; ++tick) {
      const int now = static_cast<int>(tick % 2);
      for (long k = id; k < tiles; k += threads) {
        tile& self = state[static_cast<std::size_t>(k)];
        const tile& over = state[static_cast<std::size_t>((k + tiles - 1) % tiles)];
        const tile& under = state[static_cast<std::size_t>((k + 1) % tiles)];
        const auto rows = static_cast<std::size_t>(first_row(k + 1) - first_row(k));
        auto* next = new cells(rows * static_cast<std::size_t>(width));
        const long n = next_generation(over.bottom[now]->data(), self.rows[now]->data(), under.top[now]->data(), next->data(), rows,
                        static_cast<std::size_t>(width));
        publish(self, 1 - now, next);
        alive[static_cast<std::size_t>(id)] += n;
      }
      const long target = (tick + 1) * threads;
      arrived.fetch_add(1);
      while (arrived.load() < target) std::this_thread::yield();
    }
  };
  const double ms = timed_on_threads(threads, work);
  long total = 0;
  for (long n : alive) total += n;
  if (total < 0) std::abort();  // the counts are used
  checksum = 0xCBF29CE484222325ULL;
  for (tile& t : state) {
    for (std::uint8_t b : *t.rows[ticks % 2]) checksum = (checksum ^ b) * 0x100000001B3ULL;
    for (int p = 0; p < 2; ++p) delete t.rows[p], delete t.top[p], delete t.bottom[p];
  }
  return ms;
}

// samples/mandelbrot.cpp's count_at and compute_band (without --ppm).
int count_at(double cr, double ci) {
  double zr = 0.0, zi = 0.0;
  int n = 0;
  while (n < 255) {
    const double zr2 = zr * zr;
    const double zi2 = zi * zi;
    if (zr2 + zi2 > 4.0) break;
    zi = 2.0 * zr * zi + ci;
    zr = zr2 - zi2 + cr;
    ++n;
  }
  return n;
}

double mandelbrot(int threads, std::uint64_t& checksum) {
  static volatile long sizes[3] = {1024, 1024, 64};
  const long width = sizes[0], height = sizes[1], bands = sizes[2];
  std::vector<std::uint64_t> weighted(static_cast<std::size_t>(bands));
  std::atomic<long> next_band{0};
  auto work = [&] {
    for (long band; (band = next_band.fetch_add(1)) < bands;) {
      const long y0 = band * height / bands, y1 = (band + 1) * height / bands;
      const double dx = 3.0 / static_cast<double>(width), dy = 3.0 / static_cast<double>(height);
      std::vector<std::uint8_t> counts(static_cast<std::size_t>((y1 - y0) * width));
      std::uint64_t sum = 0;
      std::size_t at = 0;
      for (long py = y0; py < y1; ++py) {
        const double ci = -1.5 + static_cast<double>(py) * dy;
        for (long px = 0; px < width; ++px) {
          const int n = count_at(-2.0 + static_cast<double>(px) * dx, ci);
          counts[at++] = static_cast<std::uint8_t>(n);
          sum += static_cast<std::uint64_t>(n) * static_cast<std::uint64_t>(py * width + px + 1);
        }
      }
      weighted[static_cast<std::size_t>(band)] = sum;
    }
  };
  auto each = [&](int) { work(); };
  const double ms = timed_on_threads(threads, each);
  checksum = 0;
  for (std::uint64_t w : weighted) checksum += w;
  return ms;
}


// samples/bank.cpp's transfers and audits. An account is 16 bytes like a weft::tvar<std::int64_t>
// (a lock word and the balance), in a std::deque as the sample's.
struct account {
  std::atomic<std::uint64_t> meta{0};  // bit 0: locked; the rest counts the writes
  std::atomic<std::int64_t> balance{1000};
};

void lock(account& a) {
  for (;;) {
    std::uint64_t m = a.meta.load(std::memory_order_relaxed);
    if (!(m & 1) && a.meta.compare_exchange_weak(m, m | 1, std::memory_order_acquire)) return;
    while (a.meta.load(std::memory_order_relaxed) & 1) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    }
  }
}
void unlock(account& a) { a.meta.store((a.meta.load(std::memory_order_relaxed) | 1) + 3, std::memory_order_release); }

double bank(int threads, std::uint64_t& checksum) {
  static volatile long sizes[5] = {1000000, 100000, 8, 2, 1};  // accounts, transfers, streams, auditors, seed
  const long accounts = sizes[0], transfers = sizes[1], streams = sizes[2], auditors = sizes[3];
  const auto seed = static_cast<std::uint64_t>(sizes[4]);
  constexpr long audits_each = 4, batch = 100;
  std::deque<account> balance(static_cast<std::size_t>(accounts));
  const std::int64_t expected = accounts * 1000;
  std::atomic<long> arrived{0};
  std::vector<std::int64_t> part(static_cast<std::size_t>(threads));
  std::atomic<bool> failed{false};
  // A spinning barrier: the k-th call of every thread returns once all threads made it.
  auto barrier = [&](long& calls) {
    arrived.fetch_add(1);
    ++calls;
    while (arrived.load() < calls * threads) std::this_thread::yield();
  };
  auto work = [&](int id) {
    std::vector<splitmix64> rng;
    for (long w = id; w < streams; w += threads) rng.push_back({seed ^ (static_cast<std::uint64_t>(w + 1) * 0xD1B54A32D192ED03ULL)});
    const auto n = static_cast<std::uint64_t>(accounts);
    const long batches = (transfers + batch - 1) / batch;
    const long gap = std::max(1L, batches / audits_each);  // the sample's auditors wait this many batches
    long calls = 0, audits = 0;
    for (long b = 0; b < batches; ++b) {
      for (splitmix64& r : rng)
        for (long t = b * batch; t < std::min((b + 1) * batch, transfers); ++t) {
          const auto from = static_cast<std::size_t>(r.next() % n);
          auto to = static_cast<std::size_t>(r.next() % n);
          if (to == from) to = (to + 1) % static_cast<std::size_t>(n);
          const auto amount = static_cast<std::int64_t>(r.next() % 100 + 1);
          account& first = balance[std::min(from, to)];
          account& second = balance[std::max(from, to)];
          lock(first);
          lock(second);
          const std::int64_t available = balance[from].balance.load(std::memory_order_relaxed);
          const std::int64_t moved = std::min(amount, available);
          balance[from].balance.store(available - moved, std::memory_order_relaxed);
          balance[to].balance.store(balance[to].balance.load(std::memory_order_relaxed) + moved, std::memory_order_relaxed);
          unlock(second);
          unlock(first);
        }
      if ((b + 1) % gap != 0 || audits == audits_each) continue;
      ++audits;
      for (long a = 0; a < auditors; ++a) {  // each auditor's audit: a scan split between the threads
        barrier(calls);
        std::int64_t sum = 0;
        const auto size = static_cast<std::size_t>(accounts), k = static_cast<std::size_t>(id),
                   all = static_cast<std::size_t>(threads);
        for (std::size_t i = k * size / all; i < (k + 1) * size / all; ++i)
          sum += balance[i].balance.load(std::memory_order_relaxed);
        part[static_cast<std::size_t>(id)] = sum;
        barrier(calls);
        if (id == 0) {
          std::int64_t total = 0;
          for (std::int64_t p : part) total += p;
          if (total != expected) failed = true;
        }
      }
    }
  };
  const double ms = timed_on_threads(threads, work);
  std::int64_t total = 0;
  for (const account& a : balance) total += a.balance.load(std::memory_order_relaxed);
  if (total != expected) failed = true;
  checksum = static_cast<std::uint64_t>(total);
  if (failed) std::fprintf(stderr, "bank: money was not conserved\n");
  return failed ? -1 : ms;
}
}  // namespace

int main(int argc, char** argv) {
  const int threads = argc == 3 ? std::atoi(argv[2]) : 0;
  if (argc != 3 || threads < 1 || threads > 1024 ||
      (std::strcmp(argv[1], "agents") != 0 && std::strcmp(argv[1], "mandelbrot") != 0 &&
       std::strcmp(argv[1], "bank") != 0)) {
    std::fprintf(stderr, "usage: %s agents|mandelbrot|bank THREADS\n", argv[0]);
    return 2;
  }
  std::uint64_t checksum = 0;
  const double ms = std::strcmp(argv[1], "agents") == 0   ? agents(threads, checksum)
                    : std::strcmp(argv[1], "bank") == 0 ? bank(threads, checksum)
                                                        : mandelbrot(threads, checksum);
  if (ms < 0) return 1;
  std::printf("checksum: %llu\n", static_cast<unsigned long long>(checksum));
  std::fprintf(stderr, "time: %.1f ms\n", ms);
  return 0;
}
