#!/usr/bin/env python
"""Charter's fleet on PostgreSQL: the peers' workloads run by 1, 2 and 4 ``charter worker`` processes.

Prints the same JSON lines as the peer scripts (``../shared/bench/peers``), with
``"peer": "charter"``, ``"store": "postgresql"`` and ``"workers": N``:

* ``chain``: one run of 200 sequential no-op steps, each consuming the previous output.
* ``fanout``: one run: ``make_list`` -> ``for_each`` x100 ``asyncio.sleep(0.05)`` -> ``join``.
* ``many`` (line ``many_runs``): 200 runs of a 3-step chain, submitted concurrently.
* ``latency`` (Charter's own): 300 one-step runs submitted one by one, 20 ms apart, to
  idle workers: how long a ready step waits for a worker to start it.

Every (workload, worker count) gets a fresh database on the server and fresh worker
processes, started and idle (each listening for the store's NOTIFY) before the clock
starts. ``seconds`` runs from the first ``Charter.submit`` to the moment the bench,
woken by the store's change notifications (``Charter.wait``), reads the last run back
as succeeded. Every line also has:

* ``to_last_commit_s``: the same span, ended instead by the commit time of the last
  ``RunSucceeded`` (what the bench's own reading adds shows as the difference).

* ``ready_to_started``: for each unit another transaction started (a hand-off), the
  time from the *commit* of the event that made it ready (its dependency's
  ``StepSucceeded``, or the run's ``RunCreated``/``PlanApproved`` for a first step;
  ``pg_xact_commit_timestamp`` of that event's row) to its ``StepStarted``'s ``at``:
  p50, p99, max in ms; ``same_tx`` counts the units their writer started in the very
  transaction that made them ready (no wait at all).
* ``cpu_s``: CPU seconds of the PostgreSQL server, the workers and this process while
  timed (2 cores here: where the budget goes), and ``other``: the rest of the machine's;
  ``bench_submitting`` is the part of ``bench`` spent in ``Charter.submit`` (the rest is waiting).
* with ``--profile``: the top statements by total time (pg_stat_statements) in a
  ``profile`` line, and with ``--py-spy DIR`` a py-spy record of one worker.

With ``--database-url`` it uses that server (any database on it: it makes its own,
named ``fleetbench_*``, and drops them); else it starts a throwaway PostgreSQL cluster
(pgcluster.py: fsync on, synchronous_commit on) and stops it at the end.

Usage: python bench/fleet_bench.py [--database-url URL] [--workloads chain,fanout,many,latency]
           [--workers 1,2,4] [--concurrency 100] [--profile] [--py-spy DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fleet_stats
import pgcluster
from charter_bench import CHAIN_N, FAN_SLEEP, FAN_WIDTH, MANY_RUNS, MANY_STEPS, TOOLS_FILE, chain_plan, fanout_plan

from charter import Charter
from charter.clock import SystemClock

PEER = "charter"
WORKLOADS = ("chain", "fanout", "many", "latency")
ALIASES = {"many_runs": "many"}
LATENCY_RUNS = 300
LATENCY_GAP = 0.02  # seconds between submissions: the workers are idle when each arrives
TIMEOUT = 300.0  # a workload that takes longer is cut short (not ok)
DONE = frozenset({"succeeded", "failed", "cancelled", "rejected"})


def emit(**kw: Any) -> None:
    rec: dict[str, Any] = {"peer": PEER}
    rec.update(kw)
    print(json.dumps(rec), flush=True)


def charter_cli() -> str:
    beside = Path(sys.executable).with_name("charter")
    return str(beside) if beside.exists() else (shutil.which("charter") or "charter")


# ------------------------------------------------------------------ workers
class Fleet:
    """``n`` ``charter worker`` processes on ``db``, each in a scratch folder with its own log."""

    def __init__(self, db: str, n: int, concurrency: int, workdir: Path) -> None:
        self.db, self.n, self.workdir = db, n, workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(n):
            with open(workdir / f"worker-{i}.log", "wb") as log:
                self.procs.append(subprocess.Popen(
                    [charter_cli(), "worker", "--db", db, "-c", str(concurrency)],
                    cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1")))

    async def idle(self, app: Charter, timeout: float = 60.0) -> int:
        """Until every worker has beaten its heartbeat, runs nothing, and listens for NOTIFY (a
        connection whose last statement was ``LISTEN``; if a version listens otherwise, it goes
        on 5 s after the workers are idle); returns how many listen."""
        import psycopg

        name = self.db.rsplit("/", 1)[1]
        deadline = time.monotonic() + timeout
        idle_since = None
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise SystemExit(f"a worker exited with {p.returncode}: see {self.workdir}")
            live = await app.workers()
            async with await psycopg.AsyncConnection.connect(self.db, autocommit=True) as c:
                cur = await c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                      "AND query LIKE 'LISTEN %%'", (name,))
                row = await cur.fetchone()
                listening = int(row[0]) if row else 0
            if len(live) == self.n and all(w.running == 0 for w in live):
                idle_since = idle_since or time.monotonic()
                if listening >= self.n or time.monotonic() - idle_since > 5.0:
                    return listening
            await asyncio.sleep(0.1)
        raise SystemExit(f"the workers did not become idle in {timeout:g}s: see {self.workdir}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


# ----------------------------------------------------------------- workloads
async def wait_all(app: Charter, ids: list[str], timeout: float, gap: float = 0.0) -> list[Any]:
    """Every run read back once it is done, woken by the store's changes (no faster polling);
    past ``timeout`` seconds in all, the runs as they are (the line is then not ``ok``).

    With ``gap`` > 0, the bench reads a run at most once per ``gap`` seconds however often
    the store changes (its reads then cost the shared cores less, and the end is seen up to
    ``gap`` late: ``to_last_commit_s`` is exact either way)."""
    deadline = time.monotonic() + timeout
    rows = []
    if not gap:
        for run_id in ids:
            left = max(0.0, deadline - time.monotonic())
            rows.append(await app.wait(run_id, until=DONE, interval=1.0, timeout=left))
        return rows
    store = app.store
    token = await store.change()
    for run_id in ids:
        while True:
            row = await store.get_run(run_id)
            if row is None or row.status in DONE or time.monotonic() >= deadline:
                rows.append(row)
                break
            next_read = time.monotonic() + gap
            token = await store.wait_for_change(token, 1.0, SystemClock())
            await asyncio.sleep(max(0.0, next_read - time.monotonic()))
    return rows


async def timed(app: Charter, plans: list[dict[str, Any]], gap: float = 0.0, timeout: float = TIMEOUT,
                read_gap: float = 0.0) -> tuple[float, float, float, list[str], list[Any]]:
    """Submit ``plans`` (concurrently, or one every ``gap`` seconds) and wait for them all:
    the seconds that took, the wall clock at the start, this process's CPU seconds spent
    submitting, the run ids, the runs read back."""
    cpu0 = sum(os.times()[:2])
    wall0, t0 = time.time(), time.perf_counter()
    if gap:
        ids = []
        for i, p in enumerate(plans):
            ids.append(await app.submit(p))
            await asyncio.sleep(max(0.0, t0 + (i + 1) * gap - time.perf_counter()))
    else:
        ids = list(await asyncio.gather(*(app.submit(p) for p in plans)))
    submitting = sum(os.times()[:2]) - cpu0
    rows = await wait_all(app, ids, timeout, read_gap)
    return time.perf_counter() - t0, wall0, submitting, ids, rows


async def one(workload: str, server: str, n_workers: int, concurrency: int, workdir: Path,
              profile: bool, spy: Path | None, chain_n: int = CHAIN_N, read_gap: float = 0.0) -> None:
    name = f"fleetbench_{workload}_{n_workers}w_{os.getpid()}"
    db = pgcluster.new_database(server, name)
    app = Charter(db, tools=[str(TOOLS_FILE)])
    await app.runs(limit=1)  # the schema, before the workers come
    fleet = Fleet(db, n_workers, concurrency, workdir)
    spy_proc = None
    try:
        listening = await fleet.idle(app)
        if workload == "chain":
            plans, gap = [chain_plan(chain_n, "chain")], 0.0
        elif workload == "fanout":
            plans, gap = [fanout_plan(FAN_WIDTH)], 0.0
        elif workload == "many":
            plans, gap = [chain_plan(MANY_STEPS, "many") for _ in range(MANY_RUNS)], 0.0
        else:
            plans, gap = [chain_plan(1, "latency") for _ in range(LATENCY_RUNS)], LATENCY_GAP
        await app.load_plan(plans[0])  # the first compile warms up what it imports (untimed)
        t_check = time.perf_counter()
        await app.load_plan(plans[0])  # what Charter.submit spends checking each plan (timed there)
        t_check = time.perf_counter() - t_check
        if profile:
            pgcluster.reset_statements(server)
        if spy is not None:
            spy.mkdir(parents=True, exist_ok=True)
            spy_proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw", "--rate", "500",
                 "-o", str(spy / f"worker-{workload}-{n_workers}w.txt"), "-p", str(fleet.pids[0])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1.0)  # py-spy attaches
        postmaster = fleet_stats.postmaster_of(db)
        cpu0 = fleet_stats.cpu_seconds(postmaster, fleet.pids)
        dt, wall0, submitting, ids, rows = await timed(app, plans, gap, read_gap=read_gap)
        cpu = fleet_stats.cpu_delta(cpu0, fleet_stats.cpu_seconds(postmaster, fleet.pids))
        cpu["bench_submitting"] = round(submitting, 3)  # of "bench": the rest is its waiting
        if spy_proc is not None:
            spy_proc.send_signal(signal.SIGINT)
            spy_proc.wait(timeout=30)
        events = await fleet_stats.events_with_commit_times(db)
        lat = fleet_stats.ready_to_started(events)
        ends = [r.committed for r in events if r.type == "RunSucceeded" and r.committed is not None]
        to_commit = round(max(ends) - wall0, 4) if len(ends) == len(ids) else None
        ok, checked = await check(app, workload, ids, rows, chain_n)
        base = dict(n=len(ids) if workload in ("many", "latency") else len(plans[0]["steps"]) if workload == "chain"
                    else FAN_WIDTH, seconds=round(dt, 4), ok=ok, workers=n_workers, store="postgresql",
                    concurrency=concurrency, to_last_commit_s=to_commit, ready_to_started=lat, cpu_s=cpu)
        note = (f"{n_workers} `charter worker -c {concurrency}` processes, idle before the clock "
                f"({listening} listening); timed: first Charter.submit to the last run read back succeeded "
                f"(each submit checks its plan: {t_check * 1000:.1f} ms; the bench reads "
                f"{'on every store change' if not read_gap else f'at most every {read_gap * 1000:g} ms'}); "
                f"{checked}")
        if workload == "chain":
            emit(workload="chain", **base, steps_per_s=round(chain_n / dt, 1),
                 per_step_ms=round(dt / chain_n * 1000, 3), notes=note)
        elif workload == "fanout":
            emit(workload="fanout", **base, ratio_to_ideal=round(dt / FAN_SLEEP, 2), notes=note)
        elif workload == "many":
            emit(workload="many_runs", **base, runs_per_s=round(MANY_RUNS / dt, 1),
                 steps_per_s=round(MANY_STEPS * MANY_RUNS / dt, 1),
                 notes=note + f"; {MANY_RUNS} x Charter.submit via asyncio.gather")
        else:
            emit(workload="ready_to_started", **base, notes=note + (
                f"; {LATENCY_RUNS} one-step runs submitted one every {LATENCY_GAP * 1000:g} ms"))
        if profile or spy is not None:
            record = spy / f"worker-{workload}-{n_workers}w.txt" if spy is not None else None
            emit(workload=f"profile_{workload}", workers=n_workers, store="postgresql",
                 top=pgcluster.top_statements(server, name) if profile else None,
                 per_step=fleet_stats.per_step(server, name, events) if profile else None,
                 py_spy=fleet_stats.spy_top(record) if record is not None and record.exists() else None)
    finally:
        if spy_proc is not None and spy_proc.poll() is None:
            spy_proc.kill()
        fleet.stop()
        await app.store.aclose() if hasattr(app.store, "aclose") else app.close()
        pgcluster.drop_databases(server, name)


async def check(app: Charter, workload: str, ids: list[str], rows: list[Any],
                chain_n: int) -> tuple[bool, str]:
    """Whether every run succeeded with the right output, as read back from the store."""
    if workload == "chain":
        want: Any = {"v": chain_n, "prev": chain_n - 1}
    elif workload == "fanout":
        want = {"n": FAN_WIDTH, "sum": FAN_WIDTH * (FAN_WIDTH - 1) // 2}
    elif workload == "many":
        want = {"v": MANY_STEPS, "prev": MANY_STEPS - 1}
    else:
        want = {"v": 1, "prev": 0}
    statuses = [r.status for r in rows]
    outputs_ok = all(r.output == want for r in rows)
    steps = 0
    for run_id in ids[:1] if workload in ("chain", "fanout") else ids:
        state = await app.state(run_id)
        steps += sum(1 for s in state.steps.values() if s.status == "succeeded")
    ok = len(set(ids)) == len(ids) and all(s == "succeeded" for s in statuses) and outputs_ok
    return ok, f"runs succeeded={statuses.count('succeeded')}/{len(ids)}; steps succeeded (log)={steps}"


# ---------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--database-url", default=None,
                    help="a PostgreSQL server to use (postgresql://user@host:port/db); default: start one")
    ap.add_argument("--workloads", default="chain,fanout,many,latency", help=f"from {', '.join(WORKLOADS)}")
    ap.add_argument("--workers", default="1,2,4", help="worker process counts, comma-separated")
    ap.add_argument("--concurrency", type=int, default=100, help="each worker's -c (default 100)")
    ap.add_argument("--commit-limit", action="store_true", help="also print the server's commit limit first")
    ap.add_argument("--profile", action="store_true", help="also print pg_stat_statements' top statements")
    ap.add_argument("--py-spy", default=None, metavar="DIR", help="py-spy record one worker into DIR")
    ap.add_argument("--read-gap", type=float, default=0.0, metavar="MS",
                    help="read a run back at most every MS ms (default 0: on every store change)")
    ap.add_argument("--chain-steps", type=int, default=CHAIN_N, help="steps of the chain (default 200; "
                    "more for a profile)")
    a = ap.parse_args()
    wl = [ALIASES.get(w.strip(), w.strip()) for w in a.workloads.split(",") if w.strip()]
    if unknown := [w for w in wl if w not in WORKLOADS]:
        ap.error(f"unknown workload(s): {', '.join(unknown)}")
    counts = [int(x) for x in a.workers.split(",") if x.strip()]
    own = None
    server = a.database_url
    if server is None:
        own = Path(tempfile.mkdtemp(prefix="fleetbench-pg-"))
        server = pgcluster.start(own)
    workdir = Path(tempfile.mkdtemp(prefix="fleetbench-"))
    try:
        if a.commit_limit:
            print(json.dumps({"peer": "postgresql", **pgcluster.commit_limit(server)}), flush=True)
        for w in wl:
            for n in counts:
                asyncio.run(one(w, server, n, a.concurrency, workdir, a.profile,
                                Path(a.py_spy) if a.py_spy else None, a.chain_steps, a.read_gap / 1000))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if own is not None:
            pgcluster.stop(own)


if __name__ == "__main__":
    main()
