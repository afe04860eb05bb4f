"""Control requests: what a person (or a policy) asks of a run, by kind, and what each does.

A request is routed one way whatever its kind (see ``Engine.control``): to the
live process that runs the run, through the store, or else applied by whoever
takes the run. :func:`events_for` decides, from the run's state alone, the
events a request leads to, or why it cannot apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import RunStateError
from ..events import (
    BudgetChanged,
    Event,
    PlanApproved,
    PlanRejected,
    PlanRevised,
    RunCancelled,
    RunPaused,
    RunResumed,
    StepsReset,
)
from ..store.records import RequestRow, RunRow
from . import rules


@dataclass(frozen=True)
class Pause:
    """Stop starting steps; attempts in flight are interrupted and run again on resume."""

    reason: str = ""
    by: str = "user"


@dataclass(frozen=True)
class Cancel:
    """End the run for good (its log is kept)."""

    reason: str = ""
    by: str = "user"


@dataclass(frozen=True)
class Resume:
    """Go on with a paused run; ``budget`` replaces limits given before."""

    by: str = "user"
    budget: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ApprovePlan:
    by: str = "user"
    note: str = ""


@dataclass(frozen=True)
class RejectPlan:
    reason: str = "rejected"
    by: str = "user"


@dataclass(frozen=True)
class RevisePlan:
    """Replace the plan of a run in review (an edit); ``plan`` is its JSON data, checked already."""

    plan: dict[str, Any]
    by: str = "user"
    reason: str = ""


@dataclass(frozen=True)
class ApproveStep:
    step: str
    by: str = "user"
    note: str = ""


@dataclass(frozen=True)
class RejectStep:
    step: str
    by: str = "user"
    reason: str = ""


@dataclass(frozen=True)
class RetryStep:
    """Make a failed step, and the steps it blocked, pending again with a fresh retry budget."""

    step: str
    by: str = "user"


Request = Pause | Cancel | Resume | ApprovePlan | RejectPlan | RevisePlan | ApproveStep | RejectStep | RetryStep

_KINDS: dict[type[Any], str] = {
    Pause: "pause", Cancel: "cancel", Resume: "resume", ApprovePlan: "approve_plan", RejectPlan: "reject_plan",
    RevisePlan: "revise_plan", ApproveStep: "approve_step", RejectStep: "reject_step", RetryStep: "retry_step",
}


def to_row(run_id: str, request: Request, now: float) -> RequestRow:
    """The request as a store keeps it."""
    kind = _KINDS[type(request)]
    step = getattr(request, "step", None)
    reason = str(getattr(request, "reason", None) or getattr(request, "note", ""))
    data: dict[str, Any] = {}
    if isinstance(request, RevisePlan):
        data["plan"] = request.plan
    elif isinstance(request, Resume) and request.budget:
        data["budget"] = request.budget
    return RequestRow(run_id=run_id, kind=kind, created_at=now, step=step, by=request.by, reason=reason, data=data)


def from_row(row: RequestRow) -> Request | None:
    """The request a stored row stands for (``None``: a kind this Charter does not know)."""
    by = row.by or "user"
    match row.kind:
        case "pause":
            return Pause(row.reason, by)
        case "cancel":
            return Cancel(row.reason, by)
        case "resume":
            return Resume(by, dict(row.data.get("budget") or {}))
        case "approve_plan":
            return ApprovePlan(by, row.reason)
        case "reject_plan":
            return RejectPlan(row.reason or "rejected", by)
        case "revise_plan":
            return RevisePlan(dict(row.data.get("plan") or {}), by, row.reason)
        case "approve_step":
            return ApproveStep(row.step or "", by, row.reason)
        case "reject_step":
            return RejectStep(row.step or "", by, row.reason)
        case "retry_step":
            return RetryStep(row.step or "", by)
    return None


def takes_over(request: Request) -> bool:
    """Whether ``request`` means "go on with the run here": it is not passed on to a live
    process that runs it (that one goes on already), and is refused instead."""
    return isinstance(request, Resume | RetryStep)


def needs_tools(request: Request) -> bool:
    """Whether whoever applies ``request`` must load the run's tools (it will go on running)."""
    return not isinstance(request, Pause | Cancel | RejectPlan)


def check_row(row: RunRow, request: Request) -> None:
    """Refuse, from the run's row alone, what cannot apply (before asking another process)."""
    if isinstance(request, Pause | Cancel):
        if row.status in rules.RUN_DONE:
            raise RunStateError(f"run {row.id} has already ended ({row.status})")
        if isinstance(request, Pause) and row.status == rules.PAUSED:
            raise RunStateError(f"run {row.id} is already paused")


def events_for(state: rules.RunState, request: Request, now: float) -> list[Event]:
    """The events ``request`` leads to in a run in ``state``; :class:`RunStateError` if it cannot apply."""
    run_id = state.run_id
    if isinstance(request, Pause | Cancel):
        if state.finished:
            raise RunStateError(f"run {run_id} has already ended ({state.status})")
        if isinstance(request, Pause):
            if state.status == rules.PAUSED:
                raise RunStateError(f"run {run_id} is already paused")
            return [RunPaused(at=now, reason=request.reason or "pause requested")]
        return [RunCancelled(at=now, reason=request.reason or "cancel requested")]
    if isinstance(request, Resume):
        events: list[Event] = []
        if state.finished:
            return events
        if request.budget:
            limits = {**state.budget, **rules.check_budget(request.budget)}
            events.append(BudgetChanged(at=now, budget=limits, by=request.by))
        if state.status == rules.PAUSED:
            events.append(RunResumed(at=now, by=request.by))
        return events
    if isinstance(request, ApprovePlan | RejectPlan | RevisePlan):
        if state.status != rules.CREATED:
            raise RunStateError(f"run {run_id} is {state.status}, not waiting for its plan to be reviewed")
        if isinstance(request, ApprovePlan):
            return [PlanApproved(at=now, by=request.by, note=request.note)]
        if isinstance(request, RejectPlan):
            return [PlanRejected(at=now, by=request.by, reason=request.reason)]
        return [PlanRevised(at=now, version=state.plan_version + 1, plan=request.plan, by=request.by,
                            reason=request.reason)]
    if isinstance(request, ApproveStep | RejectStep):
        approve = isinstance(request, ApproveStep)
        note = request.note if isinstance(request, ApproveStep) else request.reason
        try:
            return [rules.decision(state, request.step, approve, request.by, note, now)]
        except (KeyError, ValueError) as exc:
            raise RunStateError(str(exc.args[0])) from None
    return _retry(state, request, now)


def _retry(state: rules.RunState, request: RetryStep, now: float) -> list[Event]:
    run_id, step_id = state.run_id, request.step
    if step_id not in state.steps:
        raise RunStateError(f"run {run_id} has no step {step_id!r}")
    if state.status in (rules.CANCELLED, rules.REJECTED):
        raise RunStateError(f"run {run_id} was {state.status}: it does not run again (use `charter rerun`)")
    status = state.steps[step_id].status
    if status != rules.FAILED:
        raise RunStateError(f"step {step_id} is {status}; only a failed step can be retried")
    events: list[Event] = []
    if state.status == rules.PAUSED:
        events.append(RunResumed(at=now, by="retry"))
    events.append(StepsReset(at=now, steps=rules.reset_targets(state, step_id), reason=f"retry of {step_id} requested"))
    return events


def stops(request: Request) -> bool:
    """Whether the run stops here (its attempts in flight are interrupted)."""
    return isinstance(request, Pause | Cancel)
