#!/usr/bin/env bash
# The PostgreSQL session of the benchmark: DBOS and Charter's fleet on one throwaway server,
# back to back, REPEATS times, then a median table (fleet_summary.py).
#   - starts a PostgreSQL cluster (pgcluster.py: fsync on, synchronous_commit on) unless
#     DATABASE_URL names a server, and stops it at the end;
#   - each repetition: the server's commit limit, DBOS (bench_dbos.py --database-url, a fresh
#     process and database per workload), then Charter (fleet_bench.py: a fresh database and
#     fresh worker processes per workload and worker count);
#   - PROFILE=1: one more pass of Charter, not in the medians, with pg_stat_statements' top
#     statements and a py-spy record of one worker (into $OUT.spy/).
# Env: REPEATS=3  WORKLOADS="chain fanout many latency"  WORKERS="1,2,4"  CONCURRENCY=100  READ_GAP=0
#      PEERS_DIR=<the peers' folder> (default ../shared/bench/peers beside the project)
#      PEERBENCH_VENVS=<where the dbos venv is or goes> (default ${TMPDIR:-/tmp}/peerbench)
#      PYTHON=<interpreter with charter installed> (default .venv/bin/python)
#      OUT=<results.jsonl> (default $PEERBENCH_VENVS/results-pg-<timestamp>.jsonl)  NO_DBOS=1
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
REPEATS="${REPEATS:-3}"
WORKLOADS="${WORKLOADS:-chain fanout many latency}"
WORKERS="${WORKERS:-1,2,4}"
CONCURRENCY="${CONCURRENCY:-100}"
READ_GAP="${READ_GAP:-0}"  # ms between the bench's reads of a run (0: on every store change)
PEERS_DIR="${PEERS_DIR:-$ROOT/../shared/bench/peers}"
[ -d "$PEERS_DIR" ] || PEERS_DIR="$ROOT/../../shared/bench/peers"  # from a worktree one level deeper
VENVS="${PEERBENCH_VENVS:-${TMPDIR:-/tmp}/peerbench}"
mkdir -p "$VENVS"
OUT="${OUT:-$VENVS/results-pg-$(date +%Y%m%d-%H%M%S).jsonl}"
LOG="$OUT.stderr.log"

if [ -z "${NO_DBOS:-}" ] && [ ! -x "$VENVS/dbos/bin/python" ]; then
  PEERBENCH_PYTHON="${PEERBENCH_PYTHON:-$(command -v python3.11 || command -v python3)}"
  echo "== creating venv $VENVS/dbos" >&2
  "$PEERBENCH_PYTHON" -m venv "$VENVS/dbos"
  "$VENVS/dbos/bin/pip" install -q -r "$PEERS_DIR/requirements-dbos.txt"
fi

CLUSTER_DIR=""
if [ -z "${DATABASE_URL:-}" ]; then
  read -r DATABASE_URL CLUSTER_DIR < <("$PYTHON" "$HERE/pgcluster.py" start)
  trap '"$PYTHON" "$HERE/pgcluster.py" stop "$CLUSTER_DIR"' EXIT
fi
echo "== PostgreSQL at $DATABASE_URL" >&2
"$PYTHON" -c "import psycopg, sys; c = psycopg.connect(sys.argv[1]); print('==', c.execute('SELECT version()').fetchone()[0])" \
  "$DATABASE_URL" >&2

cd "$HERE"  # fleet_bench imports its neighbours
for rep in $(seq 1 "$REPEATS"); do
  echo "== rep $rep  commit limit  ($(uptime))" >&2
  "$PYTHON" "$HERE/pgcluster.py" commit-limit "$DATABASE_URL" | tee -a "$OUT"
  if [ -z "${NO_DBOS:-}" ]; then
    for wl in $WORKLOADS; do
      [ "$wl" = latency ] && continue
      echo "== rep $rep  dbos  $wl" >&2
      "$VENVS/dbos/bin/python" "$PEERS_DIR/bench_dbos.py" --workloads "$wl" --database-url "$DATABASE_URL" \
        2>>"$LOG" | tee -a "$OUT" || echo "!! dbos $wl exited non-zero" >&2
      "$PYTHON" "$HERE/pgcluster.py" drop "$DATABASE_URL" peerbench_
    done
  fi
  for wl in $WORKLOADS; do
    echo "== rep $rep  charter  $wl  workers $WORKERS" >&2
    "$PYTHON" "$HERE/fleet_bench.py" --database-url "$DATABASE_URL" --workloads "$wl" --workers "$WORKERS" \
      --concurrency "$CONCURRENCY" --read-gap "$READ_GAP" 2>>"$LOG" | tee -a "$OUT" || echo "!! charter $wl exited non-zero" >&2
  done
done

if [ -n "${PROFILE:-}" ]; then
  echo "== profile pass (not in the medians): $OUT.profile.jsonl, $OUT.spy/" >&2
  for wl in $WORKLOADS; do
    "$PYTHON" "$HERE/fleet_bench.py" --database-url "$DATABASE_URL" --workloads "$wl" --workers "$WORKERS" \
      --concurrency "$CONCURRENCY" --read-gap "$READ_GAP" --profile --py-spy "$OUT.spy" 2>>"$LOG" >>"$OUT.profile.jsonl" \
      || echo "!! profile $wl exited non-zero" >&2
  done
fi

echo "== results: $OUT" >&2
python3 "$HERE/fleet_summary.py" "$OUT"
