#!/usr/bin/env bash
# Charter's side of the peer benchmark: every workload in its own fresh process
# (and fresh SQLite file), REPEATS times, appended to $OUT, then a median table.
# Env: REPEATS=3  WORKLOADS="chain fanout many resume resume_cli"
#      SYNCHRONOUS=NORMAL|FULL (default: Charter's default, NORMAL)
#      OUT=<results.jsonl> (default: ${PEERBENCH_VENVS:-/tmp/peerbench}/results-charter-<mode>-<timestamp>.jsonl)
#      PYTHON=<interpreter with charter installed> (default: ../.venv/bin/python)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
REPEATS="${REPEATS:-3}"
WORKLOADS="${WORKLOADS:-chain fanout many resume resume_cli}"
OUTDIR="${PEERBENCH_VENVS:-${TMPDIR:-/tmp}/peerbench}"
mkdir -p "$OUTDIR"
MODE="$(echo "${SYNCHRONOUS:-normal}" | tr "[:upper:]" "[:lower:]")"
# one file per synchronous mode: summarize.py groups lines by (peer, workload) only
OUT="${OUT:-$OUTDIR/results-charter-$MODE-$(date +%Y%m%d-%H%M%S).jsonl}"
SUMMARIZE="${SUMMARIZE:-$ROOT/../shared/bench/peers/summarize.py}"
extra=()
if [ -n "${SYNCHRONOUS:-}" ]; then extra+=(--synchronous "$SYNCHRONOUS"); fi

for rep in $(seq 1 "$REPEATS"); do
  for wl in $WORKLOADS; do
    echo "== rep $rep  charter  $wl" >&2
    "$PYTHON" "$HERE/charter_bench.py" --workloads "$wl" "${extra[@]}" \
      2>>"$OUT.stderr.log" | tee -a "$OUT" || echo "!! charter $wl exited non-zero" >&2
  done
done

echo "== results: $OUT" >&2
if [ -f "$SUMMARIZE" ]; then
  python3 "$SUMMARIZE" "$OUT"
else
  echo "(summarize.py not found at $SUMMARIZE; set SUMMARIZE=...)" >&2
fi
