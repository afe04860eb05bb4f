"""Crash an engine at an exact place: right after a commit that holds certain events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from charter.events import Event
from charter.store import Store


def crash_after_commit(store: Store, when: Callable[[Sequence[Event]], bool]) -> None:
    """Cancel the engine's loop right after it commits a batch for which ``when`` holds.

    The commit happened; nothing that follows it in the loop (the attempt going on,
    its result) does, as if the process had died there. Only for the SQLite store,
    whose writes do not suspend: the cancel lands at the loop's next wait.
    """
    original = store.append

    async def append(writes: Any, owner: str, answered: Any = ()) -> None:
        await original(writes, owner, answered)
        if any(when(w.events) for w in writes):
            task = asyncio.current_task()
            assert task is not None
            task.cancel()

    store.append = append  # type: ignore[method-assign]
