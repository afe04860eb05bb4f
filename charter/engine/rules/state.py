"""The state of a run as the rules see it: statuses, units, steps and the run.

:class:`RunState` is built from a ``RunCreated`` event and changed only by
:func:`~charter.engine.rules.apply`. This module also holds the small readers the
other rule modules share (a unit's place in the state, a reference's value, an
error that no retry can help). It imports the plan, events and errors, nothing
of the engine around the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import ErrorInfo
from ...events import ModelCalled, RunCreated, ToolCalled
from ...plan.model import Plan, Step
from ...retry import DEFAULT_RETRY, RetryPolicy

# unit and step statuses
PENDING = "pending"
RUNNING = "running"
WAITING = "waiting"  # a retry is scheduled
AWAITING = "awaiting"  # an approval step waits for a person; a run whose only work left is that
REPLANNING = "replanning"  # steps failed for good; the planner is revising the rest
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
STEP_DONE = frozenset({SUCCEEDED, FAILED, SKIPPED})

# run statuses
CREATED = "created"
PAUSED = "paused"
CANCELLED = "cancelled"
REJECTED = "rejected"
RUN_DONE = frozenset({SUCCEEDED, FAILED, CANCELLED, REJECTED})


Call = tuple[str, str, Mapping[str, Any]]  # a step's kind, its tool, and the arguments of one unit


def call_of(step: Step, args: Mapping[str, Any]) -> Call:
    """What a unit of ``step`` does with ``args``, as far as an effect is concerned."""
    return (step.kind, step.tool or "", args)


@dataclass(slots=True)
class Unit:
    """One executable piece: a step, or one item of a ``for_each`` step."""

    step: str
    item: int | None
    status: str = PENDING
    attempt: int = 0  # number of the latest attempt started
    failures: int = 0  # failed attempts since the last reset: the retry budget
    retry_at: float | None = None
    args: dict[str, Any] | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    calls: list[ModelCalled | ToolCalled] = field(default_factory=list)  # what a new attempt may reuse
    deadline: float | None = None  # an approval's: no decision by then fails the step
    key: str | None = None  # the idempotency key of its attempts, from the first one's StepStarted


@dataclass(slots=True)
class StepState:
    id: str
    status: str = PENDING
    units: dict[int | None, Unit] = field(default_factory=dict)
    items: list[Any] | None = None  # for_each values, once known
    output: Any = None
    error: dict[str, Any] | None = None
    reason: str = ""  # why it was skipped
    reused_from: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    keys: set[str] = field(default_factory=set)  # the idempotency keys its units have under this plan version


@dataclass(slots=True)
class RunState:
    """Everything the rules know about one run, derived from its events."""

    run_id: str
    plan: Plan
    inputs: dict[str, Any]
    tool_sources: list[str]
    created_at: float
    status: str = CREATED
    steps: dict[str, StepState] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    policies: Mapping[str, RetryPolicy] = field(default_factory=dict)
    parent_run: str | None = None
    from_step: str | None = None
    request: str | None = None
    plan_version: int = 1
    output: Any = None
    reason: str = ""
    updated_at: float = 0.0
    finished_at: float | None = None
    last_seq: int = 0
    done_steps: int = 0
    tokens: int = 0  # model tokens used, input and output
    cost: float = 0.0  # dollars, where the price is known
    attempts: int = 0  # attempts started and not interrupted (what the "steps" budget counts)
    budget: dict[str, float] = field(default_factory=dict)
    approved_at: float | None = None
    approved_by: str | None = None
    effects: dict[str, Any] = field(default_factory=dict)  # the effect ledger: idempotency key -> result
    # the keys a step's units used under earlier versions of the plan, with the call each stood for
    earlier_calls: dict[str, dict[str, Call]] = field(default_factory=dict)
    max_replans: int = 0
    replans: int = 0
    trace: dict[str, str] = field(default_factory=dict)  # RunCreated's: the run's trace context
    reopenings: int = 0  # times the run ended and an event (a retry's StepsReset, ...) made it live again
    reopened_at: float | None = None  # when it was last reopened
    dirty: dict[str, None] = field(default_factory=dict)  # steps to re-check, in order
    active: dict[str, None] = field(default_factory=dict)  # steps whose needs are met

    @classmethod
    def from_created(cls, run_id: str, ev: RunCreated, plan: Plan | None = None) -> RunState:
        """The state right after ``ev``. ``plan`` is the compiled ``ev.plan``, if the caller has it."""
        if plan is None:
            plan = Plan.from_dict(ev.plan)
        state = cls(
            run_id=run_id,
            plan=plan,
            inputs=dict(ev.inputs),
            tool_sources=list(ev.tool_sources),
            created_at=ev.at,
            parent_run=ev.parent_run,
            from_step=ev.from_step,
            request=ev.request,
            updated_at=ev.at,
            budget=dict(ev.budget),
            max_replans=ev.max_replans,
            trace=dict(ev.trace),
        )
        for s in plan.steps:
            state.steps[s.id] = StepState(s.id)
            state.dirty[s.id] = None
        return state

    def policy(self, step_id: str) -> RetryPolicy:
        return self.policies.get(step_id, DEFAULT_RETRY)

    def key(self, unit: Unit) -> str:
        """The unit's place, ``RUN/STEP[/ITEM]``: the idempotency key of its first call.

        See :func:`~charter.engine.rules.effect_key` for the keys of calls under a revised plan.
        """
        base = f"{self.run_id}/{unit.step}"
        return base if unit.item is None else f"{base}/{unit.item}"

    @property
    def finished(self) -> bool:
        return self.status in RUN_DONE

    def remaining_steps(self) -> list[Step]:
        """The steps of the plan not done yet (neither succeeded, failed nor skipped), in plan order."""
        return [s for s in self.plan.steps if self.steps[s.id].status not in STEP_DONE]

    def running_units(self) -> list[Unit]:
        return [u for s in self.steps.values() for u in s.units.values() if u.status == RUNNING]


def shown_status(st: StepState) -> str:
    """A step's status for people: a plain step in flight shows its unit's (``waiting``: a retry is due)."""
    unit = st.units.get(None)
    if st.status in STEP_DONE or unit is None:
        return st.status
    return unit.status


def unit_of(state: RunState, step: str, item: int | None) -> Unit:
    """The unit of ``step`` (and ``item``), made pending if it is not there yet."""
    units = state.steps[step].units
    u = units.get(item)
    if u is None:
        u = units[item] = Unit(step, item)
    return u


def lookup(state: RunState, root: str, unit: Unit | None) -> Any:
    """The value a reference's root stands for: the inputs, the unit's ``for_each`` item, or a step's output."""
    if root == "inputs":
        return state.inputs
    if root == "item":
        assert unit is not None and unit.item is not None
        items = state.steps[unit.step].items
        assert items is not None
        return items[unit.item]
    return state.outputs[root]


def permanent(message: str) -> dict[str, Any]:
    """A logged error that no retry can help."""
    return ErrorInfo("PermanentError", message, retryable=False).to_json()
