#!/bin/sh
# Runs a program serially and in ordered mode at two workers with abort injection (the one-way guard
# off: every segment speculative) and passes only if both exit 0 and print exactly the same. Prints
# the serial output, then "ordered output identical" (or both outputs and exits 1).
# Usage: compare_modes.sh PROGRAM [ARGS...]   (WEFT_SEED for the injection: the first argument)
serial=$(env -u WEFT_WORKERS -u WEFT_MODE -u WEFT_ABORT_INJECT "$@") || { echo "serial run failed"; exit 1; }
ordered=$(WEFT_WORKERS=2 WEFT_MODE=ordered WEFT_ABORT_INJECT=0.3 WEFT_GUARD=0 WEFT_SEED=${2:-1} "$@") ||
  { echo "ordered run failed"; exit 1; }
echo "$serial"
if [ "$serial" = "$ordered" ]; then
  echo "ordered output identical"
else
  echo "ordered output differs:"
  echo "$ordered"
  exit 1
fi
