// bench/ceiling.cpp — what plain threads get from the machine on the parallel samples' work: the
// ceiling against which bench/ordered.sh reads weft's 2-worker speedups.
//
// Usage: weft_ceiling agents|mandelbrot THREADS
//
// The same computation, sizes and allocations as the samples at their defaults (samples/agents.cpp:
// game of life on a 1024 x 1024 torus, 16 tiles of 64 rows, 100 ticks, seed 1, each tick's
// generation a new vector, the old one freed; samples/mandelbrot.cpp: 1024 x 1024, 64 bands of 16
// rows, 255 iterations at most), with no runtime: THREADS std::threads share the work the best way
// plain threads can — agents: tile k on thread k % THREADS, a spinning barrier between ticks (no
// futex wake-up, which takes 50-150 us on a VM); mandelbrot: bands handed out by an atomic counter.
// The kernels are copied from the samples (which stay single-file programs for readers): the
// checksums printed here are the samples' (agents `checksum:`, mandelbrot `checksum:` of the weighted
// sum), so a drift between the copies shows.
//
// Output: `checksum: N` on stdout, `time: X ms` (the parallel part only, as the samples time theirs)
// on stderr.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> helpers;
  for (int i = 1; i < threads; ++i) helpers.emplace_back(work, i);
  work(0);
  for (auto& h : helpers) h.join();
  const auto stop = std::chrono::steady_clock::now();
  long total = 0;
  for (long n : alive) total += n;
  if (total < 0) std::abort();  // the counts are used
  checksum = 0xCBF29CE484222325ULL;
  for (tile& t : state) {
    for (std::uint8_t b : *t.rows[ticks % 2]) checksum = (checksum ^ b) * 0x100000001B3ULL;
    for (int p = 0; p < 2; ++p) delete t.rows[p], delete t.top[p], delete t.bottom[p];
  }
  return std::chrono::duration<double, std::milli>(stop - start).count();
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
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> helpers;
  for (int i = 1; i < threads; ++i) helpers.emplace_back(work);
  work();
  for (auto& h : helpers) h.join();
  const auto stop = std::chrono::steady_clock::now();
  checksum = 0;
  for (std::uint64_t w : weighted) checksum += w;
  return std::chrono::duration<double, std::milli>(stop - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc == 3 ? std::atoi(argv[2]) : 0;
  if (argc != 3 || threads < 1 || threads > 1024 ||
      (std::strcmp(argv[1], "agents") != 0 && std::strcmp(argv[1], "mandelbrot") != 0)) {
    std::fprintf(stderr, "usage: %s agents|mandelbrot THREADS\n", argv[0]);
    return 2;
  }
  std::uint64_t checksum = 0;
  const double ms = std::strcmp(argv[1], "agents") == 0 ? agents(threads, checksum) : mandelbrot(threads, checksum);
  std::printf("checksum: %llu\n", static_cast<unsigned long long>(checksum));
  std::fprintf(stderr, "time: %.1f ms\n", ms);
  return 0;
}
