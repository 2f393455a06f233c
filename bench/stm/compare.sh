#!/usr/bin/env bash
# bench/stm/compare.sh — weft's STM against its peers (no synchronisation, one std::mutex, striped
# locks, GCC libitm), every workload of issue 4 at 1 and 2 threads, measured in the same run; prints a
# markdown table of medians with ratio columns, then the issue-4 targets as MET / NOT MET.
#
# Usage (from anywhere):  bench/stm/compare.sh [--quick]
#   --quick   one repetition per combination instead of three (the workloads are never shrunk)
# Environment:
#   STM_BENCH_BUILD     build directory (default build-stm, Release); configured if it has no cache yet
#   STM_BENCH_SECONDS   measured window of each run (default 1)
#   STM_BENCH_JOBS      parallel compile jobs (default 2)
#   BENCH_TIMEOUT       seconds allowed per run (default 60)
#   Every WEFT_* variable (WEFT_STM_SOLO, WEFT_PROFILE, ...) is removed from the environment of the runs:
#   weft is measured as built, with its defaults. A build directory configured as anything but Release or
#   RelWithDebInfo, or with WEFT_SANITIZE, is refused (exit status 2).
#
# Every run is one process printing one JSON line (bench/stm/main.cpp); the lines are appended to
# $STM_BENCH_BUILD/stm-results.jsonl. Repetitions are interleaved (rep -> workload -> variant -> threads)
# so that drift on this shared machine hits every variant alike, and the 1- and 2-thread runs of a
# variant are back to back (their ratio comes from the same moment). A run whose end-of-run check fails
# (money not conserved, list broken, wrong size, weft's commit count off), that crashes, times out or
# prints no JSON line leaves its cell (and the ratios using it) blank, is listed as FAILED under the
# table, and makes the script exit with status 1 once the table is printed; so does a failed build
# (the previous binary is then measured, and reported as such).
# Full run: 5 workloads x 10 combinations x 3 repetitions of ~1.4 s (0.2 s warm-up, 1 s window,
# setup), about 3.5 minutes; --quick about 1.2 minutes.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

REPS=3
for arg in "$@"; do
    case "$arg" in
        --quick) REPS=1 ;;
        -h|--help) sed -n '2,/^set -e/{/^set -e/!p}' "$HERE/compare.sh"; exit 0 ;;
        *) echo "compare.sh: unknown argument '$arg' (use --quick)" >&2; exit 2 ;;
    esac
done

BUILD="${STM_BENCH_BUILD:-build-stm}"
SECONDS_PER_RUN="${STM_BENCH_SECONDS:-1}"
JOBS="${STM_BENCH_JOBS:-2}"
TIMEOUT="${BENCH_TIMEOUT:-60}"
BIN="$BUILD/bench/stm/weft_stm_bench"
RESULTS="$BUILD/stm-results.jsonl"

say() { echo "compare.sh: $*" >&2; }

# ---- build ----------------------------------------------------------------------------------------
mkdir -p "$BUILD"
FAILURES="$BUILD/stm-failures.txt"  # one line per problem: "workload<TAB>param<TAB>variant<TAB>threads<TAB>what"
: >"$FAILURES"
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
    say "configuring $BUILD (Release)"
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$BUILD/stm-configure.log" 2>&1 ||
        { say "configure failed, see $BUILD/stm-configure.log"; exit 1; }
fi
cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$BUILD/CMakeCache.txt"; }
build_type="$(cache_value CMAKE_BUILD_TYPE)"
sanitize="$(cache_value WEFT_SANITIZE)"
if [[ $build_type != Release && $build_type != RelWithDebInfo ]] || [[ -n $sanitize ]]; then
    say "refusing to measure $BUILD: CMAKE_BUILD_TYPE='$build_type' WEFT_SANITIZE='$sanitize'; only a Release or"
    say "RelWithDebInfo build without sanitizer is measured (set STM_BENCH_BUILD to one, or remove $BUILD)"
    exit 2
fi
say "building weft_stm_bench in $BUILD ($build_type)"
if ! cmake --build "$BUILD" --target weft_stm_bench --parallel "$JOBS" >"$BUILD/stm-build.log" 2>&1; then
    tail -n 30 "$BUILD/stm-build.log" >&2
    [[ -x "$BIN" ]] || { say "build failed, see $BUILD/stm-build.log"; exit 1; }
    printf 'build\t\t\t\tthe build failed (see %s): the previous binary was measured\n' "$BUILD/stm-build.log" >>"$FAILURES"
    say "FAILED: build failed (see $BUILD/stm-build.log); running the previous binary"
fi

# ---- a clean environment for every run -----------------------------------------------------------
RUN_ENV=(env)
while IFS= read -r var; do
    say "ignoring $var=${!var} from the environment"
    RUN_ENV+=(-u "$var")
done < <(compgen -e | grep '^WEFT_' || true)

# ---- run ------------------------------------------------------------------------------------------
CASES=("bank 64" "bank 1000000" "intset-list 1024" "intset-skiplist 65536" "hashmap 32768")
VARIANTS=(unsync mutex striped libitm weft weft-nosolo)

: >"$RESULTS"
failed_run() {
    printf '%s\t%s\t%s\t%s\t%s\n' "$workload" "$param" "$variant" "$threads" "$1" >>"$FAILURES"
    say "FAILED: $workload $param $variant $threads thread(s): $1"
}
say "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((rep = 1; rep <= REPS; rep++)); do
    for case in "${CASES[@]}"; do
        read -r workload param <<<"$case"
        for variant in "${VARIANTS[@]}"; do
            for threads in 1 2; do
                [[ $variant == unsync && $threads -ne 1 ]] && continue
                # solo mode only exists for one thread: weft-nosolo at 2 threads would repeat weft
                [[ $variant == weft-nosolo && $threads -ne 1 ]] && continue
                say "$workload $param $variant $threads thread(s) [run $rep/$REPS]"
                status=0
                line="$(timeout "$TIMEOUT" "${RUN_ENV[@]}" "$BIN" "$workload" "$variant" "$threads" "$param" \
                    --seconds "$SECONDS_PER_RUN" --seed "$((0x5eed + rep))" 2>"$BUILD/stm-last-stderr.log")" ||
                    status=$?
                json="$(grep -m1 '^{' <<<"$line" || true)"
                if [[ $status -eq 3 ]]; then
                    continue  # variant not built (libitm)
                elif [[ $status -eq 124 ]]; then
                    failed_run "timed out after ${TIMEOUT}s (hang?)"
                elif [[ $status -ne 0 && $status -ne 1 ]]; then
                    failed_run "exit status $status (crash?): $(tail -n 2 "$BUILD/stm-last-stderr.log" | tr '\n' ' ')"
                elif [[ -z "$json" ]]; then
                    failed_run "exit status $status, no JSON line"
                else
                    # Status 1 = the check failed: the JSON line says why, the table reports it.
                    echo "$json" >>"$RESULTS"
                    [[ $status -eq 0 ]] || say "FAILED: $workload $param $variant $threads thread(s): check failed"
                fi
            done
        done
    done
done
say "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- table ----------------------------------------------------------------------------------------
status=0
python3 - "$RESULTS" "$FAILURES" "$REPS" "$SECONDS_PER_RUN" <<'PY' || status=$?
import json, statistics, sys
from collections import defaultdict

results_path, failures_path, reps, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
runs = defaultdict(list)          # (workload, param, variant, threads) -> [mtx_per_s]
aborts = defaultdict(list)        # same key -> [aborts_per_commit]
problems = []                     # printed under the table; any of them fails the script
failed = set()                    # keys whose cells are left blank
for line in open(failures_path):
    workload, param, variant, threads, what = line.rstrip("\n").split("\t", 4)
    if workload == "build":
        problems.append(what)
        continue
    problems.append(f"{workload} {param} {variant} {threads} thread(s): {what}")
    failed.add((workload, int(param), variant, int(threads)))
for line in open(results_path):
    try:
        r = json.loads(line)
        key = (r["workload"], int(r["param"]), r["variant"], int(r["threads"]))
        check = r["check"]
        mtx = float(r["mtx_per_s"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        problems.append(f"unusable result line ({e!r}): {line.strip()}")
        continue
    if check != "ok":
        problems.append(f"{key[0]} {key[1]} {key[2]} {key[3]} thread(s): check failed: {check}")
        failed.add(key)
        continue
    runs[key].append(mtx)
    if r.get("aborts_per_commit") is not None:
        aborts[key].append(float(r["aborts_per_commit"]))

def med(workload, param, variant, threads):
    """Median of the key's runs; None if it has none or any of them failed."""
    key = (workload, param, variant, threads)
    v = runs.get(key)
    return statistics.median(v) if v and key not in failed else None

def cell(workload, param, variant, threads):
    if (workload, param, variant, threads) in failed:
        return ""
    return num(med(workload, param, variant, threads))

def num(v):
    if v is None:
        return "—"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"

def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "—"

def ratio_of(a_key, b_key):
    """a/b of two keys' medians; blank if either failed."""
    if a_key in failed or b_key in failed:
        return ""
    return ratio(med(*a_key), med(*b_key))

CASES = [("bank", 64), ("bank", 1000000), ("intset-list", 1024), ("intset-skiplist", 65536), ("hashmap", 32768)]
VARIANTS = ["unsync", "mutex", "striped", "libitm", "weft", "weft-nosolo"]

print(f"weft_stm_bench: million committed transactions per second, median of {reps} run{'s' if reps > 1 else ''}"
      f" of a {seconds} s window (after 0.2 s warm-up); ratios of medians from this run; — = not run,"
      " blank = FAILED (see below).")
print()
header = ["workload", "param", "threads"] + VARIANTS + ["weft/mutex", "weft/libitm", "weft/unsync",
                                                       "weft 2T/1T", "weft 2T/1T nosolo", "weft aborts/commit"]
print("| " + " | ".join(header) + " |")
print("| --- | ---: | ---: |" + " ---: |" * (len(header) - 3))
for workload, param in CASES:
    for threads in (1, 2):
        k = lambda variant, t=threads: (workload, param, variant, t)
        ab = aborts.get(k("weft"))
        cells = [workload, f"{param:,}", str(threads)] + [cell(*k(var)) for var in VARIANTS] + [
            ratio_of(k("weft"), k("mutex")), ratio_of(k("weft"), k("libitm")),
            ratio_of(k("weft"), k("unsync", 1)) if threads == 1 else "",
            ratio_of(k("weft"), k("weft", 1)) if threads == 2 else "",
            ratio_of(k("weft"), k("weft-nosolo", 1)) if threads == 2 else "",
            "" if k("weft") in failed else f"{statistics.median(ab):.3g}" if ab else "—"]
        print("| " + " | ".join(cells) + " |")

if reps > 1:
    spreads = [(max(v) / min(v), k) for k, v in runs.items() if len(v) > 1 and min(v) > 0]
    if spreads:
        worst, k = max(spreads)
        print()
        print(f"Noise: largest max/min over the repetitions of one cell: {worst:.2f} ({k[0]} {k[1]} {k[2]}"
              f" {k[3]}T); median spread {statistics.median(x for x, _ in spreads):.2f}.")

print()
print("striped = 1024 padded std::mutex stripes (bank: by account, both stripes in index order; hashmap: by"
      " bucket); intset-list: hand-over-hand node locks; intset-skiplist: one std::shared_mutex (lookups"
      " shared). The 64K-key intset is a skip list. unsync runs 1 thread only. weft-nosolo: weft with solo"
      " mode off (1 thread takes the path of many: locks, read log, validation); weft at 2 threads is"
      " never solo, so '2T/1T nosolo' is the scaling of the multi-thread path itself.")

# ---- issue-4 targets --------------------------------------------------------------------------------
print()
print("Issue 4 targets (weft, bank):")
def verdict(ok):
    return "—   (missing data)" if ok is None else ("MET" if ok else "NOT MET")
u1, w1, w2 = med("bank", 1000000, "unsync", 1), med("bank", 1000000, "weft", 1), med("bank", 1000000, "weft", 2)
l1, m1 = med("bank", 1000000, "libitm", 1), med("bank", 1000000, "mutex", 1)
s1, s2 = med("bank", 64, "weft", 1), med("bank", 64, "weft", 2)
TINYSTM_1T, MUTEX_ANCHOR_1T = 5.6, 17.7
ok = None if None in (u1, w1) else w1 * 3 >= u1
print(f"  {verdict(ok):8} 1 thread, 1M accounts, within 3x of unsync: weft {num(w1)} vs unsync {num(u1)}"
      f" M tx/s (unsync/weft = {ratio(u1, w1)})")
ok = None if None in (l1, w1) else w1 > l1
print(f"  {verdict(ok):8} 1 thread, 1M accounts, ahead of libitm: weft {num(w1)} vs libitm {num(l1)}"
      f" (weft/libitm = {ratio(w1, l1)})")
ok = None if w1 is None else w1 > TINYSTM_1T
scaled = f"; scaled by this run's mutex ({num(m1)} here vs {MUTEX_ANCHOR_1T} in ANCHORS) the anchor is" \
         f" {TINYSTM_1T * m1 / MUTEX_ANCHOR_1T:.2f}" if m1 else ""
print(f"  {verdict(ok):8} 1 thread, 1M accounts, ahead of TinySTM's {TINYSTM_1T} M tx/s anchor (absolute,"
      f" another run): weft {num(w1)}{scaled}")
n1, ns1 = med("bank", 1000000, "weft-nosolo", 1), med("bank", 64, "weft-nosolo", 1)
ok = None if None in (w1, w2) else w2 >= 1.7 * w1
print(f"  {verdict(ok):8} 2 threads >= 1.7x 1 thread, 1M accounts: weft {num(w2)} / {num(w1)} = {ratio(w2, w1)}")
ok = None if None in (n1, w2) else w2 >= 1.7 * n1
print(f"  {verdict(ok):8}   the same against 1 thread with solo off: {num(w2)} / {num(n1)} = {ratio(w2, n1)}")
ok = None if None in (s1, s2) else s2 >= 0.9 * s1
print(f"  {verdict(ok):8} 2 threads >= 0.9x 1 thread, 64 accounts: weft {num(s2)} / {num(s1)} = {ratio(s2, s1)}")
ok = None if None in (ns1, s2) else s2 >= 0.9 * ns1
print(f"  {verdict(ok):8}   the same against 1 thread with solo off: {num(s2)} / {num(ns1)} = {ratio(s2, ns1)}")

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
