"""Time, injected. The engine reads time and waits only through a :class:`Clock`.

:class:`SystemClock` is the real one. ``charter.testing.FakeClock`` is moved by
tests, so backoff, timeouts and leases can be tested without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """What the engine needs from time: now, sleep, and a deadline on an awaitable."""

    def now(self) -> float:
        """Seconds since the epoch (comparable across processes, stored in the log)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        """Await ``aw``; raise :class:`TimeoutError` when ``timeout`` seconds pass first."""
        ...

    def in_flight(self) -> contextlib.AbstractContextManager[None]:
        """Mark work in progress (an attempt) that time must not be skipped past.

        Real time needs no mark. A fake clock that skips ahead on its own
        (``FakeClock(auto_advance=True)``) skips only while nothing is in
        flight, or while what is in flight itself sleeps on this clock: a tool
        busy in a thread on a loaded machine is not mistaken for idle time.
        """
        ...


class SystemClock:
    """The wall clock and asyncio's timers."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        if timeout is None:
            return await aw
        async with asyncio.timeout(timeout):
            return await aw

    def in_flight(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()
