#!/bin/sh
# Runs a program RUNS times at one worker and RUNS times in ordered mode at two workers (odd runs
# with abort injection, WEFT_SEED = the run's number), each within 30 s; passes only if every run
# prints exactly EXPECTED (one line) and exits with STATUS. For races between threads that show in a
# few runs of fifty.
# Usage: repeat_status.sh RUNS STATUS EXPECTED PROGRAM [ARGS...]
runs=$1
status_wanted=$2
expected=$3
shift 3
for workers in 1 2; do
  i=1
  while [ "$i" -le "$runs" ]; do
    inject=0
    [ "$workers" -eq 2 ] && [ $((i % 2)) -eq 1 ] && inject=0.3
    out=$(WEFT_WORKERS=$workers WEFT_ABORT_INJECT=$inject WEFT_SEED=$i timeout 30 "$@" 2>&1)
    status=$?
    if [ "$status" -ne "$status_wanted" ] || [ "$out" != "$expected" ]; then
      echo "run $i at $workers workers (WEFT_SEED=$i, WEFT_ABORT_INJECT=$inject): exit $status (wanted $status_wanted; 124: timed out)"
      echo "printed (standard output and error):"; echo "$out"
      exit 1
    fi
    i=$((i + 1))
  done
done
echo "$expected"
echo "$runs runs at each of 1 and 2 workers: exit status $status_wanted, the same line"
