"""The rules of a run: a pure state machine over its plan and events.

Given a run's state (built by applying its events in order) and the time, the
rules decide what happens next: which steps are ready, when a retry is due,
which dependents are skipped, when the run is done. There is no I/O and no
clock here; the engine supplies ``now``, does the work, and writes the events
these functions return. Every event goes through :func:`apply` exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ErrorInfo, PermanentError, RetryableError
from ..events import (
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
)
from ..plan.model import Plan, Step
from ..plan.refs import ResolveError, render
from ..retry import DEFAULT_RETRY, RetryPolicy

if TYPE_CHECKING:
    from ..tools import Registry

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


def _call(step: Step, args: Mapping[str, Any]) -> Call:
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
        )
        for s in plan.steps:
            state.steps[s.id] = StepState(s.id)
            state.dirty[s.id] = None
        return state

    def policy(self, step_id: str) -> RetryPolicy:
        return self.policies.get(step_id, DEFAULT_RETRY)

    def key(self, unit: Unit) -> str:
        """The unit's place, ``RUN/STEP[/ITEM]``: the idempotency key of its first call (see :func:`effect_key`)."""
        base = f"{self.run_id}/{unit.step}"
        return base if unit.item is None else f"{base}/{unit.item}"

    @property
    def finished(self) -> bool:
        return self.status in RUN_DONE

    def running_units(self) -> list[Unit]:
        return [u for s in self.steps.values() for u in s.units.values() if u.status == RUNNING]


def shown_status(st: StepState) -> str:
    """A step's status for people: a plain step in flight shows its unit's (``waiting``: a retry is due)."""
    unit = st.units.get(None)
    if st.status in STEP_DONE or unit is None:
        return st.status
    return unit.status


# --- applying events ------------------------------------------------------------


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


def _unit(state: RunState, step: str, item: int | None) -> Unit:
    units = state.steps[step].units
    u = units.get(item)
    if u is None:
        u = units[item] = Unit(step, item)
    return u


def _finish_step(state: RunState, st: StepState, status: str, at: float) -> None:
    if st.status not in STEP_DONE:
        state.done_steps += 1
    st.status = status
    st.finished_at = at
    state.active.pop(st.id, None)
    for d in state.plan.dependents.get(st.id, ()):
        state.dirty[d] = None


def retry_policies(plan: Plan, registry: Registry) -> dict[str, RetryPolicy]:
    """Each step's retry policy: the step's own settings over its tool's policy, else the default."""
    out = {}
    for step in plan.steps:
        tool = registry.get(step.tool) if step.kind == "tool" else None
        base = tool.retry if tool is not None and tool.retry is not None else DEFAULT_RETRY
        out[step.id] = step.retry_policy(base)
    return out


def apply(state: RunState, ev: Event) -> None:
    """Fold one event into the state."""
    state.updated_at = ev.at
    if isinstance(ev, StepStarted):
        state.attempts += 1
        u = _unit(state, ev.step, ev.item)
        u.status = RUNNING
        u.attempt = ev.attempt
        u.args = ev.args
        u.key = ev.key
        u.retry_at = None
        u.started_at = ev.at
        st = state.steps[ev.step]
        st.keys.add(ev.key)
        if st.status == PENDING:
            st.status = RUNNING
            st.started_at = ev.at
    elif isinstance(ev, ApprovalRequested):
        u = _unit(state, ev.step, ev.item)
        u.status, u.attempt, u.args = AWAITING, ev.attempt, {"message": ev.message}
        u.started_at, u.deadline = ev.at, ev.deadline
        st = state.steps[ev.step]
        if st.status == PENDING:
            st.status, st.started_at = RUNNING, ev.at
    elif isinstance(ev, RunWaiting):
        state.status = AWAITING
    elif isinstance(ev, ModelCalled):
        if ev.step in state.steps:  # else the planner's call, made for the whole run
            _unit(state, ev.step, ev.item).calls.append(ev)
        state.tokens += ev.input_tokens + ev.output_tokens
        state.cost += ev.cost or 0.0
    elif isinstance(ev, ToolCalled):
        _unit(state, ev.step, ev.item).calls.append(ev)
    elif isinstance(ev, EffectRecorded):
        state.effects[ev.key] = ev.result
    elif isinstance(ev, StepSucceeded):
        _wake_if_awaiting(state)
        st = state.steps[ev.step]
        if ev.item is not None:
            u = _unit(state, ev.step, ev.item)
            u.status, u.output, u.finished_at, u.error = SUCCEEDED, ev.output, ev.at, None
            u.calls.clear()
            return
        u0 = st.units.get(None)
        if u0 is not None:
            u0.status, u0.output, u0.finished_at, u0.error = SUCCEEDED, ev.output, ev.at, None
            u0.calls.clear()
        st.output = ev.output
        st.error = None
        st.reused_from = ev.reused_from
        state.outputs[ev.step] = ev.output
        _finish_step(state, st, SUCCEEDED, ev.at)
    elif isinstance(ev, StepFailed):
        _wake_if_awaiting(state)
        st = state.steps[ev.step]
        is_aggregate = ev.item is None and state.plan.by_id[ev.step].for_each is not None
        if not is_aggregate:
            u = _unit(state, ev.step, ev.item)
            if ev.attempt > 0:
                u.failures += 1
                u.calls.clear()  # a failed attempt's answers are spent: the next try asks afresh
            u.error = ev.error
            u.finished_at = ev.at
            if ev.retry_at is not None:
                u.status, u.retry_at = WAITING, ev.retry_at
                return
            u.status = FAILED
            if ev.item is not None:
                return
        st.error = ev.error
        _finish_step(state, st, FAILED, ev.at)
    elif isinstance(ev, StepInterrupted):
        u = _unit(state, ev.step, ev.item)
        u.status = PENDING
        # cut short by a crash, a pause or a cancel: like the retry budget, the steps budget does not count it
        state.attempts -= 1
    elif isinstance(ev, StepSkipped):
        st = state.steps[ev.step]
        st.reason = ev.reason
        _finish_step(state, st, SKIPPED, ev.at)
    elif isinstance(ev, StepsReset):
        for sid in ev.steps:
            st = state.steps[sid]
            if st.status in STEP_DONE:
                state.done_steps -= 1
            st.status = PENDING
            st.error = None
            st.reason = ""
            st.finished_at = None
            for u in st.units.values():
                if u.status != SUCCEEDED:
                    u.status, u.failures, u.retry_at = PENDING, 0, None
            state.dirty[sid] = None
        state.status = RUNNING
        state.finished_at = None
        state.reason = ""
    elif isinstance(ev, PlanRevised):
        _revise(state, Plan.from_dict(ev.plan), ev.version)
        if state.status == REPLANNING:
            state.status = CREATED if ev.needs_review else RUNNING
            state.reason = "the revised plan adds write steps: it needs review" if ev.needs_review else ""
    elif isinstance(ev, ReplanRequested):
        state.status = REPLANNING
        state.replans += 1
        state.reason = ev.reason
    elif isinstance(ev, PlanRejected):
        state.status = REJECTED
        state.reason = ev.reason
        state.finished_at = ev.at
    elif isinstance(ev, BudgetChanged):
        state.budget = dict(ev.budget)
    elif isinstance(ev, PlanApproved | RunResumed):
        if isinstance(ev, PlanApproved):
            state.approved_at, state.approved_by = ev.at, ev.by
        state.status = RUNNING
        state.reason = ""
    elif isinstance(ev, RunPaused):
        state.status = PAUSED
        state.reason = ev.reason
    elif isinstance(ev, RunCancelled):
        state.status = CANCELLED
        state.reason = ev.reason
        state.finished_at = ev.at
    elif isinstance(ev, RunSucceeded):
        state.status = SUCCEEDED
        state.output = ev.output
        state.finished_at = ev.at
    elif isinstance(ev, RunFailed):
        state.status = FAILED
        state.reason = ev.reason
        state.finished_at = ev.at


def _wake_if_awaiting(state: RunState) -> None:
    if state.status == AWAITING:
        state.status = RUNNING


def _revise(state: RunState, plan: Plan, version: int) -> None:
    """Adopt a new version of the plan. Steps that succeeded and are still in it keep their results."""
    old = state.steps
    for sid, st in old.items():  # what each unit did under the old version, for the keys of the new one
        step = state.plan.by_id[sid]
        calls = state.earlier_calls.setdefault(sid, {})
        for u in st.units.values():
            if u.key is not None and u.args is not None:
                calls.setdefault(u.key, _call(step, u.args))
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


# --- deciding what happens next --------------------------------------------------


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
        failed = [s.id for s in state.steps.values() if s.status == FAILED]
        if failed:
            skipped = sum(1 for s in state.steps.values() if s.status == SKIPPED)
            reason = f"{len(failed)} step(s) failed ({', '.join(failed)})"
            if skipped:
                reason += f", {skipped} skipped"
            if state.replans < state.max_replans:
                emit(ReplanRequested(at=now, reason=reason, failed_steps=failed))
            else:
                if state.max_replans:
                    reason += (f"; no revision left: the plan was revised {state.replans} time(s), "
                               "the most this run allows")
                emit(RunFailed(at=now, reason=reason, failed_steps=failed))
        else:
            emit(RunSucceeded(at=now, output=run_output(state)))
    return Decision(events, ready, wake_at)


def _no_decision(u: Unit, now: float) -> StepFailed:
    waited = now - (u.started_at or now)
    return StepFailed(at=now, step=u.step, item=u.item, attempt=u.attempt,
                      error=_permanent(f"no decision within the approval's timeout ({waited:.0f}s)"))


def _approval_deadlines(state: RunState, now: float, emit: Any) -> float | None:
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


def decision(state: RunState, step_id: str, approve: bool, by: str, note: str, now: float) -> Event:
    """The event of a person's decision on an approval step that waits for one."""
    st = state.steps.get(step_id)
    if st is None:
        raise KeyError(f"run {state.run_id} has no step {step_id!r}")
    u = st.units.get(None)
    if u is None or u.status != AWAITING:
        raise ValueError(f"step {step_id} is {shown_status(st)}, not waiting for approval")
    if approve:
        return StepSucceeded(at=now, step=step_id, attempt=u.attempt,
                             output={"approved": True, "by": by, "comment": note})
    error = ErrorInfo("ApprovalRejected", f"rejected by {by}" + (f": {note}" if note else ""), retryable=False)
    return StepFailed(at=now, step=step_id, attempt=u.attempt, error=error.to_json())


BUDGET_KEYS = ("tokens", "cost", "seconds", "steps")


def check_budget(budget: Mapping[str, float] | None) -> dict[str, float]:
    out = {}
    for key, value in (budget or {}).items():
        if key not in BUDGET_KEYS:
            raise ConfigError(f"unknown budget limit {key!r} (known: {', '.join(BUDGET_KEYS)})")
        if value <= 0:
            raise ConfigError(f"budget limit {key} must be positive, not {value}")
        out[key] = float(value)
    return out


def over_budget(state: RunState, now: float) -> str:
    """Which limit of the run's budget is used up, in words ("" if none)."""
    b = state.budget
    if "tokens" in b and state.tokens >= b["tokens"]:
        return f"{state.tokens} tokens used of {b['tokens']:g}"
    if "cost" in b and state.cost >= b["cost"]:
        return f"${state.cost:.4f} spent of ${b['cost']:g}"
    if "seconds" in b and state.approved_at is not None and now - state.approved_at >= b["seconds"]:
        return f"{now - state.approved_at:.0f}s elapsed of {b['seconds']:g}s"
    if "steps" in b and state.attempts >= b["steps"]:
        return f"{state.attempts} attempts started of {b['steps']:g}"
    return ""


def _check_dirty(state: RunState, now: float, emit: Any) -> None:
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


def _activate(state: RunState, step: Step, now: float, emit: Any) -> None:
    st = state.steps[step.id]
    state.active[step.id] = None
    if step.for_each_ref is None:
        _unit(state, step.id, None)
        return
    if st.items is None:
        try:
            items = step.for_each_ref.resolve(lambda root: lookup(state, root, None))
        except ResolveError as exc:
            emit(StepFailed(at=now, step=step.id, error=_permanent(f"for_each: {exc}")))
            return
        if not isinstance(items, list):
            kind = type(items).__name__
            article = "an" if kind[:1] in "aeiou" else "a"
            message = f"for_each: {step.for_each} is {article} {kind}, not a list"
            emit(StepFailed(at=now, step=step.id, error=_permanent(message)))
            return
        st.items = items
        for i in range(len(items)):
            _unit(state, step.id, i)


def _gather(state: RunState, st: StepState, now: float, emit: Any) -> None:
    units = [st.units[i] for i in range(len(st.items or ()))]
    failed = [u for u in units if u.status == FAILED]
    if not failed:
        emit(StepSucceeded(at=now, step=st.id, output=[u.output for u in units]))
        return
    first = failed[0].error or {}
    message = f"{len(failed)} of {len(units)} items failed; item {failed[0].item}: {first.get('message', '')}"
    emit(StepFailed(at=now, step=st.id, error={**first, "message": message, "retryable": False}))


def _permanent(message: str) -> dict[str, Any]:
    return ErrorInfo("PermanentError", message, retryable=False).to_json()


def lookup(state: RunState, root: str, unit: Unit | None) -> Any:
    if root == "inputs":
        return state.inputs
    if root == "item":
        assert unit is not None and unit.item is not None
        items = state.steps[unit.step].items
        assert items is not None
        return items[unit.item]
    return state.outputs[root]


def run_output(state: RunState) -> Any:
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


def start(state: RunState, unit: Unit, now: float) -> Event:
    """The event that starts ``unit``: ``StepStarted``, or ``StepFailed`` if its arguments do not resolve."""
    step = state.plan.by_id[unit.step]
    if step.constant_args and unit.item is None:
        args = dict(step.args_template)  # compiled: "$${" is already a literal "${"
    else:
        try:
            args = render(step.args_template, lambda root: lookup(state, root, unit))
        except ResolveError as exc:
            return StepFailed(
                at=now, step=unit.step, item=unit.item, attempt=unit.attempt,
                error=_permanent(f"arguments: {exc}"),
            )
    if step.kind == "approval":
        timeout = args.get("timeout")
        message = args["message"] if isinstance(args["message"], str) else str(args["message"])
        return ApprovalRequested(at=now, step=unit.step, item=unit.item, attempt=unit.attempt + 1, message=message,
                                 deadline=None if timeout is None else now + float(timeout))
    return StepStarted(
        at=now, step=unit.step, item=unit.item, attempt=unit.attempt + 1, key=effect_key(state, unit, args), args=args
    )


def effect_key(state: RunState, unit: Unit, args: Mapping[str, Any]) -> str:
    """The idempotency key of an attempt: one key per effect, whatever the plan version.

    Every attempt of a unit shares its key, so a retry or a resumed attempt finds
    what the ledger recorded. A revised plan keeps a step's key where the call
    is the same (same tool, same arguments: its effect is not repeated), even if
    the call moved to another ``for_each`` item, and gives a changed call a new
    key, ``RUN/STEP[/ITEM]@vN``: it is a new effect, which the ledger must not
    answer with the old one's result.
    """
    if unit.key is not None:
        return unit.key
    base = state.key(unit)
    earlier = state.earlier_calls.get(unit.step)
    if not earlier:
        return base  # the step never ran under another version: its units' places are their keys
    taken = state.steps[unit.step].keys
    call = _call(state.plan.by_id[unit.step], args)
    same = [k for k, c in earlier.items() if c == call and k not in taken]
    if same:
        return base if base in same else same[0]
    if base not in earlier and base not in taken:
        return base
    key, n = f"{base}@v{state.plan_version}", 1
    while key in earlier or key in taken:
        n += 1
        key = f"{base}@v{state.plan_version}.{n}"
    return key


def classify(exc: BaseException, policy: RetryPolicy) -> tuple[ErrorInfo, float | None]:
    """An exception as a logged error, whether it is retryable, and any delay it asks for."""
    message = str(exc)
    if isinstance(exc, RetryableError):
        return ErrorInfo(type(exc).__name__, message, True), exc.next_retry_delay
    if isinstance(exc, PermanentError):
        return ErrorInfo(type(exc).__name__, message, False), None
    return ErrorInfo(type(exc).__name__, message, policy.retry_unknown_errors), None


def failure(
    state: RunState, unit: Unit, error: ErrorInfo, now: float, delay: float | None = None
) -> StepFailed:
    """The event for a failed attempt: a retry at a computed time, or a final failure."""
    policy = state.policy(unit.step)
    failures = unit.failures + 1
    retry_at = None
    if error.retryable and failures < policy.max_attempts:
        wait = delay if delay is not None else policy.delay(failures, state.key(unit))
        retry_at = now + max(0.0, wait)
    return StepFailed(
        at=now, step=unit.step, item=unit.item, attempt=unit.attempt, error=error.to_json(), retry_at=retry_at
    )


def success(unit: Unit, output: Any, now: float) -> StepSucceeded:
    return StepSucceeded(at=now, step=unit.step, item=unit.item, attempt=unit.attempt, output=output)


def reset_targets(state: RunState, step_id: str) -> list[str]:
    """What ``charter retry RUN STEP`` makes pending again: the step and what it blocked."""
    return [s for s in state.plan.downstream(step_id) if state.steps[s].status in (FAILED, SKIPPED)]
