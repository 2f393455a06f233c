#!/bin/sh
# Runs a program once serially, then RUNS times in ordered mode at two workers (odd runs with abort
# injection, WEFT_SEED = the run's number), each within 30 s; passes only if every ordered run
# prints exactly what the serial one printed and exits with the same status. For races that show in
# a few runs of a hundred (a hang, a lost line), which one run per mode would rarely catch.
# Usage: repeat_runs.sh RUNS PROGRAM [ARGS...]
runs=$1
shift
serial=$(env -u WEFT_WORKERS -u WEFT_MODE -u WEFT_ABORT_INJECT "$@")
serial_status=$?
i=1
while [ "$i" -le "$runs" ]; do
  inject=0
  [ $((i % 2)) -eq 1 ] && inject=0.3
  out=$(WEFT_WORKERS=2 WEFT_MODE=ordered WEFT_ABORT_INJECT=$inject WEFT_SEED=$i timeout 30 "$@")
  status=$?
  if [ "$status" -ne "$serial_status" ] || [ "$out" != "$serial" ]; then
    echo "run $i (WEFT_SEED=$i, WEFT_ABORT_INJECT=$inject): exit $status (serial $serial_status; 124: timed out)"
    echo "serial printed:"; echo "$serial"
    echo "ordered printed:"; echo "$out"
    exit 1
  fi
  i=$((i + 1))
done
echo "$serial"
echo "$runs ordered runs identical (serial exit status $serial_status)"
