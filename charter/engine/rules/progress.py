"""Deciding what happens next: which units are ready, which retries are due, what is skipped, when the run ends.

:func:`advance` folds in what follows from the events so far: dependents of a
failed step are skipped, a finished fan-out is gathered, approvals past their
deadline fail, the budget pauses the run, and the run succeeds, fails or asks
for a revised plan. The events it decides are applied before it returns.
Imports the state, :mod:`.transitions` and :mod:`.budget`; never a clock (``now`` is given).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...events import (
    Event,
    ReplanRequested,
    RunFailed,
    RunPaused,
    RunSucceeded,
    RunWaiting,
    StepFailed,
    StepSkipped,
    StepSucceeded,
)
from ...plan.model import Step
from ...plan.refs import ResolveError, render
from .budget import over_budget
from .state import (
    AWAITING,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    STEP_DONE,
    SUCCEEDED,
    WAITING,
    RunState,
    StepState,
    Unit,
    lookup,
    permanent,
    unit_of,
)
from .transitions import apply

Emit = Callable[[Event], None]


@dataclass(slots=True)
class Decision:
    """What the rules decided. ``events`` are already applied; the engine writes them."""

    events: list[Event]
    ready: list[Unit]
    wake_at: float | None


def advance(state: RunState, now: float) -> Decision:
    """Skip what cannot run, gather finished fan-outs, end the run, and list ready units."""
    events: list[Event] = []

    def emit(ev: Event) -> None:
        apply(state, ev)
        events.append(ev)

    if state.status == AWAITING:
        wake = _approval_deadlines(state, now, emit)
        if state.status == AWAITING:
            return Decision(events, [], wake)
    if state.status != RUNNING:
        return Decision(events, [], None)
    while True:
        _check_dirty(state, now, emit)
        ready: list[Unit] = []
        wake_at: float | None = None
        busy = False  # attempts running or retries due: the run is not only waiting for people
        awaiting: list[str] = []
        for sid in list(state.active):
            st = state.steps[sid]
            settled = True
            for u in st.units.values():
                if u.status == AWAITING:
                    settled = False
                    if u.deadline is not None and u.deadline <= now:
                        emit(_no_decision(u, now))
                    else:
                        awaiting.append(u.step)
                        if u.deadline is not None and (wake_at is None or u.deadline < wake_at):
                            wake_at = u.deadline
                elif u.status == PENDING:
                    ready.append(u)
                    settled = False
                elif u.status == WAITING:
                    settled = False
                    busy = True
                    assert u.retry_at is not None
                    if u.retry_at <= now:
                        ready.append(u)
                    elif wake_at is None or u.retry_at < wake_at:
                        wake_at = u.retry_at
                elif u.status == RUNNING:
                    settled = False
                    busy = True
            if settled and st.items is not None:
                _gather(state, st, now, emit)  # makes its dependents dirty
        if not state.dirty:
            break

    if awaiting and not ready and not busy:
        emit(RunWaiting(at=now, steps=awaiting))
        return Decision(events, [], wake_at)
    if ready:
        over = over_budget(state, now)
        if over:
            emit(RunPaused(at=now, reason=f"budget reached: {over}"))
            return Decision(events, [], None)
        limit = state.budget.get("steps")
        if limit is not None:
            ready = ready[: max(0, int(limit) - state.attempts)]
    if state.done_steps == len(state.steps):
        _end(state, now, emit)
    return Decision(events, ready, wake_at)


def _end(state: RunState, now: float, emit: Emit) -> None:
    """Every step is done: the run succeeds, or fails, or (with revisions left) asks for a revised plan."""
    failed = [s.id for s in state.steps.values() if s.status == FAILED]
    if not failed:
        emit(RunSucceeded(at=now, output=run_output(state)))
        return
    skipped = sum(1 for s in state.steps.values() if s.status == SKIPPED)
    reason = f"{len(failed)} step(s) failed ({', '.join(failed)})"
    if skipped:
        reason += f", {skipped} skipped"
    refused = [s for s in failed if (state.steps[s].error or {}).get("type") == "ApprovalRejected"]
    if refused:  # a person said no: that is not a failure to plan around
        reason += f"; {', '.join(refused)} rejected by a person, so the plan is not revised"
        emit(RunFailed(at=now, reason=reason, failed_steps=failed))
        return
    if state.replans < state.max_replans:
        emit(ReplanRequested(at=now, reason=reason, failed_steps=failed))
        return
    if state.max_replans:
        reason += f"; no revision left: the plan was revised {state.replans} time(s), the most this run allows"
    emit(RunFailed(at=now, reason=reason, failed_steps=failed))


def next_deadline(state: RunState) -> float | None:
    """When the earliest approval the run waits for runs out, if any has a deadline."""
    deadlines = [u.deadline for st in state.steps.values() for u in st.units.values()
                 if u.status == AWAITING and u.deadline is not None]
    return min(deadlines) if deadlines else None


def _no_decision(u: Unit, now: float) -> StepFailed:
    waited = now - (u.started_at or now)
    return StepFailed(at=now, step=u.step, item=u.item, attempt=u.attempt,
                      error=permanent(f"no decision within the approval's timeout ({waited:.0f}s)"))


def _approval_deadlines(state: RunState, now: float, emit: Emit) -> float | None:
    """Fail approvals whose deadline passed; return the next deadline."""
    wake: float | None = None
    for st in state.steps.values():
        for u in st.units.values():
            if u.status == AWAITING and u.deadline is not None:
                if u.deadline <= now:
                    emit(_no_decision(u, now))
                elif wake is None or u.deadline < wake:
                    wake = u.deadline
    return wake


def _check_dirty(state: RunState, now: float, emit: Emit) -> None:
    """Skip the dirty steps that can no longer run; activate those whose needs are met."""
    while state.dirty:
        sid = next(iter(state.dirty))
        del state.dirty[sid]
        st = state.steps[sid]
        if st.status in STEP_DONE or sid in state.active:
            continue
        step = state.plan.by_id[sid]
        blocked = [d for d in step.deps if state.steps[d].status in (FAILED, SKIPPED)]
        if blocked:
            d = blocked[0]
            emit(StepSkipped(at=now, step=sid, reason=f"{d} {state.steps[d].status}"))
        elif all(state.steps[d].status == SUCCEEDED for d in step.deps):
            _activate(state, step, now, emit)


def _activate(state: RunState, step: Step, now: float, emit: Emit) -> None:
    st = state.steps[step.id]
    state.active[step.id] = None
    if step.for_each_ref is None:
        unit_of(state, step.id, None)
        return
    if st.items is None:
        try:
            items = step.for_each_ref.resolve(lambda root: lookup(state, root, None))
        except ResolveError as exc:
            emit(StepFailed(at=now, step=step.id, error=permanent(f"for_each: {exc}")))
            return
        if not isinstance(items, list):
            kind = type(items).__name__
            article = "an" if kind[:1] in "aeiou" else "a"
            message = f"for_each: {step.for_each} is {article} {kind}, not a list"
            emit(StepFailed(at=now, step=step.id, error=permanent(message)))
            return
        st.items = items
        for i in range(len(items)):
            unit_of(state, step.id, i)


def _gather(state: RunState, st: StepState, now: float, emit: Emit) -> None:
    units = [st.units[i] for i in range(len(st.items or ()))]
    failed = [u for u in units if u.status == FAILED]
    if not failed:
        emit(StepSucceeded(at=now, step=st.id, output=[u.output for u in units]))
        return
    first = failed[0].error or {}
    message = f"{len(failed)} of {len(units)} items failed; item {failed[0].item}: {first.get('message', '')}"
    emit(StepFailed(at=now, step=st.id, error={**first, "message": message, "retryable": False}))


def run_output(state: RunState) -> Any:
    """The run's output: its plan's ``output`` template, else the output of its one last step, or of each."""
    tmpl = state.plan.output_template
    if tmpl is not None:
        try:
            return render(tmpl, lambda root: lookup(state, root, None))
        except ResolveError as exc:
            return {"error": f"output: {exc}"}
    sinks = state.plan.sinks()
    if len(sinks) == 1:
        return state.outputs.get(sinks[0])
    return {s: state.outputs.get(s) for s in sinks}
