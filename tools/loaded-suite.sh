#!/usr/bin/env bash
# Runs the whole CTest suite of an existing build N times in a row (default 10) while two spinning
# processes keep both cores busy: the check that no test depends on having the machine to itself.
# Usage: tools/loaded-suite.sh [BUILD_DIR (default build)] [N]
# Prints one line per run and exits 1 if any run failed (its log: /tmp/loaded-run-<i>.log).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}" n="${2:-10}"
cd "$dir"
( while :; do :; done ) & s1=$!
( while :; do :; done ) & s2=$!
trap 'kill $s1 $s2 2>/dev/null || true' EXIT
status=0
for i in $(seq 1 "$n"); do
  start=$(date +%s)
  if ctest -j2 --timeout 900 >"/tmp/loaded-run-$i.log" 2>&1; then r=pass; else r=FAIL status=1; fi
  echo "run $i: $r $(grep -E 'tests passed' "/tmp/loaded-run-$i.log") in $(($(date +%s) - start)) s, load $(cut -d' ' -f1 /proc/loadavg)"
done
exit $status
