#!/usr/bin/env bash
# Installs what is missing, builds weft (Release) and runs the flagship: the Mandelbrot sample (a
# tasklet per band of rows, PyPy-STM's classic benchmark) in ordered mode on every core, then on one
# worker; prints both checksums (they must be equal: ordered mode commits in serial order) and the
# speedup. Arguments, if any, go to the sample (default: 2048 x 2048 in 128 bands).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --parallel "$(nproc)" --target weft_sample_mandelbrot >/dev/null
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(2048 2048 128)
cores=$(nproc)
run() {  # run <workers>: prints "<checksum> <ms>"
  local out err
  err=$(mktemp)
  out=$(WEFT_WORKERS=$1 ./build/samples/weft_sample_mandelbrot "${args[@]}" 2>"$err" | grep '^checksum:')
  local ms
  ms=$(grep '^time:' "$err" | awk '{print $2}')
  rm -f "$err"
  echo "${out#checksum: } $ms"
}
read -r sum_n ms_n < <(run "$cores")
read -r sum_1 ms_1 < <(run 1)
echo "mandelbrot ${args[*]}"
echo "checksum at $cores workers (ordered): $sum_n   (${ms_n} ms)"
echo "checksum at 1 worker:              $sum_1   (${ms_1} ms)"
if [ "$sum_n" != "$sum_1" ]; then
  echo "checksums differ: ordered mode is broken" >&2
  exit 1
fi
awk -v a="$ms_1" -v b="$ms_n" -v c="$cores" 'BEGIN { printf "speedup at %d workers: %.2fx\n", c, a / b }'
