"""Charter.watch: follow a run from its log, whichever app executes it, without touching it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from charter import Charter, tool
from charter.events import StepStarted
from charter.testing import FakeClock

PLAN = {"goal": "g", "steps": [
    {"id": "a", "tool": "hold"},
    {"id": "b", "tool": "hold", "needs": ["a"]},
]}


def held() -> tuple[asyncio.Event, object]:
    gate = asyncio.Event()

    @tool
    async def hold() -> str:
        await gate.wait()
        return "done"

    return gate, hold


async def test_watch_follows_a_run_that_another_app_executes(tmp_path: Path) -> None:
    gate, hold = held()
    db = tmp_path / "charter.db"
    with Charter(db, tools=[hold]) as runner, Charter(db) as watcher:
        run_id = await runner.start(PLAN)
        running = asyncio.create_task(runner.engine().run_until_settled())
        seen: list[str] = []
        async for update in watcher.watch(run_id, interval=0.01):
            assert update.event is not None and not update.interrupted
            seen.append(type(update.event).__name__ + (f" {update.event.step}" if hasattr(update.event, "step") else ""))
            assert update.state.last_seq == len(seen)
            if isinstance(update.event, StepStarted):
                gate.set()  # the watcher saw the step start: let it go on
        await running
    assert seen == ["RunCreated", "PlanApproved", "StepStarted a", "StepSucceeded a", "StepStarted b",
                    "StepSucceeded b", "RunSucceeded"]
    assert update.state.status == "succeeded" and update.state.output == "done"


async def test_watching_a_finished_run_replays_it_and_stops(tmp_path: Path) -> None:
    gate, hold = held()
    gate.set()
    with Charter(tmp_path / "charter.db", tools=[hold]) as app:
        report = await app.run(PLAN)
        updates = [u async for u in app.watch(report.id[:5])]
    assert len(updates) == 7 and updates[-1].state.status == "succeeded"


async def test_a_run_whose_owner_is_gone_ends_the_watch_as_interrupted(tmp_path: Path) -> None:
    _gate, hold = held()
    db = tmp_path / "charter.db"
    with Charter(db, tools=[hold]) as runner:
        run_id = await runner.start(PLAN)  # claimed by the runner's engine, which never runs it
        lease_until = (await runner.store.get_run(run_id)).lease_expires  # type: ignore[union-attr]
    later = FakeClock(start=lease_until + 1, auto_advance=True)  # the lease has run out
    with Charter(db, clock=later) as watcher:
        updates = [u async for u in watcher.watch(run_id)]
        last = updates[-1]
        assert (last.event, last.interrupted, last.state.status) == (None, True, "running")
        assert len(await watcher.store.events(run_id)) == len(updates) - 1 == 2  # nothing was written
