#!/usr/bin/env bash
# bench/compare.sh — weft's microthread benchmarks against its peers, measured in the same run.
#
# Usage (from the project root):  bench/compare.sh [--quick]
#   --quick   one repetition per workload and implementation instead of five. The workloads themselves
#             are never shrunk: they are the definitions of ../shared/ANCHORS.md.
# Environment:
#   WEFT_BENCH      weft's benchmark binary (default build/bench/weft_workloads), a Release or
#                   RelWithDebInfo build without sanitizer: anything else is refused (exit status 2). If
#                   it is missing the peers' columns are still printed.
#   BENCH_TIMEOUT   seconds allowed per single run (default 600).
#   Every other WEFT_* variable (WEFT_STACK_SIZE, WEFT_WORKERS, ...) is removed from the environment of
#   the runs: weft is measured as built, with its defaults.
#
# What it does: runs weft once on a tiny game to read how it was built (the build, cxxflags and sanitize
# fields of its JSON line); builds the peers into build-peers/ (Go with `go build`; Boost.Fiber and raw
# fcontext with CMake at weft's build type and flags, CMake's Release -O3 -DNDEBUG by default, one
# compile at a time); runs every workload for every implementation (repetitions interleaved across
# implementations so drift hits all of them alike), appends each run's JSON line to
# build-peers/results.jsonl, checks every checksum against ANCHORS (values recomputed by
# tools/expected_checksums.py) and that the C++ implementations were compiled alike and ran on the same
# stack size, and prints a markdown table of medians with ratio columns weft/peer (lower is better for
# weft). Every task runs on a 64 KiB stack (weft's default; Go's stacks grow), except fiber-16k: Boost.Fiber
# on its usual 16 KiB fixed-size stacks, the yardstick of issue 11 §6.
#
# Failures: a run that exits non-zero (other than 3), times out, prints no JSON line or a wrong checksum
# leaves its cell (and the ratios using it) blank, is listed under the table, and makes the script exit
# with status 1 once the table is printed; so does a peer that fails to build or a disagreement in the
# build flags or stack sizes. Exit status 2: bad arguments, or a weft binary that is not an optimised,
# sanitizer-free build.
#
# Contract every implementation's binary follows (bench/peers/* and weft's):
#   prog WORKLOAD [N] [K]   ->  exactly one JSON line on stdout, exit status 0:
#   {"impl":"weft","workload":"hackysack","n":1000000,"k":1000,"ns_per_op":227.1,"total_ms":227.1,
#    "checksum":499382756,"bytes_per_task":0,"teardown_ms":0,"stack_bytes":65536,"build":"Release",
#    "cxxflags":"-O3 -DNDEBUG","sanitize":"","compiler":"gcc 12.2.0"}
#   ns_per_op = total / N; timed by the program itself with a monotonic clock around the workload only.
#   Exit status 3 = workload not supported by this implementation (shown as "—"); any other non-zero
#   status is a failed run (weft_workloads returns 1 when a tasklet survives weft::shutdown()).
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
        -h|--help) sed -n '2,/^set -e/{/^set -e/!p}' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown argument '$arg' (use --quick)" >&2; exit 2 ;;
    esac
done

OUT=build-peers
RESULTS="$OUT/results.jsonl"
FAILURES="$OUT/failures.txt"  # one line per problem: "impl<TAB>workload n k<TAB>what went wrong"
WEFT_BIN="${WEFT_BENCH:-build/bench/weft_workloads}"
TIMEOUT="${BENCH_TIMEOUT:-600}"
mkdir -p "$OUT"
: >"$RESULTS"
: >"$FAILURES"

say() { echo "compare.sh: $*" >&2; }
fail() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$FAILURES"; say "FAILED: $1 $2: $3"; }

# ---- a clean environment for every run -------------------------------------------------------------
# WEFT_STACK_SIZE, WEFT_WORKERS, WEFT_STACK_GUARD, WEFT_STM_SOLO, WEFT_PROFILE ... would change what is
# measured: every run gets the environment without any WEFT_* variable (GOMAXPROCS is pinned to 1).
RUN_ENV=(env)
while IFS= read -r var; do
    [[ $var == WEFT_BENCH ]] || say "ignoring $var=${!var} from the environment"
    RUN_ENV+=(-u "$var")
done < <(compgen -e | grep '^WEFT_' || true)
RUN_ENV+=(GOMAXPROCS=1)

# ---- weft: how was it built? -----------------------------------------------------------------------
# One tiny game (100 passes among 1000 tasklets, checksum 43855) gives weft's JSON line with its build
# type, flags and sanitizer before anything is built or measured.
WEFT_BUILD_TYPE=Release
WEFT_CXXFLAGS=""
if [[ -x "$WEFT_BIN" ]]; then
    status=0
    probe="$(timeout "$TIMEOUT" "${RUN_ENV[@]}" "$WEFT_BIN" hackysack 100 1000 2>"$OUT/last-stderr.log")" ||
        status=$?
    verdict="$(python3 - "$probe" <<'PY'
import json, sys
try:
    r = json.loads(next(l for l in sys.argv[1].splitlines() if l.startswith("{")))
except (StopIteration, json.JSONDecodeError):
    print("bad\tprinted no JSON line"); sys.exit()
build, flags, san = r.get("build"), r.get("cxxflags"), r.get("sanitize")
if build not in ("Release", "RelWithDebInfo"):
    print(f"refuse\tit is a '{build}' build (cxxflags '{flags}'); only Release or RelWithDebInfo are measured")
elif san != "":
    print(f"refuse\tit is a sanitizer build (WEFT_SANITIZE={san}); sanitizers distort every timing")
elif r.get("checksum") != 43855:
    print(f"bad\tits checksum for hackysack 100 1000 is {r.get('checksum')}, expected 43855")
else:
    print(f"ok\t{build}\t{flags}")
PY
)"
    IFS=$'\t' read -r kind a b <<<"$verdict"
    if [[ $kind != refuse && $status -ne 0 ]]; then
        say "weft's probe run ($WEFT_BIN hackysack 100 1000) failed with status $status:"
        tail -n 5 "$OUT/last-stderr.log" >&2
        exit 1
    fi
    case "$kind" in
        ok) WEFT_BUILD_TYPE="$a"; WEFT_CXXFLAGS="${b:-}"
            say "weft: $WEFT_BUILD_TYPE build, flags '$WEFT_CXXFLAGS'; the C++ peers are built the same way" ;;
        refuse) say "refusing to measure $WEFT_BIN: $a"
                say "build weft with -DCMAKE_BUILD_TYPE=Release (and no WEFT_SANITIZE) and point WEFT_BENCH at it"
                exit 2 ;;
        *) say "weft's probe run ($WEFT_BIN hackysack 100 1000) went wrong: $a"; exit 1 ;;
    esac
fi

# ---- build the peers ---------------------------------------------------------------------------------
declare -A BIN=()
if command -v go >/dev/null 2>&1; then
    if GO111MODULE=off GOCACHE="${GOCACHE:-$ROOT/$OUT/.gocache}" \
        go build -o "$OUT/go_workloads" bench/peers/go/workloads.go; then
        BIN[go]="$OUT/go_workloads"
    else
        fail go build "go build failed"
    fi
else
    say "go not found; the go column will be empty (apt-get install golang-go)"
fi

if cmake -S bench/peers -B "$OUT" -DCMAKE_BUILD_TYPE="$WEFT_BUILD_TYPE" -DWEFT_PEERS_CXX_FLAGS="$WEFT_CXXFLAGS" \
        >"$OUT/cmake-configure.log" 2>&1 &&
    cmake --build "$OUT" --parallel 1 >"$OUT/cmake-build.log" 2>&1; then
    BIN[fiber]="$OUT/fiber_workloads"
    BIN[fiber-16k]="$OUT/fiber16k_workloads"
    BIN[fcontext]="$OUT/fcontext_workloads"
else
    fail "fiber+fcontext" build "building the C++ peers failed (see $OUT/cmake-*.log)"
fi

if [[ -x "$WEFT_BIN" ]]; then
    BIN[weft]="$WEFT_BIN"
else
    say "weft binary not found at $WEFT_BIN (set WEFT_BENCH or build the bench target); printing peers only"
fi

IMPLS=()
for impl in go fiber fiber-16k fcontext weft; do
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

for case in "${CASES[@]}"; do
    read -r -a argv <<<"$case"
    for ((rep = 1; rep <= REPS; rep++)); do
        for impl in "${IMPLS[@]}"; do
            say "$case [$impl, run $rep/$REPS]"
            status=0
            line="$(timeout "$TIMEOUT" "${RUN_ENV[@]}" "${BIN[$impl]}" "${argv[@]}" 2>"$OUT/last-stderr.log")" ||
                status=$?
            if [[ $status -eq 3 ]]; then
                continue  # workload not supported by this implementation
            elif [[ $status -eq 124 ]]; then
                fail "$impl" "$case" "timed out after ${TIMEOUT}s"
                continue
            elif [[ $status -ne 0 ]]; then
                fail "$impl" "$case" "exit status $status: $(tail -n 3 "$OUT/last-stderr.log" | tr '\n' ' ')"
                continue
            fi
            json="$(grep -m1 '^{' <<<"$line" || true)"
            if [[ -z "$json" ]]; then
                fail "$impl" "$case" "printed no JSON line"
                continue
            fi
            echo "$json" >>"$RESULTS"
        done
    done
done

# ---- table --------------------------------------------------------------------------------------------
status=0
python3 - "$RESULTS" "$FAILURES" "$REPS" <<'PY' || status=$?
import json, statistics, sys
from collections import defaultdict

results_path, failures_path, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
IMPLS = ["go", "fiber", "fiber-16k", "fcontext", "weft"]
PEERS = ["go", "fiber", "fiber-16k", "fcontext"]
CXX_IMPLS = ["fiber", "fiber-16k", "fcontext", "weft"]
SAME_STACK = ["fiber", "fcontext", "weft"]  # fiber-16k is Boost.Fiber on its usual 16 KiB on purpose
# (row label, workload, n, k, metric)
ROWS = [
    ("yield switch, ns", "yield", 10_000_000, 0, "ns_per_op"),
    ("ping-pong, ns/round trip", "pingpong", 1_000_000, 0, "ns_per_op"),
    ("spawn 1M, ns/task", "spawn", 1_000_000, 0, "ns_per_op"),
    ("spawn 1M, bytes/task", "spawn", 1_000_000, 0, "bytes_per_task"),
    ("teardown 1M, ms", "spawn", 1_000_000, 0, "teardown_ms"),
    ("sieve 2000, ms", "sieve", 2_000, 0, "total_ms"),
    ("hackysack K=1000, ms", "hackysack", 1_000_000, 1_000, "total_ms"),
    ("hackysack K=100000, ms", "hackysack", 1_000_000, 100_000, "total_ms"),
]
# Expected checksums: ANCHORS.md values (recomputed by tools/expected_checksums.py), or the definition.
EXPECTED = {
    ("yield", 10_000_000, 0): 10_000_000,
    ("pingpong", 1_000_000, 0): 1_000_000 * 1_000_001 // 2,
    ("spawn", 1_000_000, 0): 1_000_000,
    ("sieve", 2_000, 0): 16274627,
    ("hackysack", 1_000_000, 1_000): 499382756,
    ("hackysack", 1_000_000, 100_000): 50011331750,
}

problems = []            # every line printed under the table; any of them fails the script
failed = set()           # (impl, workload, n, k) whose cells are left blank
for line in open(failures_path):
    impl, case, what = line.rstrip("\n").split("\t", 2)
    problems.append(f"{impl} {case}: {what}")
    words = case.split()
    if len(words) >= 2:  # a run (not a build step)
        failed.add((impl, words[0], int(words[1]), int(words[2]) if len(words) > 2 else 0))

runs = defaultdict(list)  # (impl, workload, n, k) -> [record]
builds = {}               # impl -> (build, cxxflags, sanitize, stack_bytes, compiler) of its runs
for line in open(results_path):
    line = line.strip()
    try:
        r = json.loads(line)
        key = (r["impl"], r["workload"], int(r["n"]), int(r.get("k", 0)))
        checksum = int(r["checksum"])
        build = (r["build"], r["cxxflags"], r["sanitize"], r["stack_bytes"], r["compiler"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        problems.append(f"unusable result line ({e!r}): {line}")
        continue
    expected = EXPECTED.get(key[1:])
    label = " ".join(map(str, key[:3])) + (f" {key[3]}" if key[3] else "")
    if expected is None:
        problems.append(f"{label}: no expected checksum for this case")
        failed.add(key)
    elif checksum != expected:
        problems.append(f"{label}: checksum {checksum}, expected {expected}")
        failed.add(key)
    builds.setdefault(key[0], set()).add(build)
    runs[key].append(r)

# Every C++ implementation compiled alike and on one stack size; weft optimised and sanitizer-free.
for impl, seen in builds.items():
    if len(seen) > 1:
        problems.append(f"{impl}: runs from different builds: {sorted(map(str, seen))}")
cxx = {i: next(iter(builds[i])) for i in CXX_IMPLS if i in builds}
if len({(b[0], b[1], b[2]) for b in cxx.values()}) > 1:
    problems.append("the C++ implementations were not compiled alike: " +
                    "; ".join(f"{i}: {b[0]} '{b[1]}' sanitize='{b[2]}'" for i, b in cxx.items()))
if len({b[3] for i, b in cxx.items() if i in SAME_STACK}) > 1:
    problems.append("the C++ implementations ran on different stacks: " +
                    ", ".join(f"{i}={b[3]} bytes" for i, b in cxx.items() if i in SAME_STACK))
if "weft" in cxx and (cxx["weft"][0] not in ("Release", "RelWithDebInfo") or cxx["weft"][2] != ""):
    problems.append(f"weft is a {cxx['weft'][0]} build (sanitize='{cxx['weft'][2]}'): not measured")
    failed.update(k for k in runs if k[0] == "weft")

def median(impl, workload, n, k, metric):
    if (impl, workload, n, k) in failed:
        return "failed"
    rs = runs.get((impl, workload, n, k))
    return statistics.median(float(r[metric]) for r in rs) if rs else None

def fmt(v, metric):
    if v == "failed":
        return ""
    if v is None:
        return "—"
    if metric == "bytes_per_task":
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"

print(f"Median of {reps} run{'s' if reps != 1 else ''} per cell; ratios are weft/peer (lower is better);"
      " — = not run or not supported, blank = FAILED (see below).")
for impl in IMPLS:
    if impl in builds:
        b = next(iter(builds[impl]))
        stack = f"{b[3] // 1024} KiB stacks" if isinstance(b[3], int) else "growable stacks"
        how = f"{b[0]} '{b[1]}'" + (f" sanitize={b[2]}" if b[2] else "") if impl != "go" else "gc toolchain"
        print(f"  {impl}: {b[4]}, {how}, {stack}")
print()
header = ["workload"] + IMPLS + [f"weft/{p}" for p in PEERS]
print("| " + " | ".join(header) + " |")
print("|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|")
for label, workload, n, k, metric in ROWS:
    vals = {impl: median(impl, workload, n, k, metric) for impl in IMPLS}
    cells = [label] + [fmt(vals[i], metric) for i in IMPLS]
    for p in PEERS:
        w, v = vals["weft"], vals[p]
        if "failed" in (w, v):
            cells.append("")
        else:
            cells.append(f"{w / v:.2f}" if w is not None and v else "—")
    print("| " + " | ".join(cells) + " |")
if problems:
    print()
    for p in problems:
        print(f"FAILED: {p}")
    sys.exit(1)
PY
say "raw results: $RESULTS"
if [[ $status -ne 0 ]]; then
    say "FAILED: see the lines under the table (exit status 1)"
    exit 1
fi
