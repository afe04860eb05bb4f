"""Workers on a shared store: fleet runs executed step by step by any worker (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from charter import Charter, StoreError

TOOLS = '''
import json, os, time
from charter import PermanentError, RetryPolicy, tool

SIDE = os.environ.get("FLEET_SIDE_FILE", "side.jsonl")

@tool
def numbers(n: int) -> list:
    return list(range(n))

@tool
def square(n: int) -> int:
    return n * n

@tool
def total(values: list) -> int:
    return sum(values)

@tool(retry=RetryPolicy(max_attempts=3, initial_interval=0.5, jitter=0))
def flaky(name: str) -> str:
    path = SIDE + "." + name
    n = int(open(path).read()) if os.path.exists(path) else 0
    open(path, "w").write(str(n + 1))
    if n == 0:
        raise ConnectionError("the first call fails")
    return name

@tool
def slow(name: str) -> str:
    open(SIDE + ".started." + name, "w").close()
    while not os.path.exists(SIDE + ".go"):
        time.sleep(0.01)
    return name

@tool
async def aslow(name: str) -> str:
    import asyncio
    open(SIDE + ".started." + name, "w").close()
    while not os.path.exists(SIDE + ".go"):
        await asyncio.sleep(0.01)
    return name

@tool(concurrency=1)
def one_at_a_time(x: int) -> int:
    with open(SIDE + ".spans", "a") as f:
        f.write(json.dumps(["start", time.time()]) + "\\n")
    time.sleep(0.05)
    with open(SIDE + ".spans", "a") as f:
        f.write(json.dumps(["end", time.time()]) + "\\n")
    return x

@tool(rate=10)
def rated(x: int) -> int:
    return x

@tool
def fetch(source: str) -> str:
    """Fetch a document from a source."""
    if source == "primary":
        raise PermanentError("primary is gone")
    return "doc from " + source

@tool(effect="write")
def write(text: str) -> str:
    with open(SIDE, "a") as f:
        f.write(json.dumps({"text": text}) + "\\n")
    return text
'''


def plan(n: int) -> dict[str, Any]:
    return {
        "goal": "squares, summed, written",
        "steps": [
            {"id": "numbers", "tool": "numbers", "args": {"n": n}},
            {"id": "squares", "tool": "square", "for_each": "${numbers}", "args": {"n": "${item}"}},
            {"id": "sum", "tool": "total", "args": {"values": "${squares}"}},
            {"id": "note", "tool": "write", "args": {"text": "sum ${sum}"}},
        ],
    }


@pytest.fixture
def tools_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fleet_tools.py"
    path.write_text(TOOLS)
    monkeypatch.setenv("FLEET_SIDE_FILE", str(tmp_path / "side.jsonl"))
    return path


async def _until(predicate: Any, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_workers_run_a_submitted_fan_out(db_path: Any, tools_file: Path, tmp_path: Path) -> None:
    submitter = Charter(db_path, tools=[str(tools_file)])
    runs = [await submitter.submit(plan(6)) for _ in range(3)]
    assert {(await submitter.store.get_run(r)).status for r in runs} == {"running"}  # recorded, not run here
    apps = [Charter(db_path) for _ in range(2)]
    workers = [a.worker(concurrency=3, lease_seconds=5) for a in apps]
    tasks = [asyncio.ensure_future(w.run()) for w in workers]
    try:
        async def done() -> bool:
            return [(await submitter.store.get_run(r)).status for r in runs] == ["succeeded"] * len(runs)
        await _until(done)
        assert len(await submitter.workers()) == 2
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
    for r in runs:
        report = await submitter.report(r)
        assert report.output == "sum 55"
        started = [e for e in await submitter.store.events(r) if e.type == "StepStarted"]
        assert len(started) == 9  # each unit once: nothing ran twice
    side = [json.loads(line) for line in (tmp_path / "side.jsonl").read_text().splitlines()]
    assert side == [{"text": "sum 55"}] * 3
    assert await submitter.workers() == []  # a worker that stopped cleanly leaves the list
    for a in [submitter, *apps]:
        a.close()


async def _status(app: Charter, run_id: str) -> str:
    row = await app.store.get_run(run_id)
    assert row is not None
    return row.status


async def _run_workers(*workers: Any) -> list[asyncio.Future[None]]:
    return [asyncio.ensure_future(w.run()) for w in workers]


async def _stop(workers: list[Any], tasks: list[asyncio.Future[None]]) -> None:
    for w in workers:
        w.stop()
    await asyncio.gather(*tasks)


async def test_a_workers_concurrency_holds_over_the_runs_one_transaction_claims(
        db_path: Any, tools_file: Path, tmp_path: Path) -> None:
    # tools without limits: runs whose tools have fleet-wide limits are written one per transaction
    unlimited = tmp_path / "unlimited_tools.py"
    unlimited.write_text(TOOLS.split("@tool(concurrency=1)")[0])
    app = Charter(db_path, tools=[str(unlimited)])
    runs = [await app.submit({"goal": f"hold {i}", "steps": [{"id": "h", "tool": "aslow", "args": {"name": str(i)}}]})
            for i in range(5)]
    w = Charter(db_path).worker(concurrency=2, lease_seconds=5)
    tasks = await _run_workers(w)
    side = tmp_path / "side.jsonl"

    async def two_running() -> bool:
        return len(list(tmp_path.glob("side.jsonl.started.*"))) >= 2
    await _until(two_running)
    # the five runs were ready at once: one claim read them all, and may start two of them only
    started = [e for r in runs for e in await app.store.events(r) if e.type == "StepStarted"]
    assert len(started) == 2
    Path(f"{side}.go").touch()

    async def done() -> bool:
        return [await _status(app, r) for r in runs] == ["succeeded"] * len(runs)
    await _until(done)
    await _stop([w], tasks)
    app.close()


async def test_a_retry_due_while_no_worker_runs_is_taken_by_the_next(db_path: Any, tools_file: Path) -> None:
    app = Charter(db_path, tools=[str(tools_file)])
    run_id = await app.submit({"goal": "flaky", "steps": [{"id": "f", "tool": "flaky", "args": {"name": "a"}}]})
    w = app.worker(concurrency=1, lease_seconds=5, grace_seconds=0)
    tasks = await _run_workers(w)

    async def failed_once() -> bool:
        return any(e.type == "StepFailed" for e in await app.store.events(run_id))
    await _until(failed_once)
    await _stop([w], tasks)  # the retry is due in half a second: nobody hosts the run then
    assert await _status(app, run_id) == "running"
    assert [t.step for t in await app.store.due_tasks(float("inf"))] == [""]  # the timer is in the store
    w2 = Charter(db_path).worker(concurrency=1, lease_seconds=5)
    tasks = await _run_workers(w2)

    async def succeeded() -> bool:
        return await _status(app, run_id) == "succeeded"
    await _until(succeeded)
    await _stop([w2], tasks)
    retried = [e for e in await app.store.events(run_id) if e.type == "StepStarted"]
    assert [e.attempt for e in retried] == [1, 2]
    app.close()


async def test_an_approval_deadline_fires_with_no_worker_hosting_it(db_path: Any, tools_file: Path) -> None:
    app = Charter(db_path, tools=[str(tools_file)])
    plan = {"goal": "ask", "steps": [
        {"id": "ok", "approval": {"message": "go?", "timeout": 0.5}},
        {"id": "after", "tool": "square", "args": {"n": 2}, "needs": ["ok"]},
    ]}
    run_id = await app.submit(plan)
    assert await _status(app, run_id) == "running"
    await asyncio.sleep(0)  # nothing hosts it; the deadline passes in the store alone
    w = app.worker(concurrency=1, lease_seconds=5)
    tasks = await _run_workers(w)

    async def ended() -> bool:
        return await _status(app, run_id) == "failed"
    await _until(ended)
    await _stop([w], tasks)
    report = await app.report(run_id)
    assert "no decision within the approval's timeout" in json.dumps(report.to_json())
    app.close()


async def test_an_approval_given_from_anywhere_lets_the_workers_go_on(db_path: Any, tools_file: Path) -> None:
    app = Charter(db_path, tools=[str(tools_file)])
    plan = {"goal": "ask", "steps": [
        {"id": "ok", "approval": {"message": "go?"}},
        {"id": "after", "tool": "square", "args": {"n": 3}, "needs": ["ok"]},
    ]}
    run_id = await app.submit(plan)
    w = Charter(db_path).worker(concurrency=1, lease_seconds=5)
    tasks = await _run_workers(w)

    async def awaiting() -> bool:
        return await _status(app, run_id) == "awaiting"
    await _until(awaiting)
    assert await Charter(db_path).approve(run_id, "ok", by="tester") == "done"

    async def succeeded() -> bool:
        return await _status(app, run_id) == "succeeded"
    await _until(succeeded)
    await _stop([w], tasks)
    assert (await app.report(run_id)).output == 9
    app.close()


async def test_a_pause_reaches_the_worker_running_a_step(db_path: Any, tools_file: Path, tmp_path: Path) -> None:
    app = Charter(db_path, tools=[str(tools_file)])
    run_id = await app.submit({"goal": "slow", "steps": [{"id": "s", "tool": "aslow", "args": {"name": "p"}}]})
    w = Charter(db_path).worker(concurrency=1, lease_seconds=5, grace_seconds=0)
    tasks = await _run_workers(w)
    side = tmp_path / "side.jsonl"

    async def started() -> bool:
        return Path(f"{side}.started.p").exists()
    await _until(started)
    assert await app.pause(run_id, "hold on") == "done"

    async def interrupted() -> bool:
        return any(e.type == "StepInterrupted" for e in await app.store.events(run_id))
    await _until(interrupted)  # the worker heard of the pause and stopped the attempt
    assert await _status(app, run_id) == "paused"
    Path(f"{side}.go").touch()
    assert await app.store.due_tasks(float("inf")) == []  # a paused run offers nothing to take
    assert (await app.resume(run_id)).status in ("running", "succeeded")

    async def succeeded() -> bool:
        return await _status(app, run_id) == "succeeded"
    await _until(succeeded)
    await _stop([w], tasks)
    app.close()


async def test_a_worker_without_a_runs_tools_leaves_its_steps_and_says_so(
        db_path: Any, tools_file: Path, tmp_path: Path) -> None:
    app = Charter(db_path, tools=[str(tools_file)])
    run_id = await app.submit(plan(2))
    tools_file.rename(tmp_path / "elsewhere.py")  # not deployed where this worker runs
    w = Charter(db_path).worker(concurrency=1, lease_seconds=5)
    tasks = await _run_workers(w)

    async def said() -> bool:
        rows = await app.workers()
        return bool(rows) and run_id in rows[0].lacking
    await _until(said)
    assert await _status(app, run_id) == "running"  # left for a worker that has the tools
    (tmp_path / "elsewhere.py").rename(tools_file)
    w2 = Charter(db_path).worker(concurrency=2, lease_seconds=5)
    tasks += await _run_workers(w2)

    async def succeeded() -> bool:
        return await _status(app, run_id) == "succeeded"
    await _until(succeeded)
    await _stop([w, w2], tasks)
    app.close()


async def test_a_silent_workers_unit_is_taken_over_and_its_late_outcome_refused(
        db_path: Any, tools_file: Path, tmp_path: Path) -> None:
    app = Charter(db_path, tools=[str(tools_file)])
    run_id = await app.submit({"goal": "slow", "steps": [{"id": "s", "tool": "slow", "args": {"name": "x"}},
                                                          {"id": "w", "tool": "write", "args": {"text": "${s}"}}]})
    side = tmp_path / "side.jsonl"
    silent = Charter(db_path).worker(concurrency=1, lease_seconds=1, grace_seconds=0)

    async def no_heartbeat(now: float) -> None:  # cut off: its heartbeat no longer reaches the store
        if silent._beaten == float("-inf"):
            await type(silent)._beat(silent, now)
    silent._beat = no_heartbeat  # type: ignore[method-assign]
    tasks = await _run_workers(silent)

    async def started() -> bool:
        return Path(f"{side}.started.x").exists()
    await _until(started)
    Path(f"{side}.started.x").unlink()
    other = Charter(db_path).worker(concurrency=1, lease_seconds=5)
    tasks += await _run_workers(other)

    async def taken_over() -> bool:
        return Path(f"{side}.started.x").exists()
    await _until(taken_over)  # the other worker runs the unit again, once the silent one's lease lapsed
    Path(f"{side}.go").touch()

    async def refused() -> bool:
        return bool(silent.refused)
    await _until(refused)

    async def succeeded() -> bool:
        return await _status(app, run_id) == "succeeded"
    await _until(succeeded)
    await _stop([silent, other], tasks)
    events = await app.store.events(run_id)
    assert [(e.type, e.attempt) for e in events if e.type in ("StepStarted", "StepInterrupted")
            and e.step == "s"] == [("StepStarted", 1), ("StepInterrupted", 1), ("StepStarted", 2)]
    assert "came too late" in silent.refused[0]
    assert [json.loads(line) for line in side.read_text().splitlines()] == [{"text": "x"}]
    app.close()


async def test_a_claim_whose_commit_landed_unbeknown_to_its_worker_is_run_again(
        db_path: Any, tools_file: Path, tmp_path: Path) -> None:
    # The store goes away as it commits a claim (PostgreSQL stopped, a network cut): the commit
    # landed, the worker heard an error. The queue holds units for a worker that does not run
    # them and that beats, so no one else takes them: the worker must find them itself.
    app = Charter(db_path, tools=[str(tools_file)])
    run_id = await app.submit(plan(3))
    wapp = Charter(db_path)
    worker = wapp.worker(concurrency=3, lease_seconds=5)
    store, decide = wapp.store, worker._decide
    lost: list[str] = []

    async def deciding(run: str, *args: Any, **kw: Any) -> Any:
        if kw.get("claim") and not lost:
            lost.append(run)  # this claim's commit lands, and the worker hears it failed
        return await decide(run, *args, **kw)

    commit = store._commit  # type: ignore[attr-defined]

    async def committing() -> None:
        await commit()
        if len(lost) == 1:
            lost.append("told")
            raise StoreError("the connection broke as the commit went out (a test)")
    worker._decide = deciding  # type: ignore[method-assign]
    store._commit = committing  # type: ignore[attr-defined]
    tasks = await _run_workers(worker)

    async def succeeded() -> bool:
        return await _status(app, run_id) == "succeeded"
    await _until(succeeded)
    await _stop([worker], tasks)
    assert lost == [run_id, "told"]
    events = await app.store.events(run_id)
    interrupted = [e for e in events if e.type == "StepInterrupted"]
    assert [(e.step, e.attempt) for e in interrupted] == [("numbers", 1)]
    assert "lost track" in interrupted[0].reason
    assert (await app.report(run_id)).output == "sum 5"  # 0 + 1 + 4
    for a in (app, wapp):
        a.close()


async def test_tool_limits_hold_across_the_fleet(db_path: Any, tools_file: Path, tmp_path: Path) -> None:
    app = Charter(db_path, tools=[str(tools_file)])
    runs = []
    for tool in ("one_at_a_time", "rated"):
        for _ in range(2):
            runs.append(await app.submit({"goal": tool, "steps": [
                {"id": "numbers", "tool": "numbers", "args": {"n": 4}},
                {"id": "each", "tool": tool, "for_each": "${numbers}", "args": {"x": "${item}"}},
            ]}))
    workers = [Charter(db_path).worker(concurrency=4, lease_seconds=5) for _ in range(2)]
    tasks = await _run_workers(*workers)

    async def done() -> bool:
        return [await _status(app, r) for r in runs] == ["succeeded"] * len(runs)
    await _until(done)
    await _stop(workers, tasks)
    spans = [json.loads(line) for line in Path(f"{tmp_path / 'side.jsonl'}.spans").read_text().splitlines()]
    assert len(spans) == 16
    assert spans == [s for pair in zip(spans[::2], spans[1::2], strict=True) for s in pair]
    assert [kind for kind, _ in spans] == ["start", "end"] * 8  # never two at once, on any worker
    starts = []
    for r in runs[2:]:
        starts += [e.at for e in await app.store.events(r) if e.type == "StepStarted" and e.step == "each"]
    starts.sort()
    assert len(starts) == 8
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.1 - 1e-6, gaps  # ten a second, across both workers
    app.close()


async def test_a_deadline_of_a_run_its_host_let_go_of_is_kept_by_a_worker(db_path: Any, tools_file: Path) -> None:
    app = Charter(db_path, tools=[str(tools_file)])
    plan = {"goal": "ask", "steps": [
        {"id": "ok", "approval": {"message": "go?", "timeout": 0.3}},
        {"id": "after", "tool": "square", "args": {"n": 2}, "needs": ["ok"]},
    ]}
    report = await app.run(plan)  # `charter run` without --submit: it ends waiting for a person
    assert report.status == "awaiting"
    assert [t.step for t in await app.store.due_tasks(float("inf"))] == [""]  # its deadline, in the store
    w = Charter(db_path).worker(concurrency=1, lease_seconds=5)
    tasks = await _run_workers(w)

    async def ended() -> bool:
        return await _status(app, report.id) == "failed"
    await _until(ended)  # no process hosted the run when its deadline passed: a worker enforced it
    await _stop([w], tasks)
    assert "no decision within the approval's timeout" in json.dumps((await app.report(report.id)).to_json())
    app.close()


async def test_a_run_taken_back_by_a_person_loses_its_timer(db_path: Any, tools_file: Path) -> None:
    app = Charter(db_path, tools=[str(tools_file)])
    plan = {"goal": "ask", "steps": [{"id": "ok", "approval": {"message": "go?", "timeout": 3600}}]}
    report = await app.run(plan)
    assert [t.step for t in await app.store.due_tasks(float("inf"))] == [""]
    assert await app.approve(report.id, "ok") == "done"  # this process takes the run: the timer goes
    assert await app.store.due_tasks(float("inf")) == []
    app.close()


async def test_a_budget_holds_for_a_run_on_several_workers(db_path: Any, tools_file: Path) -> None:
    app = Charter(db_path, tools=[str(tools_file)])
    run_id = await app.submit(plan(8), budget={"steps": 5})
    workers = [Charter(db_path).worker(concurrency=4, lease_seconds=5) for _ in range(2)]
    tasks = await _run_workers(*workers)

    async def paused() -> bool:
        return await _status(app, run_id) == "paused"
    await _until(paused)
    await _stop(workers, tasks)
    events = await app.store.events(run_id)
    assert sum(e.type == "StepStarted" for e in events) == 5  # numbers and four squares, not one more
    assert "budget reached" in (await app.report(run_id)).reason
    app.close()


async def test_replanning_and_model_steps_run_on_workers(db_path: Any, tools_file: Path) -> None:
    from charter.testing import ScriptedModel

    app = Charter(db_path, tools=[str(tools_file)], model=ScriptedModel([]))  # its llm step names no model
    run_id = await app.submit({"goal": "count the words of the document", "steps": [
        {"id": "get", "tool": "fetch", "args": {"source": "primary"}},
        {"id": "say", "llm": {"prompt": "Summarize ${get}"}},
    ]}, max_replans=1)
    revised = {"goal": "count the words of the document", "steps": [
        {"id": "get_mirror", "why": "primary is gone", "tool": "fetch", "args": {"source": "mirror"}},
        {"id": "say", "why": "the goal", "llm": {"prompt": "Summarize ${get_mirror}"}},
    ]}
    model = ScriptedModel([revised, "a short summary"])
    w = Charter(db_path, model=model).worker(concurrency=2, lease_seconds=5)
    tasks = await _run_workers(w)

    async def ended() -> bool:
        return await _status(app, run_id) in ("succeeded", "failed")
    await _until(ended)
    await _stop([w], tasks)
    report = await app.report(run_id)
    assert report.status == "succeeded", report.reason
    assert report.output == "a short summary"
    types = [e.type for e in await app.store.events(run_id)]
    assert "PlanRevised" in types and types.count("ModelCalled") == 2  # the planner's call and the step's
    app.close()
