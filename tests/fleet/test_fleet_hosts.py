"""A fleet across real network hosts: PostgreSQL on one, a `charter worker` on each of four others.

The hosts are network namespaces joined by a bridge (tests/netns.py), so every
statement crosses a real network stack. 100 runs, each a fan-out and a write,
are submitted; one worker is SIGKILLed in the middle of a step, another is cut
off from the database (its link taken down) for longer than its lease, then
healed. Every run completes, no attempt runs twice, no finished step runs again,
every write is delivered exactly once (the side file and the effect ledger
agree), the cut-off worker's late outcome is refused and logged, and it rejoins.
A second test restarts PostgreSQL (`pg_ctl restart -m fast`) under load, then stops it for
longer than the workers' leases: nothing is lost, and no worker takes another's steps over.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from charter import Charter
from tests import netns
from tests.pg import Server, cluster_on

pytestmark = pytest.mark.chaos

TOOLS = Path(__file__).with_name("fleet_tools.py")
LEASE = 3


@pytest.fixture
def net() -> Iterator[netns.Network]:
    why = netns.available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the fleet tests need network namespaces: {why}")
        pytest.skip(why)
    with netns.network() as n:
        yield n


def plan(i: int, ms: int) -> dict[str, Any]:
    return {"goal": f"fleet run {i}", "steps": [
        {"id": "numbers", "tool": "numbers", "args": {"n": 4}},
        {"id": "squares", "tool": "square", "for_each": "${numbers}", "args": {"x": "${item}", "ms": ms}},
        {"id": "send", "tool": "send", "args": {"text": f"run {i}: " + "${squares}"}},
    ]}


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 180.0,
             explain: Callable[[], str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{explain()}" if explain else ""))
        time.sleep(0.05)


class Fleet:
    def __init__(self, server: Server, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.hosts: dict[str, netns.Host] = {}

    def start(self, host: netns.Host) -> None:
        cmd = [sys.executable, "-m", "charter", "worker", "--db", self.server.url, "-c", "4",
               "--lease", str(LEASE), "--grace", "10"]
        with open(self.folder / f"{host.name}.log", "wb") as log:  # the worker keeps its own copy open
            self.workers[host.name] = host.popen(cmd, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT)
        self.hosts[host.name] = host

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.server.url, autocommit=True, connect_timeout=10) as conn:
            return list(conn.execute(query, args).fetchall())

    def worker_id(self, name: str) -> str:
        pid = self.workers[name].pid
        rows = self.sql("SELECT id FROM workers WHERE pid = %s", pid)
        return str(rows[0][0]) if rows else ""

    def executions(self) -> list[dict[str, Any]]:
        path = self.folder / "executions.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def in_flight(self, name: str) -> bool:
        """Whether the worker is in the middle of a `square` (started, not ended)."""
        pid = self.workers[name].pid
        open_ = set()
        for e in self.executions():
            if e["pid"] == pid and e["step"] == "squares":
                k = (e["run"], e["item"], e["attempt"])
                open_.symmetric_difference_update({k})
        return bool(open_)

    def succeeded(self) -> int:
        return int(self.sql("SELECT count(*) FROM runs WHERE status = 'succeeded'")[0][0])

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def explain(self) -> str:
        """What the fleet is doing, for a wait that timed out: runs by status, the queue, the
        workers as the store and the machine see them, and the end of each worker's log."""
        try:
            lines = [f"runs: {dict(self.sql('SELECT status, count(*) FROM runs GROUP BY status'))}",
                     f"tasks: {self.sql('SELECT step, item, due_at, owner, attempt FROM tasks ORDER BY due_at LIMIT 20')}",
                     f"workers: {self.sql('SELECT id, heartbeat_at, expires_at, running, runs, stopping FROM workers')}",
                     f"now: {time.time()}"]
        except psycopg.Error as exc:
            lines = [f"the store did not answer: {exc}"]
        for name, p in self.workers.items():
            tail = "\n    ".join(self.log(name).splitlines()[-15:])
            lines.append(f"{name} (pid {p.pid}, exit {p.poll()}):\n    {tail}")
        return "\n".join(lines)

    def stop_all(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for p in self.workers.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in self.workers.items():
            try:
                codes[name] = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = None
        return codes


def submit(url: str, tools: Path, n: int, ms: int) -> list[str]:
    async def go() -> list[str]:
        async with Charter(url, tools=[str(tools)]) as app:
            return [await app.submit(plan(i, ms)) for i in range(n)]
    return asyncio.run(go())


def check_contract(fleet: Fleet, runs: list[str]) -> dict[tuple[str, str, int | None], list[int]]:
    """What every fleet test demands of the log, the executions and the deliveries."""
    assert fleet.succeeded() == len(runs)
    events: dict[str, list[dict[str, Any]]] = {}
    for run_id, type_, data in fleet.sql(
            "SELECT r.id, e.type, e.data FROM events e JOIN runs r ON r.no = e.run_no ORDER BY r.no, e.seq"):
        events.setdefault(run_id, []).append({"type": type_, **json.loads(data)})
    started: dict[tuple[str, str, int | None], list[int]] = {}
    succeeded: dict[tuple[str, str, int | None], int] = {}
    for run_id, evs in events.items():
        for e in evs:
            key = (run_id, e.get("step", ""), e.get("item"))
            if e["type"] == "StepStarted":
                started.setdefault(key, []).append(e["attempt"])
            elif e["type"] == "StepSucceeded":
                assert key not in succeeded, f"{key} succeeded twice"
                succeeded[key] = e.get("attempt", 0)
    starts = [e for e in fleet.executions() if e["what"] == "start"]
    seen = set()
    for e in starts:
        key = (e["run"], e["step"], e["item"])
        k = (*key, e["attempt"])
        assert k not in seen, f"attempt {k} ran twice"
        seen.add(k)
        assert e["attempt"] in started.get(key, []), f"{k} ran without a StepStarted"
        if key in succeeded:
            assert e["attempt"] <= succeeded[key], f"{key} ran again after it succeeded"
    sent = [json.loads(line) for line in (fleet.folder / "sent.log").read_text().splitlines()]
    assert sorted(s["run"] for s in sent) == sorted(runs), "every run delivers exactly once"
    ledger = fleet.sql("SELECT run_id, key FROM effects WHERE tool = 'send'")
    assert sorted((s["run"], s["key"]) for s in sent) == sorted((r[0], r[1]) for r in ledger)
    return started


def test_a_fleet_survives_a_killed_worker_and_a_cut_off_one(net: netns.Network, tmp_path: Path) -> None:
    db = net.host("db")
    hosts = [net.host(f"w{i}") for i in range(1, 5)]
    with cluster_on(db) as server:
        shutil.copy(TOOLS, tmp_path / "fleet_tools.py")
        runs = submit(server.url, tmp_path / "fleet_tools.py", 100, ms=400)
        fleet = Fleet(server, tmp_path)
        try:
            for h in hosts:
                fleet.start(h)
            wait_for("four workers", lambda: int(fleet.sql("SELECT count(*) FROM workers")[0][0]) == 4)
            killed, cut = "w1", "w2"
            killed_id, cut_id = fleet.worker_id(killed), fleet.worker_id(cut)

            wait_for("w1 in the middle of a step", lambda: fleet.in_flight(killed))
            fleet.workers[killed].send_signal(signal.SIGKILL)
            fleet.workers[killed].wait()

            wait_for("w2 in the middle of a step", lambda: fleet.in_flight(cut))
            fleet.hosts[cut].cut()
            assert fleet.succeeded() < len(runs), "the work ended before the partition: make the steps longer"
            # its units are taken over once its lease lapsed (and its open transaction was ended)
            wait_for("w2's units taken over",
                     lambda: int(fleet.sql("SELECT count(*) FROM tasks WHERE owner = %s", cut_id)[0][0]) == 0)
            healed_at = time.time()
            fleet.hosts[cut].heal()

            wait_for("every run", lambda: fleet.succeeded() == len(runs), timeout=300, explain=fleet.explain)
            wait_for("w2's late outcome refused", lambda: "came too late" in fleet.log(cut), timeout=120)
            wait_for("w2 back", lambda: float(fleet.sql(
                "SELECT heartbeat_at FROM workers WHERE id = %s", cut_id)[0][0]) > healed_at, timeout=120)
        finally:
            codes = fleet.stop_all()
        assert codes == {"w1": -signal.SIGKILL, "w2": 0, "w3": 0, "w4": 0}, codes
        started = check_contract(fleet, runs)
        reasons = [json.loads(d)["reason"] for (d,) in fleet.sql(
            "SELECT data FROM events WHERE type = 'StepInterrupted'")]
        assert any(killed_id in r for r in reasons), reasons
        assert any(cut_id in r for r in reasons), reasons
        assert any(len(a) > 1 for a in started.values())  # some units did run again


def test_a_fleet_survives_postgresql_restarting(net: netns.Network, tmp_path: Path) -> None:
    db = net.host("db")
    hosts = [net.host(f"w{i}") for i in range(1, 4)]
    with cluster_on(db) as server:
        shutil.copy(TOOLS, tmp_path / "fleet_tools.py")
        runs = submit(server.url, tmp_path / "fleet_tools.py", 60, ms=200)
        fleet = Fleet(server, tmp_path)
        try:
            for h in hosts:
                fleet.start(h)
            wait_for("a fifth of the runs", lambda: fleet.succeeded() >= len(runs) // 5)
            assert fleet.succeeded() < len(runs), "the work ended before the restart: make the steps longer"
            server.restart()
            wait_for("two fifths of the runs", lambda: fleet.succeeded() >= 2 * len(runs) // 5)
            assert fleet.succeeded() < len(runs), "the work ended before the outage: make the steps longer"
            server.stop()  # an outage longer than the workers' leases: no worker can beat meanwhile
            time.sleep(2 * LEASE)  # the outage's length (what is tested), not a wait for a condition
            server.start()
            wait_for("every run", lambda: fleet.succeeded() == len(runs), timeout=300, explain=fleet.explain)
        finally:
            codes = fleet.stop_all()
        assert codes == {"w1": 0, "w2": 0, "w3": 0}, codes
        check_contract(fleet, runs)
        # every worker lived through both: none took another's steps over as if it had gone silent
        reasons = [json.loads(d)["reason"] for (d,) in fleet.sql(
            "SELECT data FROM events WHERE type = 'StepInterrupted'")]
        assert not [r for r in reasons if "stopped answering" in r], reasons
