#!/usr/bin/env bash
# Installs what is missing, builds weft and its tests, and runs the whole suite through CTest.
# Usage: tools/test.sh [--sanitize=address|thread] [ctest arguments...]
#   default: Release build in build/; --sanitize=address: ASan+UBSan Debug build in build-asan/;
#   --sanitize=thread: TSan Debug build in build-tsan/.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitize=""
if [[ "${1:-}" == --sanitize=* ]]; then
  sanitize="${1#--sanitize=}"
  shift
fi
tools/deps.sh
if [ -z "$sanitize" ]; then
  dir=build
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
else
  dir="build-${sanitize/address/asan}"
  dir="${dir/thread/tsan}"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DWEFT_SANITIZE="$sanitize" >/dev/null
fi
cmake --build "$dir" --parallel "$(nproc)"
cd "$dir"
ctest --output-on-failure --parallel "$(nproc)" --timeout 900 "$@"
