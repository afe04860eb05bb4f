"""The live view: a run's committed events as server-sent events, for as long as the page listens.

Each message's id is the event's sequence number in the run's log, so a browser that
reconnects (``Last-Event-ID``) resumes after the last event it had. The stream does not
end when the run pauses or waits for a decision: the run may go on later. It only reads
(:meth:`~charter.Charter.follow`): a browser that stops reading only stops its own
stream, never a run (the socket's back-pressure holds this reader, nothing else).

It may import the facade and the events; never the engine or the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..app import Charter, RunUpdate
from .safety import dumps
from .views import shown_status

RETRY_MS = 1000  # how soon a browser reconnects after the stream broke


def update_json(update: RunUpdate) -> dict[str, Any]:
    """What the page needs of one update: the event, and every step's state just after it."""
    snap = update.snapshot()
    ev = update.event
    event: dict[str, Any] | None = None
    if ev is not None:
        event = {"type": ev.type, "at": ev.at}
        for name in ("step", "item", "attempt", "reason", "by"):
            if hasattr(ev, name):
                event[name] = getattr(ev, name)
    status = shown_status(snap.status, update.interrupted)
    return {
        "seq": snap.last_seq, "event": event,
        "run": {"status": status, "stored_status": snap.status, "interrupted": update.interrupted,
                "reason": snap.reason, "plan_version": snap.plan_version},
        "steps": {s.id: {"status": s.status, "attempt": s.attempt, "retry_at": s.retry_at,
                         "items_total": s.items_total, "items_done": s.items_done}
                  for s in snap.steps.values()},
    }


async def stream(charter: Charter, run_id: str, after: int) -> AsyncIterator[bytes]:
    """The run's updates after sequence number ``after``, as server-sent events, without end."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    async for update in charter.follow(run_id, after=after):
        body = dumps(update_json(update))
        kind = "interrupted" if update.event is None else "update"
        yield f"id: {update.state.last_seq}\nevent: {kind}\ndata: {body}\n\n".encode()
