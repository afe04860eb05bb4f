"""The facade's methods that interfaces build on: checking and planning without a store, acting
without driving (start, start_resume, start_retry, propose, revise), driving, observing, pausing
everything, and waiting for a run another app runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from charter import Charter, ConfigError, PermanentError, PlanError, StoreError, tool
from charter.app import Pausing, check_plan, make_registry, plan_request
from charter.events import Event
from charter.testing import ScriptedModel, event_types


@tool
def shout(name: str) -> str:
    """Shout a name."""
    return name.upper()


GREET = {"goal": "Greet", "inputs": {"who": "ana"},
         "steps": [{"id": "a", "tool": "shout", "args": {"name": "${inputs.who}"}},
                   {"id": "b", "tool": "shout", "args": {"name": "${a}"}}]}


async def test_a_plan_is_checked_without_a_store(tmp_path: Path) -> None:
    registry = make_registry([shout])
    plan = await check_plan(GREET, registry, inputs={"who": "bo"})
    assert [s.id for s in plan.steps] == ["a", "b"]
    with pytest.raises(ConfigError, match="unknown input"):
        await check_plan(GREET, registry, inputs={"whom": "bo"})
    with pytest.raises(PlanError, match="unknown tool 'whisper'"):
        await check_plan({"goal": "g", "steps": [{"id": "a", "tool": "whisper"}]}, registry)
    with pytest.raises(PlanError, match="needs a model"):
        await check_plan({"goal": "g", "steps": [{"id": "a", "llm": {"prompt": "hi"}}]}, registry, None)
    assert list(tmp_path.iterdir()) == []  # nothing was made on disk


async def test_a_request_is_planned_without_a_store() -> None:
    model = ScriptedModel([{"goal": "Greet", "steps": [{"id": "a", "why": "asked", "tool": "shout",
                                                        "args": {"name": "ana"}}]}])
    result = await plan_request("Greet Ana", make_registry([shout]), model)
    assert result.plan.goal == "Greet" and len(result.calls) == 1


async def test_start_records_and_drive_runs(make_app: Any) -> None:
    app = make_app([shout])
    run_id = await app.start(GREET, budget={"steps": 1})
    assert (await app.report(run_id)).status == "running"  # recorded, nothing ran yet
    await app.drive()
    report = await app.report(run_id)
    assert report.status == "paused" and "budget" in report.reason and report.step("a").output == "ANA"

    assert await app.start_resume(run_id[:6], budget={"steps": 5}) is True
    await app.drive()
    assert (await app.report(run_id)).status == "succeeded" and (await app.report(run_id)).output == "ANA"
    assert await app.start_resume(run_id) is False  # it has ended: nothing to go on with


async def test_an_observer_added_while_the_engine_runs_hears_from_then_on(make_app: Any) -> None:
    app = make_app([shout])
    run_id = await app.start(GREET)  # the engine exists, and has told no one of this run's creation
    heard: list[Event] = []
    app.observe(lambda state, events: heard.extend(events))
    await app.drive()
    app.flush_watchers(timeout=30)  # a watcher hears on a thread of its own: wait until it has heard all
    assert event_types(heard)[0] == "StepStarted" and event_types(heard)[-1] == "RunSucceeded"
    assert (await app.report(run_id)).status == "succeeded"


async def test_start_retry_then_drive(make_app: Any, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"

    @tool
    def picky(name: str) -> str:
        if not fixed.exists():
            raise PermanentError("not yet")
        return name

    app = make_app([picky])
    report = await app.run({"goal": "g", "steps": [{"id": "p", "tool": "picky", "args": {"name": "x"}}]})
    assert report.status == "failed"
    fixed.touch()
    assert await app.start_retry(report.id[:6], "p") == report.id
    await app.drive()
    assert (await app.report(report.id)).status == "succeeded"


async def test_propose_records_a_plan_made_before_and_revise_edits_it_in_review(make_app: Any) -> None:
    answer = {"goal": "Greet", "steps": [{"id": "a", "why": "asked", "tool": "shout", "args": {"name": "ana"}}]}
    app = make_app([shout], model=ScriptedModel([answer]))  # one answer: planning twice would fail
    planned = await app.plan("Greet Ana")
    run_id = await app.propose("Greet Ana", planned=planned)
    assert (await app.report(run_id)).status == "created"
    await app.revise(run_id, {**answer, "steps": [{**answer["steps"][0], "args": {"name": "bo"}}]},
                     reason="edited in review")
    assert (await app.report(run_id)).status == "created"  # still waiting for review
    with pytest.raises(PlanError, match="unknown tool"):
        await app.revise(run_id, {"goal": "g", "steps": [{"id": "a", "tool": "whisper"}]})
    assert await app.approve(run_id) == "done"
    await app.drive()
    report = await app.report(run_id)
    assert report.status == "succeeded" and report.output == "BO" and report.request == "Greet Ana"
    assert event_types(report.events)[:4] == ["RunCreated", "ModelCalled", "PlanRevised", "PlanApproved"]


async def test_pause_all_pauses_every_run_the_app_drives(make_app: Any) -> None:
    started = asyncio.Event()

    @tool
    async def hold() -> str:
        started.set()
        await asyncio.sleep(3600)
        return "never"

    app = make_app([hold])
    run_id = await app.start({"goal": "g", "steps": [{"id": "h", "tool": "hold"}]})
    driving = asyncio.create_task(app.drive())
    await started.wait()
    assert await app.pause_all("stopped by the test") == Pausing((run_id,), 1)
    await driving
    report = await app.report(run_id)
    assert report.status == "paused" and report.reason == "stopped by the test"


async def test_wait_sees_a_pause_that_another_app_carries_out(db_path: Path) -> None:
    started = asyncio.Event()

    @tool
    async def hold() -> str:
        started.set()
        await asyncio.sleep(3600)
        return "never"

    # The real clock: the runner looks for requests from other processes every 0.2 s of it.
    with Charter(db_path, tools=[hold]) as runner, Charter(db_path, tools=[hold]) as other:
        run_id = await runner.start({"goal": "g", "steps": [{"id": "h", "tool": "hold"}]})
        driving = asyncio.create_task(runner.drive())
        await started.wait()
        assert (await other.wait(run_id, until={"cancelled"}, timeout=0.05)).status == "running"  # gave up
        assert await other.pause(run_id, "lunch") == "requested"  # the runner holds it: it was asked
        row = await other.wait(run_id, until={"paused"}, timeout=30)
        assert row.status == "paused" and row.reason == "lunch"
        await driving
        assert (await other.wait(run_id)).status == "paused"  # settled already: at once


async def test_async_with_closes_and_run_sync_inside_a_loop_says_what_to_do(tmp_path: Path) -> None:
    async with Charter(tmp_path / "c.db", tools=[shout]) as app:
        with pytest.raises(ConfigError, match=r"run_sync is for code that is not async; here, use: await app\.run"):
            app.run_sync(GREET)
        assert (await app.run(GREET)).status == "succeeded"
    with pytest.raises(Exception, match="closed"):
        await app.runs()


async def test_a_store_opened_to_read_says_so_when_asked_to_write(tmp_path: Path) -> None:
    async with Charter(tmp_path / "c.db", tools=[shout]) as app:
        run_id = await app.start(GREET)
        assert await app.pause(run_id) == "done"
    async with Charter(tmp_path / "c.db", tools=[shout], mode="ro") as reader:
        with pytest.raises(StoreError, match=r"is open only to read \(mode 'ro'\)"):
            await reader.resume(run_id)
        assert (await reader.report(run_id)).status == "paused"  # nothing was changed
