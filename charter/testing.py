"""What users of Charter need in their own tests: a fake clock and log assertions.

>>> from charter.testing import FakeClock
>>> clock = FakeClock(start=1000.0)
>>> clock.advance(30)
>>> clock.now()
1030.0
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, TypeVar

from .events import Event
from .models.scripted import ScriptedModel

T = TypeVar("T")

__all__ = ["FakeClock", "ScriptedModel", "assert_events_in_order", "event_types"]


class FakeClock:
    """A clock that moves only when told to (or, with ``auto_advance``, when waits are idle).

    ``advance(seconds)`` moves time and wakes every sleeper and timeout that is
    due. With ``auto_advance=True`` a wait that is still pending after the event
    loop has had a few turns makes time jump to its deadline: backoff of minutes
    passes in microseconds, while work that finishes at once still finishes
    first.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, auto_advance: bool = False) -> None:
        self._now = float(start)
        self.auto_advance = auto_advance
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward and wake what is due."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds
        self._fire()

    def _fire(self) -> None:
        while self._timers and self._timers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._timers)
            if not fut.done():
                fut.set_result(None)

    def _timer(self, deadline: float) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (deadline, next(self._seq), fut))
        return fut

    async def _idle_then_jump(self, done: Awaitable[Any] | asyncio.Future[Any], deadline: float) -> None:
        for _ in range(20):
            await asyncio.sleep(0)
            if isinstance(done, asyncio.Future) and done.done():
                return
        if deadline > self._now:
            self._now = deadline
        self._fire()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        timer = self._timer(self._now + seconds)
        if self.auto_advance:
            jumper = asyncio.ensure_future(self._idle_then_jump(timer, self._now + seconds))
            try:
                await timer
            finally:
                jumper.cancel()
        else:
            await timer

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        if timeout is None:
            return await aw
        task = asyncio.ensure_future(aw)
        deadline = self._now + timeout
        timer = self._timer(deadline)
        jumper = asyncio.ensure_future(self._idle_then_jump(task, deadline)) if self.auto_advance else None
        try:
            waiters: list[asyncio.Future[Any]] = [task, timer]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            timer.cancel()
            if jumper is not None:
                jumper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        raise TimeoutError


def event_types(events: Iterable[Event]) -> list[str]:
    """The type names of ``events``, in order."""
    return [e.type for e in events]


Expected = str | tuple[str, dict[str, Any]]


def assert_events_in_order(events: Sequence[Event], expected: Sequence[Expected]) -> None:
    """Assert that ``expected`` occurs in ``events`` as a subsequence.

    An entry is a type name, or a type name and fields that must match:
    ``("StepFailed", {"step": "fetch"})``. Other events may come in between.
    """
    it = iter(events)
    for want in expected:
        name, fields = (want, {}) if isinstance(want, str) else want
        for ev in it:
            if ev.type == name and all(getattr(ev, k, None) == v for k, v in fields.items()):
                break
        else:
            got = ", ".join(event_types(events))
            raise AssertionError(f"expected {want!r} (in order) in the log; the log is: {got}")
