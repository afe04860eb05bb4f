"""Watchers: who follows runs as they go (the live console now; the web page and traces next).

A watcher is a callable ``(RunSnapshot, events)`` given, after each commit, a
frozen snapshot of the run and the events just committed. It runs on a thread
of its own, fed through a queue: a slow watcher cannot hold the engine up, one
that fails is let go of, and none can touch the engine's state.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..events import Event
from ..plan.model import Plan
from . import rules

log = logging.getLogger("charter.engine")


@dataclass(frozen=True, slots=True)
class StepSnapshot:
    """One step of a run at one moment, as people see it."""

    id: str
    status: str  # as shown: a plain step in flight shows its attempt's (``waiting``: a retry is due)
    attempt: int  # of a plain step (0 for a ``for_each`` step: see its items)
    retry_at: float | None
    started_at: float | None
    finished_at: float | None
    attempt_started_at: float | None  # when a plain step's latest attempt started
    error: dict[str, Any] | None  # the step's, or its latest attempt's while a retry is due
    reason: str  # why it was skipped
    items_total: int | None  # a ``for_each`` step's items, once known
    items_done: int


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """A run at one moment, frozen: what a watcher is given."""

    run_id: str
    plan: Plan
    plan_version: int
    status: str
    reason: str
    last_seq: int
    steps: dict[str, StepSnapshot]  # a fresh dict per snapshot, in plan order; nothing else holds it
    created_at: float = 0.0
    trace: Mapping[str, str] = field(default_factory=dict)  # RunCreated's trace context (see the event)
    reopenings: int = 0  # times the run ended and was made live again (a retry after it failed, ...)
    reopened_at: float | None = None  # when it last was


Watcher = Callable[[RunSnapshot, Sequence[Event]], None]


def snapshot(state: rules.RunState) -> RunSnapshot:
    """A frozen copy of what people see of ``state``."""
    steps = {step.id: step_snapshot(state, step.id) for step in state.plan.steps}
    return _run_snapshot(state, steps)


def step_snapshot(state: rules.RunState, step_id: str) -> StepSnapshot:
    st = state.steps[step_id]
    unit = st.units.get(None)
    error = st.error if st.error is not None or unit is None else unit.error
    return StepSnapshot(
        id=step_id, status=rules.shown_status(st),
        attempt=unit.attempt if unit else 0,
        retry_at=unit.retry_at if unit else None, started_at=st.started_at, finished_at=st.finished_at,
        attempt_started_at=unit.started_at if unit else None,
        error=error, reason=st.reason, items_total=None if st.items is None else len(st.items),
        items_done=sum(1 for u in st.units.values() if u.item is not None and u.status == rules.SUCCEEDED),
    )


def _run_snapshot(state: rules.RunState, steps: dict[str, StepSnapshot]) -> RunSnapshot:
    return RunSnapshot(state.run_id, state.plan, state.plan_version, state.status, state.reason, state.last_seq,
                       steps, state.created_at, state.trace, state.reopenings, state.reopened_at)


class Snapshots:
    """The snapshots given to watchers, each made from the run's last one: only the steps a commit's
    events touched are made again (a commit of a long run costs what it changed, not the run's size)."""

    def __init__(self) -> None:
        # per run: the plan and the sequence number the steps are of, and the steps (a dict of our own:
        # a watcher may do as it likes with the copy it is given)
        self._last: dict[str, tuple[Plan, int, dict[str, StepSnapshot]]] = {}

    def after(self, state: rules.RunState, events: Sequence[Event]) -> RunSnapshot:
        """``state`` frozen, just after ``events`` were applied to it."""
        last = self._last.get(state.run_id)
        if last is None or last[0] is not state.plan or last[1] != state.last_seq - len(events):
            # a run new here, a revised plan, or commits not seen: every step
            steps = {step.id: step_snapshot(state, step.id) for step in state.plan.steps}
        else:
            steps = last[2]
            for sid in {sid for sid, _ in rules.touched(state, events)}:
                steps[sid] = step_snapshot(state, sid)
        self._last[state.run_id] = (state.plan, state.last_seq, steps)
        return _run_snapshot(state, dict(steps))

    def forget(self, run_id: str) -> None:
        """The run is no longer held here: its next snapshot is made whole."""
        self._last.pop(run_id, None)


class Feed:
    """Delivers to one watcher on its own thread, in commit order."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.failed = False
        self._queue: queue.SimpleQueue[tuple[RunSnapshot, tuple[Event, ...]] | None] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._deliver, name="charter-watcher", daemon=True)
        self._thread.start()

    def put(self, snap: RunSnapshot, events: tuple[Event, ...]) -> None:
        if self.failed:
            return
        with self._idle:
            self._pending += 1
        self._queue.put((snap, events))

    def _deliver(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if not self.failed:
                    self.watcher(*item)
            except Exception as exc:  # a watcher cannot stop a run (a closed pipe, a broken display)
                self.failed = True
                log.warning("a watcher of the engine failed and no longer gets events: %r", exc)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the watcher has been given everything put so far; ``False`` on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        self._queue.put(None)
