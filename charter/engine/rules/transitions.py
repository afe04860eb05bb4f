"""Applying events: one small handler per kind of event, and replaying a whole log.

Every event goes through :func:`apply` exactly once, whoever decided it (the
rules, the engine, a person). Each kind of event in :mod:`charter.events` has a
handler registered with :func:`_on`, or is listed in :data:`NO_STATE_CHANGE`;
a test checks that none is forgotten. Imports the state and the plan only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ...events import (
    ApprovalRequested,
    BudgetChanged,
    EffectRecorded,
    Event,
    ModelCalled,
    PlanApproved,
    PlanRejected,
    PlanRevised,
    ReplanRequested,
    RunCancelled,
    RunCreated,
    RunFailed,
    RunPaused,
    RunResumed,
    RunSucceeded,
    RunWaiting,
    StepFailed,
    StepInterrupted,
    StepSkipped,
    StepsReset,
    StepStarted,
    StepSucceeded,
    ToolCalled,
    UnknownEvent,
)
from ...plan.model import Plan
from .state import (
    AWAITING,
    CANCELLED,
    CREATED,
    FAILED,
    PAUSED,
    PENDING,
    REJECTED,
    REPLANNING,
    RUN_DONE,
    RUNNING,
    SKIPPED,
    STEP_DONE,
    SUCCEEDED,
    WAITING,
    RunState,
    StepState,
    Unit,
    call_of,
    unit_of,
)

Handler = Callable[[RunState, Any], None]

#: the handler of each kind of event (exactly its class: events are not subclassed)
HANDLERS: dict[type[Event], Handler] = {}

#: kinds of event that change nothing but the run's ``updated_at``: ``RunCreated`` makes the
#: state (:meth:`RunState.from_created`), and an event written by a newer Charter is kept, never read
NO_STATE_CHANGE: frozenset[type[Event]] = frozenset({RunCreated, UnknownEvent})

_H = TypeVar("_H", bound=Callable[..., None])


def _on(kind: type[Event]) -> Callable[[_H], _H]:
    """Register the decorated function as the handler of ``kind``."""

    def register(handler: _H) -> _H:
        assert kind not in HANDLERS, f"two handlers for {kind.__name__}"
        HANDLERS[kind] = handler
        return handler

    return register


def apply(state: RunState, ev: Event) -> None:
    """Fold one event into the state."""
    state.updated_at = ev.at
    handler = HANDLERS.get(type(ev))
    if handler is not None:
        ended = state.status in RUN_DONE
        handler(state, ev)
        if ended and state.status not in RUN_DONE:  # counted here, whichever event reopens a run
            state.reopenings += 1
            state.reopened_at = ev.at
    elif type(ev) not in NO_STATE_CHANGE:
        raise TypeError(f"no rule applies a {type(ev).__name__} event")


def replay(run_id: str, events: list[Event]) -> RunState:
    """A run's state from its whole log (the first event must be ``RunCreated``)."""
    first = events[0]
    if not isinstance(first, RunCreated):
        raise ValueError(f"run {run_id}: log does not start with RunCreated")
    state = RunState.from_created(run_id, first)
    for ev in events[1:]:
        apply(state, ev)
    state.last_seq = len(events)
    return state


# --- steps and their units ----------------------------------------------------------


@_on(StepStarted)
def _step_started(state: RunState, ev: StepStarted) -> None:
    state.attempts += 1
    u = unit_of(state, ev.step, ev.item)
    u.status, u.attempt, u.args, u.key = RUNNING, ev.attempt, ev.args, ev.key
    u.retry_at = None
    u.started_at = ev.at
    st = state.steps[ev.step]
    st.keys.add(ev.key)
    _step_in_flight(st, ev.at)


@_on(ApprovalRequested)
def _approval_requested(state: RunState, ev: ApprovalRequested) -> None:
    u = unit_of(state, ev.step, ev.item)
    u.status, u.attempt, u.args = AWAITING, ev.attempt, {"message": ev.message}
    u.started_at, u.deadline = ev.at, ev.deadline
    _step_in_flight(state.steps[ev.step], ev.at)


@_on(ModelCalled)
def _model_called(state: RunState, ev: ModelCalled) -> None:
    if ev.step in state.steps:  # else the planner's call, made for the whole run
        unit_of(state, ev.step, ev.item).calls.append(ev)
    state.tokens += ev.input_tokens + ev.output_tokens
    state.cost += ev.cost or 0.0


@_on(ToolCalled)
def _tool_called(state: RunState, ev: ToolCalled) -> None:
    unit_of(state, ev.step, ev.item).calls.append(ev)


@_on(EffectRecorded)
def _effect_recorded(state: RunState, ev: EffectRecorded) -> None:
    state.effects[ev.key] = ev.result


@_on(StepSucceeded)
def _step_succeeded(state: RunState, ev: StepSucceeded) -> None:
    _wake_if_awaiting(state)
    st = state.steps[ev.step]
    u = unit_of(state, ev.step, ev.item) if ev.item is not None else st.units.get(None)
    if u is not None:
        u.status, u.output, u.finished_at, u.error = SUCCEEDED, ev.output, ev.at, None
        u.calls.clear()
    if ev.item is not None:
        return  # one item of a fan-out: the step succeeds when advance gathers them all
    st.output, st.error, st.reused_from = ev.output, None, ev.reused_from
    state.outputs[ev.step] = ev.output
    _finish_step(state, st, SUCCEEDED, ev.at)


@_on(StepFailed)
def _step_failed(state: RunState, ev: StepFailed) -> None:
    _wake_if_awaiting(state)
    is_aggregate = ev.item is None and state.plan.by_id[ev.step].for_each is not None
    if not is_aggregate and not _unit_failed(unit_of(state, ev.step, ev.item), ev):
        return  # a retry is due, or one item failed: the step goes on
    st = state.steps[ev.step]
    st.error = ev.error
    _finish_step(state, st, FAILED, ev.at)


def _unit_failed(u: Unit, ev: StepFailed) -> bool:
    """Fold a failed attempt into its unit; True if that fails a plain step for good."""
    if ev.attempt > 0:
        u.failures += 1
        u.calls.clear()  # a failed attempt's answers are spent: the next try asks afresh
    u.error = ev.error
    u.finished_at = ev.at
    if ev.retry_at is not None:
        u.status, u.retry_at = WAITING, ev.retry_at
        return False
    u.status = FAILED
    return ev.item is None


@_on(StepInterrupted)
def _step_interrupted(state: RunState, ev: StepInterrupted) -> None:
    unit_of(state, ev.step, ev.item).status = PENDING
    # cut short by a crash, a pause or a cancel: like the retry budget, the steps budget does not count it
    state.attempts -= 1


@_on(StepSkipped)
def _step_skipped(state: RunState, ev: StepSkipped) -> None:
    st = state.steps[ev.step]
    st.reason = ev.reason
    _finish_step(state, st, SKIPPED, ev.at)


@_on(StepsReset)
def _steps_reset(state: RunState, ev: StepsReset) -> None:
    for sid in ev.steps:
        st = state.steps[sid]
        if st.status in STEP_DONE:
            state.done_steps -= 1
        st.status, st.error, st.reason, st.finished_at = PENDING, None, "", None
        for u in st.units.values():
            if u.status != SUCCEEDED:
                u.status, u.failures, u.retry_at = PENDING, 0, None
        state.dirty[sid] = None
    state.status, state.finished_at, state.reason = RUNNING, None, ""


def _step_in_flight(st: StepState, at: float) -> None:
    if st.status == PENDING:
        st.status, st.started_at = RUNNING, at


def _finish_step(state: RunState, st: StepState, status: str, at: float) -> None:
    if st.status not in STEP_DONE:
        state.done_steps += 1
    st.status = status
    st.finished_at = at
    state.active.pop(st.id, None)
    for d in state.plan.dependents.get(st.id, ()):
        state.dirty[d] = None


def _wake_if_awaiting(state: RunState) -> None:
    if state.status == AWAITING:
        state.status = RUNNING


# --- the plan -----------------------------------------------------------------------


@_on(PlanApproved)
def _plan_approved(state: RunState, ev: PlanApproved) -> None:
    state.approved_at, state.approved_by = ev.at, ev.by
    state.status, state.reason = RUNNING, ""


@_on(PlanRejected)
def _plan_rejected(state: RunState, ev: PlanRejected) -> None:
    state.status, state.reason, state.finished_at = REJECTED, ev.reason, ev.at


@_on(ReplanRequested)
def _replan_requested(state: RunState, ev: ReplanRequested) -> None:
    state.status = REPLANNING
    state.replans += 1
    state.reason = ev.reason


@_on(PlanRevised)
def _plan_revised(state: RunState, ev: PlanRevised) -> None:
    _revise(state, Plan.from_dict(ev.plan), ev.version)
    if state.status == REPLANNING:
        state.status = CREATED if ev.needs_review else RUNNING
        state.reason = "the revised plan adds write steps: it needs review" if ev.needs_review else ""


def _revise(state: RunState, plan: Plan, version: int) -> None:
    """Adopt a new version of the plan. Steps that succeeded and are still in it keep their results."""
    old = state.steps
    for sid, st in old.items():  # what each unit did under the old version, for the keys of the new one
        step = state.plan.by_id[sid]
        calls = state.earlier_calls.setdefault(sid, {})
        for u in st.units.values():
            if u.key is not None and u.args is not None:
                calls.setdefault(u.key, call_of(step, u.args))
    state.plan = plan
    state.plan_version = version
    state.steps = {}
    state.dirty.clear()
    state.active.clear()
    state.done_steps = 0
    for s in plan.steps:
        kept = old.get(s.id)
        if kept is not None and kept.status == SUCCEEDED:
            state.steps[s.id] = kept
            state.done_steps += 1
        else:
            state.steps[s.id] = StepState(s.id)
            state.dirty[s.id] = None
            state.outputs.pop(s.id, None)


# --- the run ------------------------------------------------------------------------


@_on(RunWaiting)
def _run_waiting(state: RunState, ev: RunWaiting) -> None:
    state.status = AWAITING


@_on(BudgetChanged)
def _budget_changed(state: RunState, ev: BudgetChanged) -> None:
    state.budget = dict(ev.budget)


@_on(RunPaused)
def _run_paused(state: RunState, ev: RunPaused) -> None:
    state.status, state.reason = PAUSED, ev.reason


@_on(RunResumed)
def _run_resumed(state: RunState, ev: RunResumed) -> None:
    state.status, state.reason = RUNNING, ""


@_on(RunCancelled)
def _run_cancelled(state: RunState, ev: RunCancelled) -> None:
    state.status, state.reason, state.finished_at = CANCELLED, ev.reason, ev.at


@_on(RunSucceeded)
def _run_succeeded(state: RunState, ev: RunSucceeded) -> None:
    state.status, state.output, state.finished_at = SUCCEEDED, ev.output, ev.at


@_on(RunFailed)
def _run_failed(state: RunState, ev: RunFailed) -> None:
    state.status, state.reason, state.finished_at = FAILED, ev.reason, ev.at
