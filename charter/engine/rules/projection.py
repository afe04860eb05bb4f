"""The projection: the rows a store keeps beside a run's events, as plain frozen records.

A store writes a run's events and, in the same transaction, what they lead to:
the run's row (:func:`run_record`) and, where a store keeps them, a row for each
step (and each ``for_each`` item) the events touched (:func:`project`). The
SQLite store keeps no step rows (a run's steps are replayed from its log when
asked for); a fleet's work queue is built from them. Deriving those rows is a rule, so it lives here; the store only
serialises them and never sees :class:`RunState`. Imports the state only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ...events import Event
from .state import RunState, StepState, Unit, shown_status


@dataclass(frozen=True, slots=True)
class NewRunRecord:
    """The row of a run that was just created (from its state right after ``RunCreated``)."""

    run_id: str
    status: str
    goal: str
    tool_sources: tuple[str, ...]
    parent_run: str | None
    steps_total: int
    created_at: float
    request: str | None = None  # the words the plan was made from, if a planner made it


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What a batch of events changes in a run's row."""

    status: str
    steps_done: int
    reason: str
    output: Any
    updated_at: float
    finished_at: float | None
    tokens: int = 0  # model tokens used so far, input and output
    cost: float = 0.0  # dollars, where the price is known


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A step's row (``item`` is None) or one ``for_each`` item's. The status is the one people see."""

    step_id: str
    item: int | None
    status: str
    attempt: int
    retry_at: float | None
    started_at: float | None
    finished_at: float | None
    output: Any
    error: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Projection:
    """The rows that events lead to: the run's, and those of the steps and items they touched, in order."""

    run_id: str
    run: RunRecord
    steps: tuple[StepRecord, ...]


def new_run(state: RunState) -> NewRunRecord:
    """The row of a new run, from its state right after ``RunCreated``."""
    return NewRunRecord(
        run_id=state.run_id, status=state.status, goal=state.plan.goal, tool_sources=tuple(state.tool_sources),
        parent_run=state.parent_run, steps_total=len(state.steps), created_at=state.created_at,
        request=state.request,
    )


def run_record(state: RunState) -> RunRecord:
    """The run's row as its events leave it (all a commit writes beside them)."""
    return RunRecord(
        status=state.status, steps_done=state.done_steps, reason=state.reason, output=state.output,
        updated_at=state.updated_at, finished_at=state.finished_at, tokens=state.tokens, cost=state.cost,
    )


def project(state: RunState, events: Sequence[Event]) -> Projection:
    """The rows ``events`` lead to, read from ``state`` once they are all applied to it.

    Values (outputs, errors) are the events' own, shared and not copied: events
    are never changed once made.
    """
    run = run_record(state)
    steps = tuple(step_record(state, sid, item) for sid, item in touched(state, events))
    return Projection(state.run_id, run, steps)


def touched(state: RunState, events: Iterable[Event]) -> list[tuple[str, int | None]]:
    """The (step, item) rows that ``events`` may have changed, in the order first touched.

    An event about a unit touches it and, for an item, its step too (its status
    and attempt count come from the items). An event about a list of steps
    (``StepsReset``, ``RunWaiting``) touches them and all their items. A model
    call that is not a step's (the planner's) touches nothing.
    """
    out: dict[tuple[str, int | None], None] = {}
    for ev in events:
        step: str | None = getattr(ev, "step", None)
        if step is None:
            for sid in getattr(ev, "steps", ()):
                out[(sid, None)] = None
                out.update(((sid, i), None) for i in state.steps[sid].units if i is not None)
        elif step in state.steps:
            item: int | None = getattr(ev, "item", None)
            out[(step, item)] = None
            if item is not None:
                out[(step, None)] = None
    return list(out)


def step_record(state: RunState, step_id: str, item: int | None) -> StepRecord:
    """The row of a step (``item`` None) or of one of its items, as the state has it now."""
    st: StepState = state.steps[step_id]
    src: StepState | Unit
    if item is None:
        u = st.units.get(None)
        src = st
        # a for_each step has no unit of its own: its attempt is its items' latest
        attempt = u.attempt if u else max((x.attempt for x in st.units.values()), default=0)
        retry_at = u.retry_at if u else None
        status = shown_status(st)
    else:
        src = st.units[item]
        attempt, retry_at, status = src.attempt, src.retry_at, src.status
    return StepRecord(
        step_id=step_id, item=item, status=status, attempt=attempt, retry_at=retry_at,
        started_at=src.started_at, finished_at=src.finished_at, output=src.output, error=src.error,
    )
