"""What users of Charter need in their own tests: a fake clock, the scripted model and log assertions.

>>> from charter.testing import FakeClock
>>> clock = FakeClock(start=1000.0)
>>> clock.advance(30)
>>> clock.now()
1030.0
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from .events import Event
from .models.scripted import ScriptedModel

T = TypeVar("T")

__all__ = ["FakeClock", "ScriptedModel", "assert_events_in_order", "event_types"]


class _Hold:
    """One piece of in-flight work: open while it runs, held unless it sleeps on the clock."""

    __slots__ = ("held", "open")

    def __init__(self) -> None:
        self.open = True
        self.held = True


_hold: contextvars.ContextVar[_Hold | None] = contextvars.ContextVar("charter_fake_clock_hold", default=None)


class FakeClock:
    """A clock that moves only when told to (or, with ``auto_advance``, when nothing is happening).

    ``advance(seconds)`` moves time and wakes every sleeper and timeout that is
    due. With ``auto_advance=True``, time skips to the next pending timer once
    nothing is in flight and the event loop has had a few idle turns: backoff
    of minutes passes in microseconds. Work in flight is what the engine marks
    with :meth:`in_flight` (every attempt of a step): while a tool runs, in a
    thread or on the loop, time stands still however long the machine takes,
    as in Temporal's time-skipping test environment; an attempt that sleeps on
    this clock (a rate limit, a model's backoff) lets time skip meanwhile. A
    tool that hangs therefore never times out by itself: move time with
    :meth:`advance` to test a timeout.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, auto_advance: bool = False) -> None:
        self._now = float(start)
        self.auto_advance = auto_advance
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._moves = 0  # how often time moved: an idle count restarts after a move

    def now(self) -> float:
        return self._now

    @property
    def busy(self) -> int:
        """How many pieces of work are in flight (and not sleeping on this clock)."""
        return self._in_flight

    def advance(self, seconds: float) -> None:
        """Move time forward and wake what is due."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds
        self._fire()

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        hold = _Hold()
        token = _hold.set(hold)
        self._take()
        try:
            yield
        finally:
            hold.open = False
            if hold.held:
                hold.held = False
                self._give_back()
            _hold.reset(token)

    def _take(self) -> None:
        self._in_flight += 1

    def _give_back(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def _fire(self) -> None:
        self._moves += 1
        while self._timers and self._timers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._timers)
            if not fut.done():
                fut.set_result(None)

    def _timer(self, deadline: float) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (deadline, next(self._seq), fut))
        return fut

    async def _skip_when_idle(self, done: asyncio.Future[Any]) -> None:
        """Skip to the next timer once nothing is in flight and the loop has settled."""
        while not done.done():
            moves = self._moves
            for _ in range(20):
                await asyncio.sleep(0)
                if done.done():
                    return
            if moves != self._moves:
                continue  # time moved meanwhile: let whoever it woke run before skipping again
            if self._in_flight:
                idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._idle_waiters.append(idle)
                await idle
                continue
            while self._timers and self._timers[0][2].done():
                heapq.heappop(self._timers)  # waits that ended some other way
            if self._timers:
                # the earliest timer only: a later deadline must not carry time past an earlier one
                self._now = max(self._now, self._timers[0][0])
            self._fire()

    async def sleep(self, seconds: float) -> None:
        hold = _hold.get()
        released = hold is not None and hold.held
        if released:  # the work in flight waits on this clock: time may skip meanwhile
            assert hold is not None
            hold.held = False
            self._give_back()
        try:
            if seconds <= 0:
                await asyncio.sleep(0)
                return
            timer = self._timer(self._now + seconds)
            if self.auto_advance:
                skipper = asyncio.ensure_future(self._skip_when_idle(timer))
                try:
                    await timer
                finally:
                    skipper.cancel()
            else:
                await timer
        finally:
            if released:
                assert hold is not None
                if hold.open:
                    hold.held = True
                    self._take()

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        if timeout is None:
            return await aw
        task = asyncio.ensure_future(aw)
        timer = self._timer(self._now + timeout)
        skipper = asyncio.ensure_future(self._skip_when_idle(task)) if self.auto_advance else None
        try:
            waiters: list[asyncio.Future[Any]] = [task, timer]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            timer.cancel()
            if skipper is not None:
                skipper.cancel()
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
