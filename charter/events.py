"""Events: immutable facts appended to a run's log, named in the past tense.

The log is the truth: run and step state are derived from it by
:mod:`charter.rules`. Each event serialises to a type name and a JSON object.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events. ``at`` is the clock's time when the event was decided."""

    at: float

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_data(self) -> dict[str, Any]:
        """The event's fields but ``at``, as stored in the log."""
        return {n: getattr(self, n) for n in _data_fields(type(self))}

    @staticmethod
    def from_data(type_name: str, at: float, data: dict[str, Any]) -> Event:
        cls = EVENT_TYPES.get(type_name)
        if cls is None:
            return UnknownEvent(at=at, name=type_name, data=data)
        known = _data_fields(cls)
        return cls(at=at, **{k: v for k, v in data.items() if k in known})


_FIELDS: dict[type[Event], tuple[str, ...]] = {}


def _data_fields(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls) if f.name != "at")
    return names


@dataclass(frozen=True, slots=True)
class UnknownEvent(Event):
    """An event written by a newer Charter: kept and shown, never interpreted."""

    name: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunCreated(Event):
    plan: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    tool_sources: list[str] = field(default_factory=list)
    parent_run: str | None = None
    from_step: str | None = None
    request: str | None = None  # the words a plan was made from, if a planner made it
    budget: dict[str, float] = field(default_factory=dict)  # tokens, cost, seconds, steps
    max_replans: int = 0  # revised plans the planner may propose when a step fails for good
    # the run's place in a distributed trace, for whoever traces it (any process): ``traceparent``
    # (W3C) names the run's root span; ``parent``, the caller's span it belongs under, if any.
    # Empty in logs written before it was kept: a tracer derives stable ids from the run's id.
    trace: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlanApproved(Event):
    by: str = ""
    note: str = ""  # what the approver said, if anything


@dataclass(frozen=True, slots=True)
class PlanRejected(Event):
    by: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PlanRevised(Event):
    """A new version of the plan: edited in review, or a replan of what is left. Finished steps stay."""

    version: int = 2
    plan: dict[str, Any] = field(default_factory=dict)
    by: str = ""
    reason: str = ""
    diff: str = ""  # from the previous version, for people
    needs_review: bool = False  # it adds write steps: it waits for approval


@dataclass(frozen=True, slots=True)
class ReplanRequested(Event):
    """Steps failed for good: the planner is asked for a revised plan of the rest."""

    reason: str = ""
    failed_steps: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StepStarted(Event):
    step: str = ""
    item: int | None = None
    attempt: int = 1
    key: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    worker: str = ""  # who runs the attempt: a fleet worker's id, or the engine's ``host:pid:token``


@dataclass(frozen=True, slots=True)
class StepSucceeded(Event):
    """A step (or one item of a ``for_each`` step, when ``item`` is set) finished."""

    step: str = ""
    item: int | None = None
    attempt: int = 0
    output: Any = None
    reused_from: str | None = None


@dataclass(frozen=True, slots=True)
class StepFailed(Event):
    """An attempt failed. With ``retry_at`` set a retry is due then; without, it is final."""

    step: str = ""
    item: int | None = None
    attempt: int = 0
    error: dict[str, Any] = field(default_factory=dict)
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class ModelCalled(Event):
    """A model answered, inside an attempt. A resumed attempt reuses the answer instead of paying again."""

    step: str = ""
    item: int | None = None
    attempt: int = 0
    index: int = 0  # the n-th model call of the attempt
    digest: str = ""  # of the model and the request: a changed request is not answered from the log
    model: str = ""
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None  # None: the model has no known price
    latency: float | None = None  # seconds the call took (None in logs written before it was kept)


@dataclass(frozen=True, slots=True)
class ToolCalled(Event):
    """An agent step called a tool. A resumed attempt reuses the result instead of calling again."""

    step: str = ""
    item: int | None = None
    attempt: int = 0
    index: int = 0  # the n-th tool call of the attempt
    digest: str = ""  # of the tool and its arguments
    tool: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EffectRecorded(Event):
    """A ``write`` tool changed the world: the effect ledger's entry, committed as soon as the tool returned.

    An attempt that comes with the same ``key`` (after a crash, or a retry)
    finds it and reuses ``result`` instead of acting again.
    """

    step: str = ""
    item: int | None = None
    attempt: int = 0
    key: str = ""
    tool: str = ""
    target: list[Any] = field(default_factory=list)
    result: Any = None


@dataclass(frozen=True, slots=True)
class ApprovalRequested(Event):
    """An approval step waits for a person (``charter approve RUN STEP`` / ``charter reject``)."""

    step: str = ""
    item: int | None = None
    attempt: int = 1
    message: str = ""
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class RunWaiting(Event):
    """Nothing can go on until a person decides: the run waits, with no process needed."""

    steps: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StepInterrupted(Event):
    """An attempt was cut short (pause, Ctrl-C, a dead process). It runs again, same key."""

    step: str = ""
    item: int | None = None
    attempt: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StepSkipped(Event):
    step: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StepsReset(Event):
    """Failed and skipped steps made pending again (``charter retry``), with a fresh retry budget."""

    steps: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RunPaused(Event):
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BudgetChanged(Event):
    """New limits for the run (say, raised to resume a run that reached its budget)."""

    budget: dict[str, float] = field(default_factory=dict)
    by: str = ""


@dataclass(frozen=True, slots=True)
class RunResumed(Event):
    by: str = ""


@dataclass(frozen=True, slots=True)
class RunCancelled(Event):
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RunSucceeded(Event):
    output: Any = None


@dataclass(frozen=True, slots=True)
class RunFailed(Event):
    reason: str = ""
    failed_steps: list[str] = field(default_factory=list)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        RunCreated, PlanApproved, PlanRejected, PlanRevised, StepStarted, StepSucceeded, StepFailed,
        StepInterrupted, ModelCalled, StepSkipped, StepsReset, RunPaused, RunResumed, RunCancelled, BudgetChanged,
        RunSucceeded, RunFailed, ApprovalRequested, RunWaiting, ToolCalled, ReplanRequested, EffectRecorded,
    )
}
