// samples/agents.cpp — an agent simulation: Conway's game of life on a torus, one tasklet per tile.
//
// Usage: weft_sample_agents [WIDTH] [HEIGHT] [TILES] [TICKS] [SEED]
//        (defaults 1024 1024 16 100 1: 64 rows of 1024 cells per tile and tick)
//
// The grid is WIDTH x HEIGHT cells on a torus (row -1 is row HEIGHT-1, column -1 is WIDTH-1). Main
// fills it from splitmix64 seeded with SEED: cell after cell in row-major order, alive iff the next
// draw % 100 < 30. Rule B3/S23: a cell is alive at tick t+1 iff it has 3 live neighbours at tick t, or
// 2 and is alive. Tile k (one tasklet per tile) owns the rows [k*HEIGHT/TILES, (k+1)*HEIGHT/TILES).
//
// Each tick a tile computes its next generation from its own rows and the edge rows of the tiles
// above and below, sends `done` (with its live count) to a coordinator tasklet and waits for `go`.
// The coordinator collects TILES `done`s, prints `tick <t>: alive <n>` every 10th tick and at the
// last one, lets the tiles reach their receive of `go` (one weft::schedule()), then sends TILES `go`s.
//
// Output (stdout, deterministic): a header, `tick 0: alive <n>`, the coordinator's tick lines,
// `alive: <n>`, `tasklets left: 0` and `checksum: <64-bit FNV-1a of the final grid, one byte (0/1)
// per cell in row-major order>`. Time to stderr.
//
// Why it is written this way (DESIGN.md §5): a tile's rows outlive its segments and its neighbours
// read them, so they live in tvars, double-buffered by the parity of the tick: at tick t every tile
// reads generation t (parity t % 2) and writes generation t+1 (the other parity), so nobody reads
// what another tile writes in the same tick, and ordered speculation finds no conflict. Per tile and
// parity there are three tvars: its rows, and copies of its first and last row, which are all a
// neighbour reads (a halo, so a neighbour copies one row, not the tile). Everything else a tile uses
// in a tick — the copies it reads, the next generation it builds — is allocated in that tick's segment
// and is either handed to a tvar or freed before the segment ends. The tvars sit in a std::deque that
// main fills before run() and that nobody resizes after. Channels carry the barrier; channels `done`
// and `go` have preference 0 (nobody switches on a send), so that with one worker a tick runs every
// tile's computation back to back: in the parallel modes they are segments runnable together. A tile's
// work per tick is 64K cells at the default size (~0.1 ms), long enough for parallelism to pay.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <vector>

#include <fmt/format.h>
#include <weft/weft.hpp>

namespace {

using cells = std::vector<std::uint8_t>;  // 0 dead, 1 alive

struct splitmix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
};

// One tile's state, by parity of the tick whose generation it holds.
struct tile {
  weft::tvar<cells> rows[2];    // the tile's rows, row-major
  weft::tvar<cells> top[2];     // copy of its first row (what the tile above reads)
  weft::tvar<cells> bottom[2];  // copy of its last row (what the tile below reads)
  void publish(int parity, cells next, long width) {
    top[parity].set(cells(next.begin(), next.begin() + width));
    bottom[parity].set(cells(next.end() - width, next.end()));
    rows[parity].set(std::move(next));
  }
};

struct world {
  long width;
  long height;
  long tiles;
  long ticks;
  std::deque<tile> tile_state;  // filled by main before run(), never resized after
  long first_row(long k) const { return k * height / tiles; }
};

struct report {
  long tile;
  long alive;
};

// Computes generation tick+1 of tile k from generation tick; returns its live cells. The whole
// function runs inside one segment: what it allocates is freed or handed to a tvar before it returns.
long step(world& w, long k, long tick) {
  const int now = static_cast<int>(tick % 2), next_parity = 1 - now;
  const auto width = static_cast<std::size_t>(w.width);
  const auto rows = static_cast<std::size_t>(w.first_row(k + 1) - w.first_row(k));
  tile& self = w.tile_state[static_cast<std::size_t>(k)];
  const tile& over = w.tile_state[static_cast<std::size_t>((k + w.tiles - 1) % w.tiles)];
  const tile& under = w.tile_state[static_cast<std::size_t>((k + 1) % w.tiles)];
  cells next(rows * width);
  long alive = 0;
  // view(): the generation is read in place, not copied (a tile is 64 KiB at the default size).
  self.rows[now].view([&](const cells& mine) {
  over.bottom[now].view([&](const cells& above) {
  under.top[now].view([&](const cells& below) {
  for (std::size_t r = 0; r < rows; ++r) {
    const std::uint8_t* up = r == 0 ? above.data() : mine.data() + (r - 1) * width;
    const std::uint8_t* mid = mine.data() + r * width;
    const std::uint8_t* down = r + 1 == rows ? below.data() : mine.data() + (r + 1) * width;
    std::uint8_t* out = next.data() + r * width;
    auto neighbours = [&](std::size_t left, std::size_t x, std::size_t right) -> unsigned {
      return up[left] + up[x] + up[right] + mid[left] + mid[right] + down[left] + down[x] + down[right];
    };
    auto rule = [](unsigned n, std::uint8_t cell) -> std::uint8_t { return n == 3 || (n == 2 && cell); };
    const std::size_t last = width - 1;  // the columns wrap around: 0 and last are neighbours
    out[0] = rule(neighbours(last, 0, 1), mid[0]);
    for (std::size_t x = 1; x < last; ++x) out[x] = rule(neighbours(x - 1, x, x + 1), mid[x]);
    out[last] = rule(neighbours(last - 1, last, 0), mid[last]);
    long row_alive = 0;  // a local: `alive` lives in memory, and char stores may alias it
    for (std::size_t x = 0; x < width; ++x) row_alive += out[x];
    alive += row_alive;
  }
  });
  });
  });
  self.publish(next_parity, std::move(next), w.width);
  return alive;
}

void run_tile(world& w, long k, weft::channel<report> done, weft::channel<int> go) {
  for (long tick = 0; tick < w.ticks; ++tick) {
    const long alive = step(w, k, tick);
    done.send(report{k, alive});
    if (tick + 1 < w.ticks) go.receive();
  }
}

void coordinate(const world& w, weft::channel<report> done, weft::channel<int> go) {
  for (long tick = 1; tick <= w.ticks; ++tick) {
    long alive = 0;
    for (long i = 0; i < w.tiles; ++i) alive += done.receive().alive;
    if (tick % 10 == 0 || tick == w.ticks) weft::print("tick {}: alive {}\n", tick, alive);
    if (tick == w.ticks) break;
    weft::schedule();  // the tiles woken by our receives reach their go.receive() first
    for (long i = 0; i < w.tiles; ++i) go.send(1);
  }
}

std::uint64_t fnv1a(std::uint64_t h, const cells& bytes) {
  for (std::uint8_t b : bytes) h = (h ^ b) * 0x100000001B3ULL;
  return h;
}

[[noreturn]] void usage(const char* prog) {
  std::fprintf(stderr, "usage: %s [WIDTH >= 3] [HEIGHT >= 3] [TILES 1..HEIGHT] [TICKS >= 1] [SEED >= 0]\n",
               prog);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  long arg[5] = {1024, 1024, 16, 100, 1};
  if (argc > 6) usage(argv[0]);
  for (int i = 1; i < argc; ++i) {
    char* end = nullptr;
    arg[i - 1] = std::strtol(argv[i], &end, 10);
    if (end == argv[i] || *end != '\0') usage(argv[0]);
  }
  world w{arg[0], arg[1], arg[2], arg[3], {}};
  if (w.width < 3 || w.height < 3 || w.width > 1L << 16 || w.height > 1L << 16 || w.tiles < 1 ||
      w.tiles > w.height || w.ticks < 1 || arg[4] < 0)
    usage(argv[0]);

  // Generation 0, written (parity 0) before any tasklet runs.
  splitmix64 rng{static_cast<std::uint64_t>(arg[4])};
  long alive = 0;
  for (long k = 0; k < w.tiles; ++k) {
    cells rows(static_cast<std::size_t>((w.first_row(k + 1) - w.first_row(k)) * w.width));
    for (std::uint8_t& c : rows) {
      c = rng.next() % 100 < 30;
      alive += c;
    }
    w.tile_state.emplace_back().publish(0, std::move(rows), w.width);
  }
  weft::print("agents: game of life on a {} x {} torus, {} tiles, {} ticks, seed {}\n", w.width, w.height,
              w.tiles, w.ticks, arg[4]);
  weft::print("tick 0: alive {}\n", alive);

  const auto start = std::chrono::steady_clock::now();
  weft::channel<report> done;
  weft::channel<int> go;
  done.preference(0);
  go.preference(0);
  for (long k = 0; k < w.tiles; ++k) weft::spawn([&w, k, done, go] { run_tile(w, k, done, go); });
  weft::spawn([&w, done, go] { coordinate(w, done, go); });
  weft::run();
  const auto stop = std::chrono::steady_clock::now();

  const int final_parity = static_cast<int>(w.ticks % 2);
  std::uint64_t checksum = 0xCBF29CE484222325ULL;
  alive = 0;
  for (tile& t : w.tile_state) {
    const cells rows = t.rows[final_parity].get();
    checksum = fnv1a(checksum, rows);
    for (std::uint8_t c : rows) alive += c;
  }
  const std::size_t left = weft::resources().live_tasklets;
  weft::print("alive: {}\n", alive);
  weft::print("tasklets left: {}\n", left);
  weft::print("checksum: {}\n", checksum);
  fmt::print(stderr, "time: {:.1f} ms\n", std::chrono::duration<double, std::milli>(stop - start).count());
  weft::shutdown();
  return left == 0 ? 0 : 1;
}
