#!/usr/bin/env bash
# bench/ordered.sh — what ordered mode costs and gains (issue 10), measured in one run, interleaved,
# medians of REPS runs with the spread (min-max) of each ratio. Prints one table.
#
#   bash bench/ordered.sh [BASELINE_BUILD_DIR] [REPS]
#
# Rows:
#   one worker, after vs before   weft_workloads pingpong / sieve / hackysack of this tree vs the same
#                                 binary built from BASELINE_BUILD_DIR (a build of the commit before
#                                 ordered mode; skipped if not given): must stay <= 1.05
#   speculation overhead          a sample at WEFT_WORKERS=1 WEFT_MODE=ordered WEFT_GUARD=0 (every
#                                 segment speculative) vs serial: targets <= 1.1 mandelbrot, <= 1.4 hackysack
#   scaling                       ordered at 2 workers vs serial: mandelbrot >= 1.9, agents >= 1.7, bank (1M
#                                 accounts) >= 1.5; hackysack, sieve and a spawn loop (weft_workloads spawn)
#                                 >= 0.9 through the guard (which may also go back to parallel)
#   ceiling                       weft_ceiling: the same work on plain std::threads, 2 vs 1 (what the
#                                 machine gives mandelbrot, agents and bank without any runtime; on
#                                 this VM random transfers on plain threads went from 0.9 to 1.6-2.2
#                                 within an hour, 2026-12-03)
#   segment sweep                 weft_segment_sweep at 2 workers (guard off) vs 1, per segment length,
#                                 beside the prototype's fit 2s / (s + 0.57 us)
#   speculation by length         weft_segment_sweep at WEFT_WORKERS=1 WEFT_MODE=ordered WEFT_GUARD=0 vs
#                                 serial, per segment length from 0 (a bare schedule()) to 2 us, with
#                                 the machinery's cost per segment in ns: the length from which a
#                                 program's speculation overhead is under 1.4x and 1.1x
# Each ordered run also reports (WEFT_STATS=1) aborts per commit and the mean segment length.
# Ratios are time(row) / time(baseline) for costs, time(serial) / time(ordered) for speedups.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline="${1:-}"
reps="${2:-5}"
b=build
for t in weft_workloads weft_segment_sweep weft_ceiling; do [ -x "$b/bench/$t" ] || { echo "build $b first (Release)" >&2; exit 2; }; done
grep -q 'CMAKE_BUILD_TYPE:STRING=Release' "$b/CMakeCache.txt" || { echo "$b is not a Release build" >&2; exit 2; }
for v in $(env | grep -o '^WEFT_[A-Z_]*' || true); do unset "$v"; done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# time_of LABEL CMD...: runs CMD, appends its time in ms to $tmp/LABEL (from the JSON total_ms, else
# from a "time: X ms" line on stderr), keeps WEFT_STATS lines.
time_of() {
  local label=$1
  shift
  local out err ms
  out=$("$@" 2>"$tmp/err") || { echo "FAILED: $*" >&2; cat "$tmp/err" >&2; exit 1; }
  ms=$(printf '%s\n' "$out" | grep -o '"total_ms":[0-9.]*' | cut -d: -f2 || true)
  [ -z "$ms" ] && ms=$(grep -o '^time: [0-9.]*' "$tmp/err" | awk '{print $2}')
  echo "$ms" >> "$tmp/$label"
  grep 'weft run stats' "$tmp/err" | sed 's/^.*\] //' > "$tmp/$label.stats" || true
  printf '%s\n' "$out" | grep -o '"checksum":[0-9]*\|^checksum: [0-9]*' | tail -1 > "$tmp/$label.sum"
}

median() { sort -g "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
# ratio NUM DEN: median ratio of the paired runs, with min and max
ratio() {
  paste "$tmp/$1" "$tmp/$2" | awk '{print $1 / $2}' > "$tmp/r"
  printf '%.3f (%.3f-%.3f)' "$(median "$tmp/r")" "$(sort -g "$tmp/r" | head -1)" "$(sort -g "$tmp/r" | tail -1)"
}
# notes LABEL: aborts per commit, mean segment and time between segments (committing and dispatching,
# all threads) of the last run
notes() {
  local f="$tmp/$1.stats"
  [ -s "$f" ] || return 0
  # The first run's block only (the sieve sample runs weft::run() twice; its second run is empty).
  awk '/run stats: ordered/ && n++ {exit} {print}' "$f" > "$f.first" && f="$f.first"
  grep -o '([0-9.]* per commit)\|mean segment [0-9.]* us' "$f" | tr '\n' ' '
  awk '/committing/ {for (i = 1; i <= NF; ++i) if ($(i+1) == "ms" && $(i+2) == "committing") c += $i}
       END {printf "%.1f ms committing+dispatching", c}' "$f"
}
row() { printf '%-46s %-26s %s\n' "$1" "$2" "$3"; }
same_sum() { cmp -s "$tmp/$1.sum" "$tmp/$2.sum" || { echo "CHECKSUMS DIFFER: $1 vs $2" >&2; exit 1; }; }

S=$b/samples
W=$b/bench/weft_workloads
declare -A cmd=(
  [mandelbrot]="$S/weft_sample_mandelbrot 1024 1024 64"
  [agents]="$S/weft_sample_agents 1024 1024 16 100 1"
  [bank]="$S/weft_sample_bank 1000000 100000 8 2 1"
  [hackysack]="$S/weft_sample_hackysack 1000 1000000"
  [sieve]="$S/weft_sample_sieve 2000"  # time to stderr: the chain's build-up and all receives
  [spawn]="$W spawn 100000"  # main's loop of spawns, then run() takes each to its receive
)
steps_per_us=$(awk -v n="$($b/bench/weft_segment_sweep --calibrate)" 'BEGIN {print 1000 / n}')
sweep_us=(0.5 1 2 5 10 20 50 100 200)
spec_us=(0 0.1 0.25 0.5 1 2)
spec_segs() { awk -v u="$1" 'BEGIN {print int(12500 / (u + 0.1))}'; }  # ~100 ms serial at every length

for ((i = 0; i < reps; ++i)); do
  if [ -n "$baseline" ]; then
    for w in "pingpong 1000000" "sieve 2000" "hackysack 1000000 1000"; do
      set -- $w
      time_of "w1-after-$1" $W $w
      time_of "w1-before-$1" "$baseline/bench/weft_workloads" $w
    done
  fi
  for s in mandelbrot hackysack; do
    time_of "serial-$s" ${cmd[$s]}
    time_of "spec1-$s" env WEFT_WORKERS=1 WEFT_MODE=ordered WEFT_GUARD=0 WEFT_STATS=1 ${cmd[$s]}
  done
  for s in mandelbrot agents bank hackysack sieve spawn; do
    [ -f "$tmp/serial-$s" ] && [ "$(wc -l < "$tmp/serial-$s")" -gt "$i" ] || time_of "serial-$s" ${cmd[$s]}
    time_of "ordered2-$s" env WEFT_WORKERS=2 WEFT_STATS=1 ${cmd[$s]}
  done
  for s in mandelbrot agents bank; do
    time_of "plain1-$s" $b/bench/weft_ceiling $s 1
    time_of "plain2-$s" $b/bench/weft_ceiling $s 2
  done
  for us in "${sweep_us[@]}"; do
    steps=$(awk -v u="$us" -v r="$steps_per_us" 'BEGIN {printf "%d", u * r + 0.5}')
    segs=$(awk -v u="$us" 'BEGIN {n = int(20000 / u); if (n < 20) n = 20; if (n > 2000) n = 2000; print n}')
    time_of "sweep1-$us" $b/bench/weft_segment_sweep 8 "$segs" "$steps"
    time_of "sweep2-$us" env WEFT_WORKERS=2 WEFT_GUARD=0 WEFT_STATS=1 $b/bench/weft_segment_sweep 8 "$segs" "$steps"
  done
  for us in "${spec_us[@]}"; do
    steps=$(awk -v u="$us" -v r="$steps_per_us" 'BEGIN {printf "%d", u * r + 0.5}')
    segs=$(spec_segs "$us")
    time_of "specsw1-$us" $b/bench/weft_segment_sweep 8 "$segs" "$steps"
    time_of "specsw-$us" env WEFT_WORKERS=1 WEFT_MODE=ordered WEFT_GUARD=0 WEFT_STATS=1 $b/bench/weft_segment_sweep 8 "$segs" "$steps"
  done
done

echo "ordered mode, $reps runs interleaved, medians (min-max of the paired ratios); $(nproc) cores, $(date -u +%F)"
row "measure" "ratio" "target / notes"
if [ -n "$baseline" ]; then
  for w in pingpong sieve hackysack; do
    row "one worker: $w, after / before" "$(ratio w1-after-$w w1-before-$w)" "<= 1.05"
  done
fi
for s in mandelbrot hackysack; do
  same_sum "serial-$s" "spec1-$s"
  target=$([ $s = mandelbrot ] && echo "<= 1.1" || echo "<= 1.4")
  row "speculative 1 worker / serial: $s" "$(ratio spec1-$s serial-$s)" "$target; $(notes spec1-$s)"
done
for s in mandelbrot agents bank hackysack sieve spawn; do
  same_sum "serial-$s" "ordered2-$s"
  case $s in mandelbrot) t=">= 1.9" ;; agents) t=">= 1.7" ;; bank) t=">= 1.5" ;; *) t=">= 0.9 (guard)" ;; esac
  fb=$(grep -q 'fell back' "$tmp/ordered2-$s.stats" && echo "fell back to serial; " || true)
  back=$(grep -o 'returned to parallel [0-9]* time' "$tmp/ordered2-$s.stats" | head -1 | grep -o '[0-9]*' || true)
  [ -n "$back" ] && fb="${fb%; }, back to parallel $back times; "
  row "speedup 2 workers vs serial: $s" "$(ratio serial-$s ordered2-$s)" "$t; $fb$(notes ordered2-$s)"
done
for s in mandelbrot agents bank; do
  # bank's plain threads do the transfers in another order: their check is the conserved total
  if [ $s = bank ]; then same_sum "plain1-$s" "plain2-$s"; else same_sum "serial-$s" "plain2-$s"; fi
  row "ceiling, plain threads 2 vs 1: $s" "$(ratio plain1-$s plain2-$s)" "same work, no runtime (bench/ceiling.cpp)"
done
for us in "${sweep_us[@]}"; do
  same_sum "sweep1-$us" "sweep2-$us"
  fit=$(awk -v s="$us" 'BEGIN {printf "%.2f", 2 * s / (s + 0.57)}')
  row "sweep: ${us} us segments, 2 workers vs 1" "$(ratio sweep1-$us sweep2-$us)" "prototype fit $fit; $(notes sweep2-$us)"
done
for us in "${spec_us[@]}"; do
  same_sum "specsw1-$us" "specsw-$us"
  # the machinery's cost per segment: the medians' difference over the 8 tasklets' segments
  per=$(awk -v a="$(median "$tmp/specsw-$us")" -v b="$(median "$tmp/specsw1-$us")" -v n="$(spec_segs "$us")" \
    'BEGIN {printf "%.0f", (a - b) * 1e6 / (8 * n)}')
  row "speculative 1 worker / serial: sweep ${us} us" "$(ratio specsw-$us specsw1-$us)" "$per ns a segment more; $(notes specsw-$us)"
done
