#!/usr/bin/env bash
# Installs what is missing, builds weft (Release) and runs the flagship sample: hackysack with 10,000
# tasklets and 1,000,000 passes, printing its checksum and the time taken.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --parallel "$(nproc)" --target weft_sample_hackysack >/dev/null
./build/samples/weft_sample_hackysack 10000 1000000
