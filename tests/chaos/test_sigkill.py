"""Chaos: SIGKILL real `charter` processes at random moments until a run completes.

A plan of 30 steps (a chain, a fan-out of 12 items, two layers of parallel
branches, several `write` steps) runs in a real `charter run` process that is
killed with SIGKILL at random moments, then continued by `charter resume`, and
once by `charter resume --all` after `charter run` of another plan on the same
store has run to its end without touching it, until it finishes.

The tools (chaos_tools.py) log every execution of their body, and apply their
effect at most once per idempotency key, checking a ledger first. The test then
checks the contract: the run succeeds with the right outputs, every effect
happened exactly once, a finished step never ran again, a step ran again only
if it was running when a process was killed (with the same idempotency key),
and `charter show --json` agrees with all of it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.pg import store_for

from .chaos_tools import digest

pytestmark = pytest.mark.chaos

TOOLS_SRC = Path(__file__).with_name("chaos_tools.py")
KILLS = 4  # kills per run; the process after the last kill runs it to the end
OTHER_EPOCH = 2  # before it, `charter run` of another plan, which must leave the killed run alone
FAN_ITEMS = 12

Unit = tuple[str, int | None]  # (step, item)


# --- the plans ---------------------------------------------------------------------------------


def main_plan() -> dict[str, Any]:
    steps: list[dict[str, Any]] = []

    def add(sid: str, tool: str, **args: Any) -> dict[str, Any]:
        steps.append({"id": sid, "tool": tool, "args": args})
        return steps[-1]

    add("seed", "compute", name="seed", ms=20)
    prev = "seed"
    for i in range(1, 11):  # a chain of 10; one link is a write
        sid = f"chain{i:02d}"
        add(sid, "publish" if i == 5 else "compute", name=sid, ms=90 + 5 * i, prev=f"${{{prev}}}")
        prev = sid
    add("list", "listing", n=FAN_ITEMS, prev="${seed}")
    fan = add("fan", "publish", name="${item}", ms=25, prev="${seed}")  # a fan-out of writes
    fan.update(for_each="${list}", concurrency=4)
    add("fan_sum", "compute", name="fan_sum", ms=10, prev="${fan}")
    add("audit", "compute", name="audit", ms=15, prev="${list}")
    for i in range(1, 6):  # parallel branches, two layers deep
        add(f"par{i:02d}", "compute", name=f"par{i:02d}", ms=20 + 7 * i, prev="${seed}")
    for i in range(6, 11):
        add(f"par{i:02d}", "compute", name=f"par{i:02d}", ms=20 + 5 * i, prev=f"${{par{i - 5:02d}}}")
    add("join", "compute", name="join", ms=10, prev=[f"${{par{i:02d}}}" for i in range(6, 11)])
    add("report", "publish", name="report", ms=15, prev="${join}")
    add("notify", "publish", name="notify", ms=20,
        prev={"chain": "${chain10}", "fan": "${fan_sum}", "join": "${join}"})
    add("final", "compute", name="final", ms=10, prev="${notify}")
    add("tail", "compute", name="tail", ms=10, prev="${final}")
    assert len(steps) == 30
    return {"goal": "chaos: survive SIGKILL", "steps": steps}


OTHER_PLAN = {
    "goal": "chaos: another plan on the same store",
    "steps": [
        {"id": "o1", "tool": "compute", "args": {"name": "o1", "ms": 30}},
        {"id": "o2", "tool": "publish", "args": {"name": "o2", "ms": 30, "prev": "${o1}"}},
        {"id": "o3", "tool": "compute", "args": {"name": "o3", "ms": 30, "prev": "${o2}"}},
    ],
}


def expected_outputs(plan: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Every step's output and the run's output, computed here without Charter."""
    outputs: dict[str, Any] = {}

    def render(value: Any, item: Any = None) -> Any:
        if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
            root = value[2:-1]
            return item if root == "item" else outputs[root]
        if isinstance(value, list):
            return [render(v, item) for v in value]
        if isinstance(value, dict):
            return {k: render(v, item) for k, v in value.items()}
        return value

    def call(tool: str, args: dict[str, Any]) -> Any:
        if tool == "listing":
            base = digest("listing", args.get("prev"))
            return [f"{base[:6]}-{i}" for i in range(args["n"])]
        return digest(args["name"], args.get("prev"))

    needed: set[str] = set()
    for s in plan["steps"]:
        if "for_each" in s:
            items = render(s["for_each"])
            outputs[s["id"]] = [call(s["tool"], render(s["args"], it)) for it in items]
        else:
            outputs[s["id"]] = call(s["tool"], render(s["args"]))
        needed |= {ref[2:-1] for ref in _refs([s["args"], s.get("for_each")])}
    sinks = [s["id"] for s in plan["steps"] if s["id"] not in needed]
    return outputs, {sid: outputs[sid] for sid in sinks}


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, str) and value.startswith("${") and value[2:-1] != "item":
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _refs(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _refs(v)


# --- driving processes ----------------------------------------------------------------------------


@dataclass
class Snapshot:
    """The run as its log tells it right after a kill."""

    running: dict[Unit, int] = field(default_factory=dict)  # unit -> number of its running attempt
    succeeded: set[Unit] = field(default_factory=set)


class Chaos:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = store_for(root)
        self.tools = root / "chaos_tools.py"
        shutil.copy(TOOLS_SRC, self.tools)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CHARTER_")}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.procs: list[subprocess.Popen[bytes]] = []

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "charter", *args, "--db", self.db]

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        with (self.root / f"p{n}.out").open("wb") as out, (self.root / f"p{n}.err").open("wb") as err:
            proc = subprocess.Popen(self.argv(*args), cwd=self.root, env=self.env, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.root / f"p{self.procs.index(proc)}.err").read_text(encoding="utf-8", errors="replace")

    def cli(self, *args: str) -> Any:
        done = subprocess.run(self.argv(*args), cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, f"charter {' '.join(args)}: exit {done.returncode}\n{done.stderr}"
        return json.loads(done.stdout)

    def executions(self) -> list[dict[str, Any]]:
        log = self.root / "executions.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]

    def effects(self) -> list[str]:
        return (self.root / "effects.log").read_text(encoding="utf-8").splitlines()

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)
    return value


def executing(chaos: Chaos, proc: subprocess.Popen[bytes], run_id: str | None) -> bool:
    """Whether ``proc`` has executed a step of the run (of any run, before the run id is known)."""
    if proc.poll() is not None:
        raise AssertionError(f"process {proc.pid} exited with {proc.returncode} before it was killed:\n"
                             f"{chaos.stderr(proc)}")
    return any(e["pid"] == proc.pid and run_id in (None, e["run"]) for e in chaos.executions())


def units_of(report: dict[str, Any]) -> dict[Unit, dict[str, Any]]:
    """Each unit of work in a `charter show --json` report: a step, or one item of a fan-out."""
    units: dict[Unit, dict[str, Any]] = {}
    for s in report["steps"]:
        if s["id"] == "fan":
            for it in s.get("items", []):
                units[("fan", it["item"])] = it
        else:
            units[(s["id"], None)] = s
    return units


def snapshot(report: dict[str, Any]) -> Snapshot:
    snap = Snapshot()
    for unit, u in units_of(report).items():
        running = [a["number"] for a in u["attempts"] if a["outcome"] == "running"]
        assert len(running) <= 1, (unit, u["attempts"])
        if running:
            snap.running[unit] = running[0]
        if u["status"] == "succeeded":
            snap.succeeded.add(unit)
    return snap


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    c = Chaos(tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


# --- the test ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [7, 2024, 31337])
def test_sigkill_at_random_moments_loses_and_repeats_nothing(chaos: Chaos, seed: int) -> None:
    rng = random.Random(seed)
    plan = main_plan()
    main_file = chaos.root / "main.json"
    main_file.write_text(json.dumps(plan), encoding="utf-8")
    other_file = chaos.root / "other.json"
    other_file.write_text(json.dumps(OTHER_PLAN), encoding="utf-8")
    early = rng.choice([1, 3])  # one `charter resume` is killed at a random moment of its start-up

    run_id: str | None = None
    pids: list[int] = []
    snapshots: list[Snapshot] = []
    for n in range(KILLS):
        if n == 0:
            proc = chaos.spawn("run", str(main_file), "--tools", str(chaos.tools))
        elif n == OTHER_EPOCH:
            assert run_id is not None
            other = chaos.spawn("run", str(other_file), "--tools", str(chaos.tools))
            assert other.wait(60) == 0, chaos.stderr(other)
            assert f"1 interrupted run on this store ({run_id})" in chaos.stderr(other)
            assert not [e for e in chaos.executions() if e["pid"] == other.pid and e["run"] == run_id]
            proc = chaos.spawn("resume", "--all")
        else:
            assert run_id is not None
            proc = chaos.spawn("resume", run_id)
        pids.append(proc.pid)

        if n == early:
            time.sleep(rng.uniform(0.05, 0.6))  # chaos, not synchronisation: any moment will do
        else:
            wait_until(partial(executing, chaos, proc, run_id), 30, f"process {n} to execute a step of the run")
            time.sleep(rng.uniform(0.0, 0.2))
        assert proc.poll() is None, f"the run ended before kill {n + 1}; the plan is too short"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL

        if run_id is None:
            run_id = next(e["run"] for e in chaos.executions() if e["pid"] == proc.pid)
        shown = chaos.cli("show", run_id, "--json")
        assert shown["status"] == "running" and shown["interrupted"]  # killed: nobody paused it
        snapshots.append(snapshot(shown))

    assert run_id is not None
    last = chaos.spawn("resume", run_id)
    pids.append(last.pid)
    assert last.wait(60) == 0, chaos.stderr(last)

    # the other plan's run ended well, on its own
    others = [r for r in chaos.cli("runs", "--json") if r["id"] != run_id]
    assert len(others) == 1
    other_id = others[0]["id"]
    assert chaos.cli("show", other_id, "--json")["status"] == "succeeded"

    check_contract(chaos, plan, run_id, other_id, pids, snapshots)


def check_contract(chaos: Chaos, plan: dict[str, Any], run_id: str, other_id: str, pids: list[int],
                   snapshots: list[Snapshot]) -> None:
    report = chaos.cli("show", run_id, "--json")
    assert report["status"] == "succeeded", report["reason"]
    [row] = [r for r in chaos.cli("runs", "--json") if r["id"] == run_id]
    assert row["status"] == "succeeded"
    assert row["steps_done"] == row["steps_total"] == len(plan["steps"])

    # the outputs are those of an uninterrupted run
    outputs, run_output = expected_outputs(plan)
    for s in report["steps"]:
        assert s["status"] == "succeeded", s
        assert s["output"] == outputs[s["id"]], s["id"]
    assert report["output"] == run_output

    units = units_of(report)
    assert len(units) == len(plan["steps"]) - 1 + FAN_ITEMS

    runs = defaultdict(list)
    for e in chaos.executions():
        runs[e["run"]].append(e)
    assert set(runs) == {run_id, other_id}
    executions: dict[Unit, list[dict[str, Any]]] = defaultdict(list)
    for e in runs[run_id]:
        executions[(e["step"], e["item"])].append(e)
    assert set(executions) == set(units), "every unit ran, and nothing else did"

    # one idempotency key per unit, the same on every execution, and no two units share one
    keys: dict[Unit, str] = {}
    for unit, execs in executions.items():
        unit_keys = {e["key"] for e in execs}
        assert len(unit_keys) == 1, f"{unit} ran with several idempotency keys: {unit_keys}"
        keys[unit] = unit_keys.pop()
    assert len(set(keys.values())) == len(keys)

    # every effect happened exactly once
    effects = Counter(chaos.effects())
    other_keys = {e["key"] for e in runs[other_id]}
    assert set(effects) == set(keys.values()) | other_keys
    assert [k for k, c in effects.items() if c != 1] == []

    # a unit ran again only if it was running when a process was killed, and never after it finished;
    # a write whose effect the ledger recorded before the kill is answered from the ledger, not run again
    recorded_by = {e["key"]: e["attempt"] for e in chaos.cli("effects", run_id, "--json")}
    running_at_kill: dict[Unit, set[int]] = defaultdict(set)
    for snap in snapshots:
        for unit, attempt in snap.running.items():
            running_at_kill[unit].add(attempt)
    assert any(running_at_kill.values()), "no kill caught a step running: the test proved nothing"
    for unit, u in units.items():
        attempts = u["attempts"]
        numbers = [a["number"] for a in attempts]
        assert numbers == list(range(1, len(attempts) + 1)), (unit, attempts)
        assert [a["outcome"] for a in attempts] == ["interrupted"] * (len(attempts) - 1) + ["succeeded"], \
            (unit, attempts)
        interrupted = set(numbers[:-1])
        assert interrupted == running_at_kill[unit], (unit, attempts, running_at_kill[unit])
        ran = [e["attempt"] for e in executions[unit]]
        assert len(ran) == len(set(ran)), f"{unit}: an attempt ran twice: {ran}"
        if numbers[-1] not in ran:  # allowed only if the ledger answered it: an earlier attempt did the write
            by = recorded_by.get(keys[unit])
            assert by is not None and by < numbers[-1] and by in ran, \
                f"{unit}: the attempt recorded as succeeded never ran, and the ledger did not answer it ({by})"
        assert set(ran) <= interrupted | {numbers[-1]}, (unit, ran, attempts)
        assert len(ran) - 1 <= len(interrupted) <= len(snapshots)
        assert len({e["pid"] for e in executions[unit]}) == len(ran), f"{unit} ran twice in one process"
    for k in range(1, len(pids)):
        again = sorted({(e["step"], e["item"]) for e in runs[run_id]
                        if e["pid"] == pids[k] and (e["step"], e["item"]) in snapshots[k - 1].succeeded},
                       key=str)
        assert again == [], f"process {k} ran steps that had already succeeded: {again}"
