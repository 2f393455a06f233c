#!/usr/bin/env bash
# bench/compare.sh — weft's microthread benchmarks against its peers, measured in the same run.
#
# Usage (from the project root):  bench/compare.sh [--quick]
#   --quick   one repetition per workload and implementation instead of five. The workloads themselves
#             are never shrunk: they are the definitions of ../shared/ANCHORS.md.
# Environment:
#   WEFT_BENCH      weft's benchmark binary (default build/bench/weft_workloads). If it is missing the
#                   peers' columns are still printed.
#   BENCH_TIMEOUT   seconds allowed per single run (default 600).
#
# What it does: builds the peers into build-peers/ (Go with `go build`, Boost.Fiber and raw fcontext with
# CMake, Release -O2, one compile at a time), runs every workload for every implementation (repetitions
# interleaved across implementations so drift hits all of them alike), appends each run's JSON line to
# build-peers/results.jsonl, checks that checksums agree across implementations and with ANCHORS, and prints
# a markdown table of medians with ratio columns weft/peer (lower is better for weft).
#
# Contract every implementation's binary follows (bench/peers/* and weft's):
#   prog WORKLOAD [N] [K]   ->  exactly one JSON line on stdout, exit status 0:
#   {"impl":"weft","workload":"hackysack","n":1000000,"k":1000,"ns_per_op":227.1,"total_ms":227.1,
#    "checksum":499382756,"bytes_per_task":0,"teardown_ms":0}
#   ns_per_op = total / N; timed by the program itself with a monotonic clock around the workload only.
#   Exit status 3 = workload not supported by this implementation (shown as "—").
#   Workloads, their N and their checksums (one thread / one processor):
#     yield 10000000          2 tasks yielding to each other, N switches;        checksum = N
#     pingpong 1000000        unbuffered channel round trips (send i, answer i+1); checksum = N(N+1)/2
#     spawn 1000000           N tasks blocked in a receive on one channel; ns_per_op = spawn+block per
#                             task, bytes_per_task = RSS delta / N, teardown_ms = wake/close and reclaim
#                             all;                                                 checksum = N finished
#     sieve 2000              chained-channel prime sieve, first N primes;       checksum = 16274627
#     hackysack 1000000 1000  K tasks, own unbuffered channel, xorshift64 ball;  checksum = 499382756
#     hackysack 1000000 100000                                                   checksum = 50011331750
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REPS=5
for arg in "$@"; do
    case "$arg" in
        --quick) REPS=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown argument '$arg' (use --quick)" >&2; exit 2 ;;
    esac
done

OUT=build-peers
RESULTS="$OUT/results.jsonl"
WEFT_BIN="${WEFT_BENCH:-build/bench/weft_workloads}"
TIMEOUT="${BENCH_TIMEOUT:-600}"
mkdir -p "$OUT"

say() { echo "compare.sh: $*" >&2; }

# ---- build the peers ---------------------------------------------------------------------------------
declare -A BIN=()
if command -v go >/dev/null 2>&1; then
    if GO111MODULE=off GOCACHE="${GOCACHE:-$ROOT/$OUT/.gocache}" \
        go build -o "$OUT/go_workloads" bench/peers/go/workloads.go; then
        BIN[go]="$OUT/go_workloads"
    else
        say "go build failed; the go column will be empty"
    fi
else
    say "go not found; the go column will be empty"
fi

if cmake -S bench/peers -B "$OUT" -DCMAKE_BUILD_TYPE=Release >"$OUT/cmake-configure.log" 2>&1 &&
    cmake --build "$OUT" --parallel 1 >"$OUT/cmake-build.log" 2>&1; then
    BIN[fiber]="$OUT/fiber_workloads"
    BIN[fcontext]="$OUT/fcontext_workloads"
else
    say "building the C++ peers failed (see $OUT/cmake-*.log); fiber and fcontext columns will be empty"
fi

if [[ -x "$WEFT_BIN" ]]; then
    BIN[weft]="$WEFT_BIN"
else
    say "weft binary not found at $WEFT_BIN (set WEFT_BENCH or build the bench target); printing peers only"
fi

IMPLS=()
for impl in go fiber fcontext weft; do
    [[ -n "${BIN[$impl]:-}" ]] && IMPLS+=("$impl")
done

# ---- run ----------------------------------------------------------------------------------------------
# Each case: workload and its arguments, fixed by ANCHORS.md.
CASES=(
    "yield 10000000"
    "pingpong 1000000"
    "spawn 1000000"
    "sieve 2000"
    "hackysack 1000000 1000"
    "hackysack 1000000 100000"
)

: >"$RESULTS"
export GOMAXPROCS=1
for case in "${CASES[@]}"; do
    read -r -a argv <<<"$case"
    for ((rep = 1; rep <= REPS; rep++)); do
        for impl in "${IMPLS[@]}"; do
            say "$case [$impl, run $rep/$REPS]"
            status=0
            line="$(timeout "$TIMEOUT" "${BIN[$impl]}" "${argv[@]}" 2>"$OUT/last-stderr.log")" || status=$?
            if [[ $status -eq 3 ]]; then
                continue  # workload not supported by this implementation
            elif [[ $status -ne 0 ]]; then
                say "WARNING: $impl $case failed with status $status: $(tail -n 3 "$OUT/last-stderr.log")"
                continue
            fi
            json="$(grep -m1 '^{' <<<"$line" || true)"
            if [[ -z "$json" ]]; then
                say "WARNING: $impl $case printed no JSON line"
                continue
            fi
            echo "$json" >>"$RESULTS"
        done
    done
done

# ---- table --------------------------------------------------------------------------------------------
python3 - "$RESULTS" "$REPS" <<'PY'
import json, statistics, sys
from collections import defaultdict

results_path, reps = sys.argv[1], int(sys.argv[2])
runs = defaultdict(list)  # (impl, workload, n, k) -> [record]
for line in open(results_path):
    line = line.strip()
    if not line:
        continue
    try:
        r = json.loads(line)
    except json.JSONDecodeError:
        print(f"WARNING: unparsable result line: {line}")
        continue
    runs[(r["impl"], r["workload"], int(r["n"]), int(r.get("k", 0)))].append(r)

IMPLS = ["go", "fiber", "fcontext", "weft"]
PEERS = ["go", "fiber", "fcontext"]
# (row label, workload, n, k or None for "any", metric)
ROWS = [
    ("yield switch, ns", "yield", 10_000_000, None, "ns_per_op"),
    ("ping-pong, ns/round trip", "pingpong", 1_000_000, None, "ns_per_op"),
    ("spawn 1M, ns/task", "spawn", 1_000_000, None, "ns_per_op"),
    ("spawn 1M, bytes/task", "spawn", 1_000_000, None, "bytes_per_task"),
    ("teardown 1M, ms", "spawn", 1_000_000, None, "teardown_ms"),
    ("sieve 2000, ms", "sieve", 2_000, None, "total_ms"),
    ("hackysack K=1000, ms", "hackysack", 1_000_000, 1_000, "total_ms"),
    ("hackysack K=100000, ms", "hackysack", 1_000_000, 100_000, "total_ms"),
]
# Expected checksums: ANCHORS.md values, or the definition for the synthetic ones.
EXPECTED = {
    ("yield", 10_000_000, None): 10_000_000,
    ("pingpong", 1_000_000, None): 1_000_000 * 1_000_001 // 2,
    ("spawn", 1_000_000, None): 1_000_000,
    ("sieve", 2_000, None): 16274627,
    ("hackysack", 1_000_000, 1_000): 499382756,
    ("hackysack", 1_000_000, 100_000): 50011331750,
}

def records(impl, workload, n, k):
    out = []
    for (i, w, rn, rk), rs in runs.items():
        if i == impl and w == workload and rn == n and (k is None or rk == k):
            out.extend(rs)
    return out

def median(impl, workload, n, k, metric):
    rs = records(impl, workload, n, k)
    return statistics.median(float(r[metric]) for r in rs) if rs else None

def fmt(v, metric):
    if v is None:
        return "—"
    if metric == "bytes_per_task":
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"

# Checksums: every run of every implementation must agree with the others and with the definition.
warnings = []
for (workload, n, k), expected in EXPECTED.items():
    seen = {}
    for impl in IMPLS:
        sums = sorted({int(r["checksum"]) for r in records(impl, workload, n, k)})
        if sums:
            seen[impl] = sums
    label = f"{workload} n={n}" + (f" k={k}" if k else "")
    flat = {s for sums in seen.values() for s in sums}
    if len(flat) > 1:
        detail = ", ".join(f"{i}={'/'.join(map(str, s))}" for i, s in seen.items())
        warnings.append(f"WARNING: checksum mismatch across implementations for {label}: {detail}")
    for impl, sums in seen.items():
        if any(s != expected for s in sums):
            warnings.append(f"WARNING: {impl} checksum for {label} is {'/'.join(map(str, sums))}, "
                            f"expected {expected}")

print(f"Median of {reps} run{'s' if reps != 1 else ''} per cell; ratios are weft/peer (lower is better).")
print()
header = ["workload"] + IMPLS + [f"weft/{p}" for p in PEERS]
print("| " + " | ".join(header) + " |")
print("|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|")
for label, workload, n, k, metric in ROWS:
    vals = {impl: median(impl, workload, n, k, metric) for impl in IMPLS}
    cells = [label] + [fmt(vals[i], metric) for i in IMPLS]
    for p in PEERS:
        w, v = vals["weft"], vals[p]
        cells.append(f"{w / v:.2f}" if w is not None and v else "—")
    print("| " + " | ".join(cells) + " |")
if warnings:
    print()
    for w in warnings:
        print(w)
PY
say "raw results: $RESULTS"
