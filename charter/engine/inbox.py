"""Control requests on their way to the engine's loop, and one direct request at a time per run.

A request for a run the loop drives is handed to the loop (:class:`Asked`): the loop carries
it out in its next batch and replies once the batch is committed: ``"done"``, the error that
kept it from applying, or :data:`AGAIN` when the run was let go of before the loop took the
request (its caller then carries it out itself). A request for a run the loop does not drive
is carried out by its caller, one at a time per run (:class:`Turns`): a second caller waits,
then looks again at who holds the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from . import control

AGAIN = "again"  # a reply: the run was let go of before the loop took the request

#: a caller's future and what to set it to once the batch is committed (``"done"`` or an error)
Reply = tuple["asyncio.Future[Any]", Any]


@dataclass
class Asked:
    """A control request for a run the engine hosts, waiting for the loop to carry it out."""

    request: control.Request
    reply: asyncio.Future[str] | None = None  # a caller in this process waits for it
    row: int | None = None  # a stored request (another process's): deleted with the batch that carries it out


def answer(replies: Iterable[Reply]) -> None:
    """Give each waiting caller its outcome (a caller that gave up is skipped)."""
    for fut, outcome in replies:
        if fut.done():
            continue
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


def fail(futures: Iterable[asyncio.Future[Any]], exc: BaseException) -> None:
    """The batch that was to carry these out did not commit: each waiting caller hears why."""
    failed = exc if isinstance(exc, Exception) else RuntimeError(str(exc) or type(exc).__name__)
    for fut in futures:
        if not fut.done():
            fut.set_exception(failed)


class Turns:
    """One direct control request at a time per run; the locks of runs nobody waits for are dropped."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def turn(self, run_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(run_id, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[run_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[run_id]
            if users == 1:
                del self._locks[run_id]
            else:
                self._locks[run_id] = (lock, users - 1)


__all__ = ["AGAIN", "Asked", "Reply", "Turns", "answer", "fail"]
