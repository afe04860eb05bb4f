#!/usr/bin/env python
"""Charter's side of the peer benchmark (../shared/bench/peers).

Runs the same workloads as the peer scripts and prints the same JSON lines,
with ``"peer": "charter"``:

* ``chain``: one run of 200 sequential no-op async steps; each step's args
  reference the previous step's output (``${s41.v}``).
* ``fanout``: one run: a step makes a list of 100 items, a ``for_each`` step
  sleeps 50 ms per item, a join step counts them. ``ratio_to_ideal`` =
  makespan / 0.05 s.
* ``many`` (reported as ``many_runs``): 200 runs of a 3-step chain, all created
  in one engine and then driven together.
* ``backlog`` (Charter's own, no peer): the ``many`` workload with 20,000 runs:
  the cost of a step must not grow with how many runs one engine hosts.
* ``resume``: a 20-step run in a child process that SIGKILLs itself at the
  start of step 11; a new process resumes it. Every step must have run exactly
  once (per a side file each step appends to, with fsync).
* ``resume_cli`` (extra, for reference): the same crash, resumed with
  ``charter resume RUN --db DB`` as a subprocess; ``seconds`` is its wall time.

Every workload runs in its own fresh process with a fresh SQLite file: given
several workloads, this script starts one subprocess per workload. Timers
(``time.perf_counter``) cover the engine calls only (creating the run record
and driving it to the end); plan compilation and imports are excluded, as the
peers exclude graph compilation. The store uses Charter's default durability,
SQLite WAL with ``synchronous=NORMAL`` (a committed step survives the death of
the process); ``--synchronous FULL`` also survives power loss.

Usage: python bench/charter_bench.py [--workloads chain,fanout,many,resume,resume_cli]
                                     [--workdir DIR] [--synchronous NORMAL|FULL]
                                     [--concurrency N]
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

from charter import Engine, Plan, Registry, load_tools, open_store
from charter.engine import control, rules
from charter.store import SQLiteStore

PEER = "charter"
HERE = Path(__file__).resolve().parent
TOOLS_FILE = HERE / "charter_bench_tools.py"
WORKLOADS = ("chain", "fanout", "many", "backlog", "resume", "resume_cli")
ALIASES = {"many_runs": "many"}

CHAIN_N = 200
FAN_WIDTH = 100
FAN_SLEEP = 0.05
MANY_RUNS = 200
BACKLOG_RUNS = 20_000  # the same 3-step runs, a hundred times as many hosted at once
MANY_STEPS = 3
RESUME_N = 20
CRASH_BEFORE = 11  # must match charter_bench_tools.CRASH_BEFORE


def emit(**kw: Any) -> None:
    rec: dict[str, Any] = {"peer": PEER}
    rec.update(kw)
    rec["synchronous"] = synchronous_mode()
    print(json.dumps(rec), flush=True)


def fresh(*paths: Path) -> None:
    """Remove leftovers of an earlier run (the database with its WAL files, side files)."""
    for p in paths:
        for q in (p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")):
            q.unlink(missing_ok=True)


def open_fresh_store(db: Path) -> SQLiteStore:
    fresh(db)
    return open_store(db)


def synchronous_mode() -> str:
    return (os.environ.get("CHARTER_SQLITE_SYNCHRONOUS") or "NORMAL").upper()


# --------------------------------------------------------------------- plans
def chain_plan(n: int, goal: str) -> dict[str, Any]:
    """``n`` sequential ``noop`` steps, each consuming the previous step's output."""
    steps: list[dict[str, Any]] = [{"id": "s0", "tool": "noop", "args": {"v": 0}}]
    steps += [{"id": f"s{i}", "tool": "noop", "args": {"v": f"${{s{i - 1}.v}}"}} for i in range(1, n)]
    return {"goal": goal, "steps": steps}


def fanout_plan(width: int) -> dict[str, Any]:
    return {"goal": "fanout", "steps": [
        {"id": "make_list", "tool": "make_list", "args": {"n": width}},
        {"id": "work", "tool": "sleep_one", "for_each": "${make_list}", "args": {"i": "${item}"}},
        {"id": "join", "tool": "join", "args": {"xs": "${work}"}},
    ]}


def resume_plan(n: int) -> dict[str, Any]:
    """``n`` sequential ``logged`` steps numbered 1..n."""
    steps: list[dict[str, Any]] = [{"id": "s1", "tool": "logged", "args": {"step": 1, "v": 0}}]
    steps += [{"id": f"s{i}", "tool": "logged", "args": {"step": i, "v": f"${{s{i - 1}.v}}"}}
              for i in range(2, n + 1)]
    return {"goal": "resume", "steps": steps}


def compile_plan(data: dict[str, Any], registry: Registry) -> tuple[Plan, float]:
    t0 = time.perf_counter()
    plan = Plan.from_dict(data, registry)
    return plan, time.perf_counter() - t0


#: tracing in the chain workload: off (the default), noop (spans made, exported nowhere), otlp (to a
#: loopback OTLP/HTTP sink in a process of its own)
OTEL = os.environ.get("CHARTER_BENCH_OTEL", "off")


def tracing(engine: Engine) -> tuple[Any, Any, Any]:
    """The tracer the chain is watched by, its feed, and the sink process (as ``CHARTER_BENCH_OTEL`` says)."""
    if OTEL == "off":
        return None, None, None
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from charter.telemetry import Tracer

    class Nowhere(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    sink = None
    if OTEL == "otlp":
        sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
        assert sink.stdout is not None
        tracer = Tracer(endpoint=f"http://127.0.0.1:{sink.stdout.readline().strip()}")
    else:
        tracer = Tracer(exporter=Nowhere())
    return tracer, engine.watch(tracer), sink


SINK = """
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = HTTPServer(("127.0.0.1", 0), H); print(s.server_port, flush=True); s.serve_forever()
"""


# ----------------------------------------------------------------- workloads
async def w_chain(workdir: Path, concurrency: int, n: int = CHAIN_N) -> None:
    registry = load_tools([str(TOOLS_FILE)])
    plan, t_compile = compile_plan(chain_plan(n, "chain"), registry)
    store = open_fresh_store(workdir / "charter_chain.sqlite")
    engine = Engine(store, max_concurrency=concurrency)
    tracer, feed, sink = tracing(engine)
    t0 = time.perf_counter()
    run_id = await engine.create(plan, registry)
    await engine.run_until_settled()
    dt = time.perf_counter() - t0
    traced_s = None
    if tracer is not None:  # until the tracer was given every commit and its spans left
        feed.flush(60)
        tracer.flush()
        traced_s = round(time.perf_counter() - t0, 4)
        tracer.close(5)
        if sink is not None:
            sink.kill()
    row = await store.get_run(run_id)
    state = rules.replay(run_id, await store.events(run_id))  # what the log says, read back
    persisted = [s for s in state.steps.values() if s.status == "succeeded"]
    ok = (state.status == "succeeded" and state.output == {"v": n, "prev": n - 1}
          and row is not None and row.status == "succeeded" and row.output == state.output
          and len(persisted) == n)
    store.close()
    emit(workload="chain", n=n, seconds=round(dt, 4), steps_per_s=round(n / dt, 1),
         per_step_ms=round(dt / n * 1000, 3), ok=ok, otel=OTEL, traced_s=traced_s,
         notes=(f"{n} sequential async no-op steps, args ${{s(i-1).v}}; one Engine, SQLite WAL "
                f"synchronous={store.synchronous}; timed: create + run_until_settled; "
                f"plan compile {t_compile:.3f}s excluded; persisted succeeded steps={len(persisted)}"))


async def w_fanout(workdir: Path, concurrency: int, width: int = FAN_WIDTH) -> None:
    registry = load_tools([str(TOOLS_FILE)])
    plan, _ = compile_plan(fanout_plan(width), registry)
    store = open_fresh_store(workdir / "charter_fanout.sqlite")
    engine = Engine(store, max_concurrency=concurrency)
    t0 = time.perf_counter()
    run_id = await engine.create(plan, registry)
    await engine.run_until_settled()
    dt = time.perf_counter() - t0
    row = await store.get_run(run_id)
    state = rules.replay(run_id, await store.events(run_id))
    expected = {"n": width, "sum": width * (width - 1) // 2}
    ok = (state.status == "succeeded" and state.output == expected
          and row is not None and row.status == "succeeded")
    store.close()
    emit(workload="fanout", n=width, seconds=round(dt, 4), ratio_to_ideal=round(dt / FAN_SLEEP, 2),
         ok=ok,
         notes=(f"make_list -> for_each x{width} async steps (asyncio.sleep {FAN_SLEEP}) -> join; "
                f"max_concurrency={concurrency}; synchronous={store.synchronous}"))


async def w_many(workdir: Path, concurrency: int, runs: int = MANY_RUNS, name: str = "many_runs") -> None:
    registry = load_tools([str(TOOLS_FILE)])
    plan, _ = compile_plan(chain_plan(MANY_STEPS, "many"), registry)
    store = open_fresh_store(workdir / "charter_many.sqlite")
    engine = Engine(store, max_concurrency=concurrency)
    t0 = time.perf_counter()
    ids = [await engine.create(plan, registry) for _ in range(runs)]
    t_create = time.perf_counter() - t0
    await engine.run_until_settled()
    dt = time.perf_counter() - t0
    expected = {"v": MANY_STEPS, "prev": MANY_STEPS - 1}
    rows = [await store.get_run(r) for r in ids]
    states = [rules.replay(r, await store.events(r)) for r in ids]
    ok = (len({s.run_id for s in states}) == runs
          and all(s.status == "succeeded" and s.output == expected for s in states)
          and all(r is not None and r.status == "succeeded" for r in rows))
    store.close()
    emit(workload=name, n=runs, seconds=round(dt, 4), runs_per_s=round(runs / dt, 1),
         steps_per_s=round(MANY_STEPS * runs / dt, 1), ok=ok,
         notes=(f"{runs} runs of a {MANY_STEPS}-step chain: engine.create x{runs} "
                f"({t_create:.3f}s of the total), then one run_until_settled; "
                f"max_concurrency={concurrency}; synchronous={store.synchronous}"))


# --------------------------------------------------------------------- resume
async def resume_child(db: Path, phase: str, run_id: str | None) -> None:
    """In a child process: start the run and die at step 11 (``crash``), or resume it."""
    if phase == "crash":
        registry = load_tools([str(TOOLS_FILE)])
        plan = Plan.from_dict(resume_plan(RESUME_N), registry)
        engine = Engine(open_store(db))
        run_id = await engine.create(plan, registry)
        print(json.dumps({"run_id": run_id}), flush=True)
        await engine.run_until_settled()
        print(json.dumps({"unexpected": "crash phase finished"}), flush=True)
        return
    assert run_id is not None
    store = open_store(db)
    engine = Engine(store)
    t0 = time.perf_counter()
    await engine.control(run_id, control.Resume())  # adopt: replay the log, load the recorded tool sources
    await engine.run_until_settled()
    dt = time.perf_counter() - t0
    row = await store.get_run(run_id)
    state = rules.replay(run_id, await store.events(run_id))
    print(json.dumps({"resume_seconds": dt, "status": state.status, "output": state.output,
                      "persisted_status": row.status if row else None}), flush=True)


def last_json(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("{"):
            out = json.loads(line)
    return out


def exec_counts(side: Path) -> dict[int, int]:
    steps = [int(x) for x in side.read_text().split()] if side.exists() else []
    return {s: steps.count(s) for s in range(1, RESUME_N + 1)}


def crash_child(
    me: str, db: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], str | None]:
    """Start the 20-step run in a child that SIGKILLs itself at step 11; returns it and the run id."""
    p = subprocess.run([sys.executable, me, "--resume-child", "crash", "--db", str(db)],
                       capture_output=True, text=True, env=dict(env, CHARTER_BENCH_CRASH="1"))
    for line in p.stdout.splitlines():
        if line.startswith("{") and "run_id" in line:
            return p, str(json.loads(line)["run_id"])
    return p, None


def resume_notes(p1: subprocess.CompletedProcess[str], counts: dict[int, int], how: str) -> str:
    first10_reexec = sum(counts[s] - 1 for s in range(1, CRASH_BEFORE) if counts[s] > 1)
    return (f"SIGKILL at start of step {CRASH_BEFORE} (after step 10 committed); {how}; "
            f"synchronous={synchronous_mode()}; crash_rc={p1.returncode}; "
            f"steps1-10 re-executed={first10_reexec}; "
            f"exec counts={''.join(str(counts[s]) for s in range(1, RESUME_N + 1))}")


def w_resume(workdir: Path) -> None:
    db, side = workdir / "charter_resume.sqlite", workdir / "charter_resume_exec.log"
    fresh(db, side)
    me = str(Path(__file__).resolve())
    env = dict(os.environ, CHARTER_BENCH_SIDE=str(side))
    p1, run_id = crash_child(me, db, env)
    killed = p1.returncode == -signal.SIGKILL
    t0 = time.perf_counter()
    p2 = subprocess.run([sys.executable, me, "--resume-child", "resume", "--db", str(db),
                         "--run-id", run_id or "?"],
                        capture_output=True, text=True, env=dict(env, CHARTER_BENCH_CRASH="0"))
    wall = time.perf_counter() - t0
    res = last_json(p2.stdout)
    counts = exec_counts(side)
    ok = (killed and p2.returncode == 0 and res.get("status") == "succeeded"
          and res.get("persisted_status") == "succeeded" and res.get("output") == {"v": RESUME_N}
          and all(c == 1 for c in counts.values()))
    seconds = res.get("resume_seconds")
    notes = resume_notes(p1, counts, "new process: Engine.resume(run_id) + run_until_settled "
                         "(tools loaded from the run's recorded source)")
    notes += "; seconds = in-process resume call to done; process_wall_s = new interpreter incl. imports"
    if p2.returncode != 0 or run_id is None:
        notes += f"; crash stderr: {p1.stderr[-300:]}; resume stderr: {p2.stderr[-300:]}"
    emit(workload="resume", n=RESUME_N, seconds=None if seconds is None else round(seconds, 4),
         process_wall_s=round(wall, 3), ok=ok, notes=notes)


def charter_cli() -> str:
    beside = Path(sys.executable).with_name("charter")
    return str(beside) if beside.exists() else (shutil.which("charter") or "charter")


def w_resume_cli(workdir: Path) -> None:
    db, side = workdir / "charter_resume_cli.sqlite", workdir / "charter_resume_cli_exec.log"
    fresh(db, side)
    me = str(Path(__file__).resolve())
    env = dict(os.environ, CHARTER_BENCH_SIDE=str(side))
    p1, run_id = crash_child(me, db, env)
    killed = p1.returncode == -signal.SIGKILL
    t0 = time.perf_counter()
    p2 = subprocess.run([charter_cli(), "resume", run_id or "?", "--db", str(db)],
                        capture_output=True, text=True, env=dict(env, CHARTER_BENCH_CRASH="0"))
    wall = time.perf_counter() - t0
    store = open_store(db)
    row = asyncio.run(store.get_run(run_id)) if run_id else None
    store.close()
    counts = exec_counts(side)
    ok = (killed and p2.returncode == 0 and row is not None and row.status == "succeeded"
          and row.output == {"v": RESUME_N} and all(c == 1 for c in counts.values()))
    notes = resume_notes(p1, counts, "`charter resume RUN --db DB` as a subprocess")
    notes += "; seconds = process_wall_s = the command's wall time incl. interpreter start and imports"
    if p2.returncode != 0 or run_id is None:
        notes += f"; crash stderr: {p1.stderr[-300:]}; resume rc={p2.returncode} stderr: {p2.stderr[-300:]}"
    emit(workload="resume_cli", n=RESUME_N, seconds=round(wall, 4), process_wall_s=round(wall, 3),
         ok=ok, notes=notes)


def run_one(workload: str, workdir: Path, concurrency: int) -> None:
    if workload == "chain":
        asyncio.run(w_chain(workdir, concurrency))
    elif workload == "fanout":
        asyncio.run(w_fanout(workdir, concurrency))
    elif workload == "many":
        asyncio.run(w_many(workdir, concurrency))
    elif workload == "backlog":
        asyncio.run(w_many(workdir, concurrency, BACKLOG_RUNS, "backlog"))
    elif workload == "resume":
        w_resume(workdir)
    elif workload == "resume_cli":
        w_resume_cli(workdir)


# ---------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help=f"comma-separated, from {', '.join(WORKLOADS)}")
    ap.add_argument("--workdir", default=None, help="where the SQLite files go (default: a temp dir)")
    ap.add_argument("--synchronous", default=None, choices=["OFF", "NORMAL", "FULL", "EXTRA"],
                    help="SQLite synchronous mode (sets CHARTER_SQLITE_SYNCHRONOUS; default NORMAL)")
    ap.add_argument("--concurrency", type=int, default=100, help="Engine max_concurrency (default 100)")
    ap.add_argument("--resume-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--db", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run-id", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.synchronous:
        os.environ["CHARTER_SQLITE_SYNCHRONOUS"] = a.synchronous
    if a.resume_child:
        asyncio.run(resume_child(Path(a.db), a.resume_child, a.run_id))
        return

    wl = [ALIASES.get(w.strip(), w.strip()) for w in a.workloads.split(",") if w.strip()]
    unknown = [w for w in wl if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s): {', '.join(unknown)}")
    workdir = Path(a.workdir or tempfile.mkdtemp(prefix="charterbench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if len(wl) == 1:
            run_one(wl[0], workdir, a.concurrency)
            return
        # one fresh process per workload, like run_all.sh does for the peers
        for w in wl:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--workloads", w,
                   "--workdir", str(workdir), "--concurrency", str(a.concurrency)]
            rc = subprocess.run(cmd).returncode
            if rc != 0:
                print(f"!! charter {w} exited with {rc}", file=sys.stderr)
    finally:
        if not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
