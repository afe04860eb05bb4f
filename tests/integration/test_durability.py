"""Durability on a real SQLite file: a new engine continues where the last one stopped."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from charter import Charter, RetryableError, RunStateError, ToolContext, tool
from charter.engine import control
from charter.testing import FakeClock

executions: list[tuple[str, int]] = []
block_at: dict[str, asyncio.Event] = {}


@tool(effect="write")
async def record(n: int, ctx: ToolContext) -> int:
    executions.append((ctx.idempotency_key, ctx.attempt))
    gate = block_at.get(ctx.step_id)
    if gate is not None and ctx.attempt == 1:
        gate.set()
        await asyncio.sleep(3600)
    return n + 1


def chain(n: int) -> dict[str, Any]:
    steps = [{"id": "s0", "tool": "record", "args": {"n": 0}}]
    steps += [{"id": f"s{i}", "tool": "record", "args": {"n": f"${{s{i - 1}}}"}} for i in range(1, n)]
    return {"goal": "chain", "steps": steps}


@pytest.fixture(autouse=True)
def _reset() -> None:
    executions.clear()
    block_at.clear()


async def crash_while_blocked(app: Charter, run_id: str, step: str) -> None:
    """Run until ``step`` is executing, then stop the engine abruptly, leaving the step 'running'."""
    block_at[step] = asyncio.Event()
    task = asyncio.create_task(app.engine().run_until_settled())
    await block_at[step].wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    block_at.clear()


async def test_a_new_engine_resumes_without_rerunning_finished_steps(db_path: Path) -> None:
    first = Charter(db_path, tools=[record])
    run_id = await first.start(chain(6))
    await crash_while_blocked(first, run_id, "s3")
    first.close()
    assert [k for k, _ in executions] == [f"{run_id}/s{i}" for i in range(4)]

    second = Charter(db_path, tools=[record])
    report = await second.resume(run_id)
    assert report.status == "succeeded" and report.output == 6
    keys = [k for k, _ in executions]
    assert keys.count(f"{run_id}/s3") == 2  # it was running: run again, same key
    assert all(keys.count(f"{run_id}/s{i}") == 1 for i in (0, 1, 2, 4, 5))
    assert [a.outcome for a in report.step("s3").attempts] == ["interrupted", "succeeded"]
    assert report.step("s3").attempts[0].error == {"message": "the process running it stopped"}
    second.close()


async def test_a_scheduled_retry_time_survives_a_restart(db_path: Path) -> None:
    calls: list[float] = []

    @tool
    def later(ctx: ToolContext) -> str:
        calls.append(clock.now())
        if ctx.attempt == 1:
            raise RetryableError("busy", next_retry_delay=100)
        return "done"

    clock = FakeClock(start=1000.0)
    first = Charter(db_path, tools=[later], clock=clock)
    run_id = await first.start({"goal": "g", "steps": [{"id": "x", "tool": "later"}]})
    task = asyncio.create_task(first.engine().run_until_settled())
    while not calls:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [unit] = (await first.state(run_id)).steps["x"].units.values()
    assert (unit.status, unit.retry_at) == ("waiting", 1100.0)  # the due time is in the log
    first.close()

    clock2 = FakeClock(start=1050.0)
    second = Charter(db_path, tools=[later], clock=clock2)
    clock = clock2
    await second.engine().control(run_id, control.Resume(), registry=second.registry)
    task = asyncio.create_task(second.engine().run_until_settled())
    await asyncio.sleep(0.05)
    assert len(calls) == 1  # not yet: the retry is due at 1100
    assert (await second.report(run_id)).step("x").status == "waiting"
    clock2.advance(49)
    await asyncio.sleep(0.05)
    assert len(calls) == 1
    clock2.advance(1)
    await asyncio.wait_for(task, 5)
    assert calls == [1000.0, 1100.0]
    assert (await second.report(run_id)).status == "succeeded"
    second.close()


async def test_a_run_owned_by_a_live_process_is_not_taken(db_path: Path) -> None:
    clock = FakeClock(start=1000.0)
    app = Charter(db_path, tools=[record], clock=clock)
    run_id = await app.start(chain(2))
    app.engine()._hosted.clear()  # forget it here: another process holds it
    live = f"{socket.gethostname()}:{os.getppid()}:other"
    await app.store._execute("UPDATE runs SET owner = :o, lease_expires = :l", {"o": live, "l": 1030.0})  # type: ignore[attr-defined]
    with pytest.raises(RunStateError, match="being run by another process"):
        await app.engine().adopt(run_id)
    clock.advance(3600)  # a live process here keeps its run even past its lease (a blocked loop, a clock jump)
    with pytest.raises(RunStateError, match="being run by another process"):
        await app.engine().adopt(run_id)
    elsewhere = "another-host:4242:x"  # an owner on another machine is presumed gone once its lease expired
    await app.store._execute("UPDATE runs SET owner = :o, lease_expires = :l", {"o": elsewhere, "l": clock.now() + 30})  # type: ignore[attr-defined]
    with pytest.raises(RunStateError):
        await app.engine().adopt(run_id)
    clock.advance(31)
    await app.engine().adopt(run_id)
    await app.engine().run_until_settled()
    assert (await app.report(run_id)).status == "succeeded"


async def test_a_run_whose_owner_died_here_is_taken_at_once(db_path: Path) -> None:
    app = Charter(db_path, tools=[record])
    run_id = await app.start(chain(2))
    app.engine()._hosted.clear()
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()  # a pid that existed and is gone
    dead = f"{socket.gethostname()}:{proc.pid}:gone"
    await app.store._execute("UPDATE runs SET owner = :o, lease_expires = :l", {"o": dead, "l": 4e9})  # type: ignore[attr-defined]
    report = await app.resume(run_id)
    assert report.status == "succeeded"


async def test_derived_state_matches_the_log(db_path: Path) -> None:
    @tool
    def items() -> list[int]:
        return [1, 2, 3]

    @tool
    def square(x: int, ctx: ToolContext) -> int:
        if x == 2 and ctx.attempt == 1:
            raise RetryableError("once", next_retry_delay=0)
        return x * x

    app = Charter(db_path, tools=[items, square])
    report = await app.run({"goal": "g", "steps": [
        {"id": "list", "tool": "items"},
        {"id": "sq", "tool": "square", "for_each": "${list}", "args": {"x": "${item}"}},
    ]})
    assert report.output == [1, 4, 9]
    steps = (await app.state(report.id)).steps
    assert steps["sq"].status == "succeeded" and steps["sq"].output == [1, 4, 9]
    assert steps["sq"].units[1].attempt == 2 and steps["sq"].units[0].attempt == 1
    assert steps["list"].output == [1, 2, 3]
    run = await app.store.get_run(report.id)
    assert run is not None
    assert (run.status, run.steps_done, run.steps_total, run.output) == ("succeeded", 2, 2, [1, 4, 9])
    assert run.last_seq == len(report.events) and run.owner is None
