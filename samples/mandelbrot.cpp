// samples/mandelbrot.cpp — the Mandelbrot set, band by band: PyPy-STM's classic parallel benchmark.
//
// Usage: weft_sample_mandelbrot [WIDTH] [HEIGHT] [BANDS] [--ppm FILE]   (defaults 1024 1024 64)
//
// The image covers x in [-2, 1), y in [-1.5, 1.5): pixel (px, py) is c = (-2 + px*(3/WIDTH),
// -1.5 + py*(3/HEIGHT)). Its count is the number of steps z = z*z + c, from z = 0, taken while
// |z|^2 <= 4, at most 255 (so a count fits a byte; 255 = "in the set"). One step, in this order, in
// plain double arithmetic: zr2 = zr*zr, zi2 = zi*zi, stop if zr2 + zi2 > 4, zi = 2*zr*zi + ci,
// zr = zr2 - zi2 + cr. The sample is built with -ffp-contract=off (samples/CMakeLists.txt), so no
// multiply-add is fused and the counts are the same on every x86-64 build and in Python.
//
// Band b (one tasklet per band, spawned in index order) owns the rows [b*HEIGHT/BANDS,
// (b+1)*HEIGHT/BANDS). It computes them into a std::vector it allocates itself, prints `band <b> done`
// and sends one message to main: its index, the sum of its counts, the sum of count * (py*WIDTH + px
// + 1) over its pixels, and, with --ppm, the counts themselves. Main receives the BANDS messages in
// whatever order they come, files each under its band index and combines them in band order.
// After run(), with --ppm, main writes a P5 (greyscale) image, 255 - count per pixel.
//
// Output (stdout, deterministic): a header, one `band <b> done` per band, `iterations: <sum of all
// counts>`, `tasklets left: 0` and `checksum: <sum over all pixels of count * (py*WIDTH + px + 1)>`
// (the CTest tests use small images whose values tools/expected_checksums.py recomputes). The time
// from the first spawn to the end of run() goes to stderr.
//
// Why it is written this way (DESIGN.md §5): in the parallel ordered mode each band's computation is
// one segment, run speculatively on any worker and committed in serial order. A band touches only its
// own stack (its captures, loop variables, the vector object) and the vector's buffer, which it
// allocated in that same segment — nothing is computed between two switch points into memory that
// outlives them, so a band needs no tvar at all. The only thing bands share is the results channel:
// the rows reach main inside the message, and main, which runs only at the head, writes nothing but
// its own locals. Output goes through weft::print, so it appears in serial order at any worker count.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <weft/weft.hpp>

namespace {

constexpr int max_count = 255;

// What a band sends to main.
struct band_result {
  long band = 0;
  std::uint64_t iterations = 0;      // sum of the band's counts
  std::uint64_t weighted = 0;        // sum of count * (global pixel index + 1)
  std::vector<std::uint8_t> counts;  // the band's rows, row-major; only with --ppm
};

struct image {
  long width;
  long height;
  long bands;
  bool keep_counts;  // --ppm: the bands send their rows
  long first_row(long band) const { return band * height / bands; }
};

int count_at(double cr, double ci) {
  double zr = 0.0, zi = 0.0;
  int n = 0;
  while (n < max_count) {
    const double zr2 = zr * zr;
    const double zi2 = zi * zi;
    if (zr2 + zi2 > 4.0) break;
    zi = 2.0 * zr * zi + ci;
    zr = zr2 - zi2 + cr;
    ++n;
  }
  return n;
}

// One band, from start to its send: one segment in the parallel modes.
band_result compute_band(const image& img, long band) {
  const long y0 = img.first_row(band), y1 = img.first_row(band + 1);
  const double dx = 3.0 / static_cast<double>(img.width), dy = 3.0 / static_cast<double>(img.height);
  std::vector<std::uint8_t> counts(static_cast<std::size_t>((y1 - y0) * img.width));
  band_result r;
  r.band = band;
  std::size_t at = 0;
  for (long py = y0; py < y1; ++py) {
    const double ci = -1.5 + static_cast<double>(py) * dy;
    for (long px = 0; px < img.width; ++px) {
      const double cr = -2.0 + static_cast<double>(px) * dx;
      const int n = count_at(cr, ci);
      counts[at++] = static_cast<std::uint8_t>(n);
      r.iterations += static_cast<std::uint64_t>(n);
      r.weighted += static_cast<std::uint64_t>(n) * static_cast<std::uint64_t>(py * img.width + px + 1);
    }
  }
  if (img.keep_counts) r.counts = std::move(counts);
  return r;
}

bool write_pgm(const std::string& path, const image& img, const std::vector<band_result>& by_band) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  bool ok = std::fprintf(f, "P5\n%ld %ld\n255\n", img.width, img.height) > 0;
  for (const band_result& r : by_band) {
    std::vector<std::uint8_t> shade(r.counts.size());
    for (std::size_t i = 0; i < r.counts.size(); ++i)
      shade[i] = static_cast<std::uint8_t>(max_count - r.counts[i]);
    ok = ok && std::fwrite(shade.data(), 1, shade.size(), f) == shade.size();
  }
  return std::fclose(f) == 0 && ok;
}

[[noreturn]] void usage(const char* prog) {
  std::fprintf(stderr, "usage: %s [WIDTH >= 1] [HEIGHT >= 1] [BANDS 1..HEIGHT] [--ppm FILE]\n", prog);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  long numbers[3] = {1024, 1024, 64};
  int given = 0;
  std::string ppm;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--ppm") == 0) {
      if (i + 1 == argc) usage(argv[0]);
      ppm = argv[++i];
      continue;
    }
    char* end = nullptr;
    const long v = std::strtol(argv[i], &end, 10);
    if (given == 3 || end == argv[i] || *end != '\0') usage(argv[0]);
    numbers[given++] = v;
  }
  const image img{numbers[0], numbers[1], numbers[2], !ppm.empty()};
  if (img.width < 1 || img.height < 1 || img.bands < 1 || img.bands > img.height || img.width > 1L << 20 ||
      img.height > 1L << 20)
    usage(argv[0]);

  weft::print("mandelbrot: {} x {}, {} bands\n", img.width, img.height, img.bands);
  const auto start = std::chrono::steady_clock::now();
  weft::channel<band_result> results;
  for (long b = 0; b < img.bands; ++b)
    weft::spawn([img, b, results]() mutable {
      band_result r = compute_band(img, b);
      weft::print("band {} done\n", b);
      results.send(std::move(r));
    });
  std::vector<band_result> by_band(static_cast<std::size_t>(img.bands));
  for (long i = 0; i < img.bands; ++i) {
    band_result r = results.receive();
    const long b = r.band;
    by_band[static_cast<std::size_t>(b)] = std::move(r);
  }
  weft::run();  // the bands return from their sends and end
  const auto stop = std::chrono::steady_clock::now();

  std::uint64_t iterations = 0, checksum = 0;
  for (const band_result& r : by_band) {
    iterations += r.iterations;
    checksum += r.weighted;
  }
  if (!ppm.empty() && !write_pgm(ppm, img, by_band)) {
    std::fprintf(stderr, "%s: cannot write %s\n", argv[0], ppm.c_str());
    return 1;
  }
  const std::size_t left = weft::resources().live_tasklets;
  weft::print("iterations: {}\n", iterations);
  weft::print("tasklets left: {}\n", left);
  weft::print("checksum: {}\n", checksum);
  fmt::print(stderr, "time: {:.1f} ms\n", std::chrono::duration<double, std::milli>(stop - start).count());
  weft::shutdown();
  return left == 0 ? 0 : 1;
}
