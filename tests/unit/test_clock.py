"""The fake clock skips time only when nothing is in flight, so a loaded machine cannot change a test's times."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

from charter import ToolContext, tool
from charter.events import StepStarted, StepSucceeded
from charter.testing import FakeClock


async def _idle_turns(n: int = 200) -> None:
    """Let the event loop run ``n`` turns with nothing to do: what a slow thread looks like from the loop."""
    for _ in range(n):
        await asyncio.sleep(0)


async def _in_thread(started: threading.Event, go: threading.Event) -> None:
    """Wait (off the loop) until a sync tool has started, keep its thread busy a while, then let it finish."""
    await asyncio.get_running_loop().run_in_executor(None, started.wait)
    await _idle_turns()
    go.set()


async def test_a_sync_tool_busy_in_a_thread_is_not_idle_time(make_app: Any, clock: FakeClock) -> None:
    started, go = threading.Event(), threading.Event()

    @tool(timeout=5)
    def slow() -> str:
        started.set()
        go.wait()
        return "done"

    helper = asyncio.ensure_future(_in_thread(started, go))
    report = await make_app([slow]).run({"goal": "g", "steps": [{"id": "s", "tool": "slow"}]})
    await helper
    assert report.status == "succeeded" and len(report.step("s").attempts) == 1
    began = next(e.at for e in report.events if isinstance(e, StepStarted))
    ended = next(e.at for e in report.events if isinstance(e, StepSucceeded))
    assert ended == began  # no fake time passed while the thread worked


async def test_rate_limited_sync_tools_start_exactly_on_their_schedule(make_app: Any) -> None:
    """The busy-machine failure of the rate-limit test, made to happen every time."""
    releases = [threading.Event() for _ in range(3)]
    calls = itertools.count()

    @tool(rate=1.0, concurrency=1)  # each call waits for the one before, busy in its thread
    def send(to: str, ctx: ToolContext) -> str:
        releases[next(calls)].wait()
        return to

    async def release_each_after_a_while() -> None:
        for r in releases:
            await _idle_turns()
            r.set()

    helper = asyncio.ensure_future(release_each_after_a_while())
    report = await make_app([send]).run({"goal": "g", "inputs": {"to": ["a", "b", "c"]}, "steps": [
        {"id": "s", "tool": "send", "for_each": "${inputs.to}", "args": {"to": "${item}"}}]})
    await helper
    starts = [e.at for e in report.events if isinstance(e, StepStarted)]
    assert report.status == "succeeded"
    assert [b - a for a, b in itertools.pairwise(starts)] == [1.0, 1.0]


async def test_time_skips_to_the_earliest_timer_not_past_it() -> None:
    clock = FakeClock(start=0, auto_advance=True)
    woke: list[tuple[str, float]] = []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    await asyncio.gather(nap("long", 5), nap("short", 1), nap("middle", 2.5))
    assert woke == [("short", 1), ("middle", 2.5), ("long", 5)]


async def test_nothing_skips_while_work_is_in_flight_except_its_own_sleep() -> None:
    clock = FakeClock(start=0, auto_advance=True)
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def work() -> None:
        with clock.in_flight():
            inside.set()
            await leave.wait()

    worker = asyncio.ensure_future(work())
    await inside.wait()
    waiter = asyncio.ensure_future(clock.sleep(10))
    await _idle_turns()
    assert clock.now() == 0 and not waiter.done() and clock.busy == 1
    leave.set()
    await asyncio.gather(worker, waiter)
    assert clock.now() == 10 and clock.busy == 0

    async def backs_off() -> float:
        with clock.in_flight():
            await clock.sleep(30)  # work that waits on the clock lets it skip
            return clock.now()

    assert await backs_off() == 40 and clock.busy == 0
