#!/usr/bin/env bash
# bench/stm/ab.sh — two builds of weft's STM side by side: the weft variant of every bench/stm workload
# at 1 and 2 threads, runs of the two binaries interleaved (A B A B ...) so drift hits both alike.
# Prints, per case, the median Mtx/s of each, the ratio B/A (above 1: B is faster) and the spread
# (min-max of each), then exits 1 if any run failed or any check did not hold.
#
# Usage: bench/stm/ab.sh A_BINARY B_BINARY [REPS (default 5)] [SECONDS per run (default 0.5)]
#   e.g. bench/stm/ab.sh /tmp/weft-base/build/bench/stm/weft_stm_bench build/bench/stm/weft_stm_bench
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n '2,9p' "$0"; exit 2; }
A="$1" B="$2" REPS="${3:-5}" SECS="${4:-0.5}"
CASES=("bank 64" "bank 1000000" "intset-list 1024" "intset-skiplist 65536" "hashmap 32768")
RUN_ENV=()
while read -r var; do RUN_ENV+=(-u "$var"); done < <(compgen -e | grep '^WEFT_' || true)
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
status=0
for ((rep = 1; rep <= REPS; rep++)); do
  for c in "${CASES[@]}"; do
    read -r workload param <<<"$c"
    for threads in 1 2; do
      for which in A B; do
        bin="$A"; [[ $which == B ]] && bin="$B"
        if line="$(env "${RUN_ENV[@]}" "$bin" "$workload" weft "$threads" "$param" --seconds "$SECS" --seed $((0x5eed + rep)))" &&
           [[ $line == *'"check":"ok"'* ]]; then
          mtx="$(sed -E 's/.*"mtx_per_s":([0-9.eE+-]+).*/\1/' <<<"$line")"
          printf '%s %s %s %s %s\n' "$workload" "$param" "$threads" "$which" "$mtx" >>"$out"
        else
          echo "ab.sh: FAILED: $which $workload $param $threads thread(s): $line" >&2
          status=1
        fi
      done
    done
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" "$REPS" "$SECS" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    w, p, t, which, v = line.split()
    rows[(w, int(p), int(t), which)].append(float(v))
print(f"| workload | threads | A Mtx/s (min-max) | B Mtx/s (min-max) | B/A |  ({sys.argv[2]} runs of {sys.argv[3]} s each, interleaved)")
print("|---|---:|---:|---:|---:|")
for (w, p, t) in sorted({k[:3] for k in rows}, key=lambda k: (k[0], k[1], k[2])):
    a, b = rows.get((w, p, t, "A"), []), rows.get((w, p, t, "B"), [])
    if not a or not b:
        print(f"| {w} {p} | {t} | | | |"); continue
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"| {w} {p} | {t} | {ma:.2f} ({min(a):.2f}-{max(a):.2f}) | {mb:.2f} ({min(b):.2f}-{max(b):.2f}) | {mb/ma:.2f} |")
PY
exit $status
