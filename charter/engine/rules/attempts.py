"""The events of an attempt: starting a unit, its success, its failure (with a retry or not), a person's decision.

The engine runs the attempt; these functions say what its start and end mean
for the log: the arguments it gets, the idempotency key its effects share, when
a retry is due. Also which retry policy each step has and what ``charter retry``
makes pending again. Imports the state, the plan and the retry policy; the tool
registry only for type checking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...errors import ErrorInfo, PermanentError, RetryableError
from ...events import ApprovalRequested, Event, StepFailed, StepStarted, StepSucceeded
from ...plan.model import Plan
from ...plan.refs import ResolveError, render
from ...retry import DEFAULT_RETRY, RetryPolicy
from .state import AWAITING, FAILED, SKIPPED, RunState, Unit, call_of, lookup, permanent, shown_status

if TYPE_CHECKING:
    from ...tools import Registry


def retry_policies(plan: Plan, registry: Registry) -> dict[str, RetryPolicy]:
    """Each step's retry policy: the step's own settings over its tool's policy, else the default."""
    out = {}
    for step in plan.steps:
        tool = registry.get(step.tool) if step.kind == "tool" else None
        base = tool.retry if tool is not None and tool.retry is not None else DEFAULT_RETRY
        out[step.id] = step.retry_policy(base)
    return out


def start(state: RunState, unit: Unit, now: float, worker: str = "") -> Event:
    """The event that starts ``unit`` (on ``worker``): ``StepStarted``, or ``StepFailed`` if its arguments
    do not resolve."""
    step = state.plan.by_id[unit.step]
    if step.constant_args and unit.item is None:
        args = dict(step.args_template)  # compiled: "$${" is already a literal "${"
    else:
        try:
            args = render(step.args_template, lambda root: lookup(state, root, unit))
        except ResolveError as exc:
            return StepFailed(
                at=now, step=unit.step, item=unit.item, attempt=unit.attempt,
                error=permanent(f"arguments: {exc}"),
            )
    if step.kind == "approval":
        timeout = args.get("timeout")
        message = args["message"] if isinstance(args["message"], str) else str(args["message"])
        return ApprovalRequested(at=now, step=unit.step, item=unit.item, attempt=unit.attempt + 1, message=message,
                                 deadline=None if timeout is None else now + float(timeout))
    return StepStarted(
        at=now, step=unit.step, item=unit.item, attempt=unit.attempt + 1, key=effect_key(state, unit, args), args=args,
        worker=worker,
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
    call = call_of(state.plan.by_id[unit.step], args)
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
    """The event for an attempt that returned ``output``."""
    return StepSucceeded(at=now, step=unit.step, item=unit.item, attempt=unit.attempt, output=output)


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


def reset_targets(state: RunState, step_id: str) -> list[str]:
    """What ``charter retry RUN STEP`` makes pending again: the step and what it blocked."""
    return [s for s in state.plan.downstream(step_id) if state.steps[s].status in (FAILED, SKIPPED)]
