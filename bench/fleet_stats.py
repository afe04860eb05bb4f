"""What fleet_bench.py measures besides the wall time: hand-off latency, CPU, statements.

* :func:`ready_to_started`: from every run's log (with each event row's commit time,
  ``pg_xact_commit_timestamp(xmin)``, which needs ``track_commit_timestamp=on``), how
  long each unit waited between the commit that made it ready and its ``StepStarted``.
* :func:`cpu_seconds`: CPU time of the PostgreSQL server's processes, of given worker
  processes, and of this one (Linux ``/proc``).
* :func:`per_step`: statements, server time and WAL bytes per step (pg_stat_statements).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter import Plan

TICK = os.sysconf("SC_CLK_TCK")
READY_MAKERS = ("RunCreated", "PlanApproved")


@dataclass
class Row:
    run: str
    seq: int
    type: str
    at: float
    data: dict[str, Any]
    committed: float | None
    xid: str


async def events_with_commit_times(db: str) -> list[Row]:
    import psycopg

    committed = "extract(epoch FROM pg_xact_commit_timestamp(e.xmin))::float8"
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as c:
        for when in (committed, "NULL::float8"):  # without track_commit_timestamp: no commit times
            try:
                cur = await c.execute(
                    f"SELECT r.id, e.seq, e.type, e.at, e.data, {when}, e.xmin::text "
                    "FROM events e JOIN runs r ON r.no = e.run_no ORDER BY r.no, e.seq")
                return [Row(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in await cur.fetchall()]
            except psycopg.Error:
                continue
    return []


def ready_to_started(rows: list[Row]) -> dict[str, Any]:
    """Per unit started by another transaction than the one that made it ready: the wait, in ms."""
    waits: list[float] = []
    same_tx = 0
    by_run: dict[str, list[Row]] = {}
    for r in rows:
        by_run.setdefault(r.run, []).append(r)
    for events in by_run.values():
        plan = Plan.from_dict(events[0].data["plan"], None)
        for i, ev in enumerate(events):
            if ev.type != "StepStarted" or ev.data.get("attempt", 1) != 1:
                continue
            deps = set(plan.by_id[ev.data["step"]].deps)
            maker = None
            for prev in events[:i]:
                if (prev.type in READY_MAKERS and not deps) or (prev.type == "StepSucceeded"
                                                                  and prev.data.get("step") in deps):
                    maker = prev
            if maker is None or maker.committed is None:
                continue
            if maker.xid == ev.xid:
                same_tx += 1
            else:
                waits.append((ev.at - maker.committed) * 1000)
    out = summary(waits) | {"same_tx": same_tx}
    if rows and all(r.committed is None for r in rows):
        out["note"] = "no commit times: the server needs track_commit_timestamp=on"
    return out


def summary(ms: list[float]) -> dict[str, Any]:
    if not ms:
        return {"handoffs": 0}
    xs = sorted(ms)

    def pct(p: float) -> float:
        return round(xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))], 2)

    return {"handoffs": len(xs), "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
            "max_ms": round(xs[-1], 2), "mean_ms": round(statistics.fmean(xs), 2)}


# ----------------------------------------------------------------------- CPU
def _stat(pid: int | str) -> tuple[str, int, float, float] | None:
    """(name, parent pid, own CPU s, reaped children's CPU s) of a process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1:text.rindex(")")]
    f = text[text.rindex(")") + 2:].split()
    return name, int(f[1]), (int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK


def postmaster_of(db: str) -> int:
    """The pid of the server's postmaster (the parent of a backend), when it runs on this machine."""
    import psycopg

    with psycopg.connect(db, autocommit=True) as c:
        row = c.execute("SELECT pg_backend_pid()").fetchone()
        st = _stat(row[0]) if row else None  # while the backend lives
    return st[1] if st is not None else 0


def cpu_seconds(postmaster: int, workers: list[int]) -> dict[str, float]:
    """CPU seconds so far: the server (its postmaster, its live children, and the children it
    reaped: backends come and go with connections), the given worker processes, this process."""
    pg = 0.0
    top = _stat(postmaster) if postmaster else None
    if top is not None:
        pg = top[2] + top[3]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                st = _stat(entry)
                if st is not None and st[1] == postmaster:
                    pg += st[2]
    ws = sum(s[2] for s in (_stat(p) for p in workers) if s is not None)
    t = os.times()
    return {"postgres": pg, "workers": ws, "bench": t.user + t.system, "machine": _machine_busy()}


def _machine_busy() -> float:
    """CPU seconds every core spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What each used in between, and ``other``: what the rest of the machine used (another
    session's tests, say: a line with a large ``other`` was measured on a busy machine)."""
    d = {k: round(after[k] - before[k], 3) for k in before}
    d["other"] = round(d.pop("machine") - d["postgres"] - d["workers"] - d["bench"], 3)
    return d


# ---------------------------------------------------------------- statements
def per_step(server: str, db: str, rows: list[Row]) -> dict[str, Any]:
    """Since the last reset of pg_stat_statements: statements (every call but BEGIN/COMMIT, which
    it does not count reliably here) and server time per step and per write transaction
    (the distinct transactions that wrote events), and WAL bytes per write transaction."""
    import psycopg

    with psycopg.connect(f"{server.rstrip('/').rsplit('/', 1)[0]}/postgres", autocommit=True) as c:
        ext = c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()
        if not ext or not ext[0]:
            return {"note": "pg_stat_statements is not installed in the server's postgres database"}
        stats = c.execute(
            "SELECT s.query, s.calls, s.wal_bytes, s.total_exec_time FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s", (db,)).fetchall()
    mine = [r for r in stats if "pg_xact_commit_timestamp" not in r[0]]  # this script's own read
    other = [r for r in mine if r[0].strip().upper() not in ("BEGIN", "COMMIT", "ROLLBACK")]
    calls = sum(r[1] for r in other)
    writes = len({r.xid for r in rows})
    steps = sum(1 for r in rows if r.type == "StepSucceeded")
    out: dict[str, Any] = {"statements": calls, "write_transactions": writes, "steps": steps}
    if steps:
        out["statements_per_step"] = round(calls / steps, 2)
        out["server_exec_ms_per_step"] = round(sum(r[3] for r in mine) / steps, 4)
    if writes:
        out["wal_bytes_per_write_tx"] = round(float(sum(r[2] for r in mine)) / writes)
    return out


# -------------------------------------------------------------------- py-spy
def spy_top(path: Path, n: int = 12) -> dict[str, Any]:
    """The frames a py-spy ``--format raw`` record spent most samples in: by their own time
    (``self``) and with what they called (``inclusive``, Charter's and psycopg's frames only)."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack or not count.isdigit():
                continue
            k = int(count)
            total += k
            frames = stack.split(";")
            own[frames[-1]] = own.get(frames[-1], 0) + k
            for fr in set(frames):
                if "charter/" in fr or "psycopg" in fr:
                    incl[fr] = incl.get(fr, 0) + k

    def top(d: dict[str, int]) -> list[str]:
        return [f"{v / total * 100:.1f}% {fr}" for fr, v in sorted(d.items(), key=lambda x: -x[1])[:n]]

    return {"samples": total, "self": top(own), "inclusive": top(incl)} if total else {"samples": 0}
