"""The pure rules: no engine, no store, no clock: events in, decisions out."""

from __future__ import annotations

from typing import Any

from charter import RetryPolicy
from charter.engine.rules import (
    FAILED,
    PAUSED,
    SKIPPED,
    SUCCEEDED,
    WAITING,
    RunState,
    advance,
    apply,
    classify,
    failure,
    replay,
    reset_targets,
    start,
    success,
)
from charter.errors import ErrorInfo
from charter.events import PlanApproved, RunCreated, StepsReset
from charter.plan import Plan


def make(steps: list[dict[str, Any]], policies: dict[str, RetryPolicy] | None = None, **plan: Any) -> RunState:
    data = {"goal": "g", "steps": steps, **plan}
    created = RunCreated(at=0.0, plan=Plan.from_dict(data).to_json(), inputs=plan.get("inputs", {}))
    state = RunState.from_created("r1", created)
    state.policies = policies or {}
    apply(state, PlanApproved(at=0.0, by="test"))
    return state


def ready(state: RunState, now: float = 0.0) -> list[str]:
    d = advance(state, now)
    return [u.step if u.item is None else f"{u.step}[{u.item}]" for u in d.ready]


def run_ok(state: RunState, step: str, output: Any, now: float = 0.0, item: int | None = None) -> None:
    unit = state.steps[step].units[item]
    apply(state, start(state, unit, now))
    apply(state, success(unit, output, now))


def test_independent_steps_are_ready_together_and_dependents_wait() -> None:
    s = make([
        {"id": "a", "tool": "t"},
        {"id": "b", "tool": "t"},
        {"id": "c", "tool": "t", "args": {"x": "${a}", "y": "${b}"}},
    ])
    assert ready(s) == ["a", "b"]
    run_ok(s, "a", 1)
    assert ready(s) == ["b"]
    run_ok(s, "b", 2)
    assert ready(s) == ["c"]
    ev = start(s, s.steps["c"].units[None], 1.0)
    assert ev.type == "StepStarted" and ev.args == {"x": 1, "y": 2} and ev.key == "r1/c"  # type: ignore[attr-defined]


def test_retry_is_scheduled_with_backoff_then_fails_for_good() -> None:
    policy = RetryPolicy(max_attempts=3, initial_interval=10, backoff=2, jitter=0)
    s = make([{"id": "a", "tool": "t"}, {"id": "b", "tool": "t", "needs": ["a"]}], {"a": policy})
    ready(s)
    unit = s.steps["a"].units[None]
    err = ErrorInfo("RetryableError", "flaky", True)
    apply(s, start(s, unit, 0.0))
    ev = failure(s, unit, err, now=1.0)
    assert ev.retry_at == 11.0
    apply(s, ev)
    assert unit.status == WAITING
    d = advance(s, 5.0)
    assert d.ready == [] and d.wake_at == 11.0
    assert ready(s, 11.0) == ["a"]
    apply(s, start(s, unit, 11.0))
    ev2 = failure(s, unit, err, now=12.0)
    assert ev2.retry_at == 32.0  # 20 s: backoff doubled
    apply(s, ev2)
    ready(s, 32.0)
    apply(s, start(s, unit, 32.0))
    ev3 = failure(s, unit, err, now=33.0)
    assert ev3.retry_at is None  # third failure: out of attempts
    apply(s, ev3)
    d = advance(s, 33.0)
    assert s.steps["a"].status == FAILED and s.steps["b"].status == SKIPPED
    assert [e.type for e in d.events] == ["StepSkipped", "RunFailed"]
    assert s.status == FAILED and "a" in s.reason


def test_permanent_errors_and_delay_overrides() -> None:
    from charter import PermanentError, RetryableError

    info, delay = classify(PermanentError("no"), RetryPolicy())
    assert not info.retryable and delay is None
    info, delay = classify(RetryableError("later", next_retry_delay=42), RetryPolicy())
    assert info.retryable and delay == 42
    info, _ = classify(ValueError("odd"), RetryPolicy(retry_unknown_errors=False))
    assert not info.retryable and info.type == "ValueError"
    s = make([{"id": "a", "tool": "t"}])
    ready(s)
    unit = s.steps["a"].units[None]
    apply(s, start(s, unit, 0.0))
    assert failure(s, unit, ErrorInfo("RetryableError", "x", True), 0.0, delay=42).retry_at == 42


def test_skips_cascade_but_independent_branches_finish() -> None:
    s = make([
        {"id": "a", "tool": "t"},
        {"id": "b", "tool": "t", "needs": ["a"]},
        {"id": "c", "tool": "t", "needs": ["b"]},
        {"id": "x", "tool": "t"},
    ], {"a": RetryPolicy(max_attempts=1)})
    assert ready(s) == ["a", "x"]
    unit = s.steps["a"].units[None]
    apply(s, start(s, unit, 0.0))
    apply(s, failure(s, unit, ErrorInfo("E", "bad", True), 0.0))
    d = advance(s, 0.0)
    assert [e.type for e in d.events] == ["StepSkipped", "StepSkipped"]
    assert s.steps["c"].reason == "b skipped"
    assert [u.step for u in d.ready] == ["x"]
    run_ok(s, "x", "done")
    d = advance(s, 0.0)
    assert s.status == FAILED and s.reason == "1 step(s) failed (a), 2 skipped"


def test_for_each_fans_out_and_gathers_in_order() -> None:
    s = make([
        {"id": "list", "tool": "t"},
        {"id": "each", "tool": "t", "for_each": "${list.items}", "args": {"v": "${item}", "n": "${list.n}"}},
        {"id": "sum", "tool": "t", "args": {"all": "${each}"}},
    ])
    ready(s)
    run_ok(s, "list", {"items": ["a", "b", "c"], "n": 3})
    assert ready(s) == ["each[0]", "each[1]", "each[2]"]
    ev = start(s, s.steps["each"].units[1], 0.0)
    assert ev.args == {"v": "b", "n": 3} and ev.key == "r1/each/1"  # type: ignore[attr-defined]
    for i in (2, 0, 1):
        run_ok(s, "each", i * 10, item=i)
    assert ready(s) == ["sum"]
    assert s.outputs["each"] == [0, 10, 20]


def test_empty_for_each_succeeds_and_a_non_list_fails() -> None:
    s = make([
        {"id": "list", "tool": "t"},
        {"id": "each", "tool": "t", "for_each": "${list}"},
        {"id": "bad", "tool": "t", "for_each": "${list.nope}"},
    ])
    ready(s)
    run_ok(s, "list", [])
    d = advance(s, 0.0)
    assert s.steps["each"].status == SUCCEEDED and s.outputs["each"] == []
    assert s.steps["bad"].status == FAILED
    assert "has no field 'nope'" in (s.steps["bad"].error or {})["message"]
    assert d.events[-1].type == "RunFailed"


def test_an_item_failure_fails_the_step_after_the_others_finish() -> None:
    s = make([{"id": "list", "tool": "t"}, {"id": "each", "tool": "t", "for_each": "${list}"}],
             {"each": RetryPolicy(max_attempts=1)})
    ready(s)
    run_ok(s, "list", [1, 2])
    ready(s)
    u0, u1 = s.steps["each"].units[0], s.steps["each"].units[1]
    apply(s, start(s, u0, 0.0))
    apply(s, start(s, u1, 0.0))
    apply(s, failure(s, u0, ErrorInfo("E", "boom", True), 0.0))
    advance(s, 0.0)
    assert s.steps["each"].status != FAILED  # item 1 still running
    apply(s, success(u1, "ok", 0.0))
    advance(s, 0.0)
    assert s.steps["each"].status == FAILED
    assert (s.steps["each"].error or {})["message"].startswith("1 of 2 items failed; item 0: boom")


def test_reset_makes_failed_and_skipped_steps_pending_with_a_fresh_budget() -> None:
    s = make([{"id": "a", "tool": "t"}, {"id": "b", "tool": "t", "needs": ["a"]}, {"id": "x", "tool": "t"}],
             {"a": RetryPolicy(max_attempts=1)})
    ready(s)
    unit = s.steps["a"].units[None]
    apply(s, start(s, unit, 0.0))
    apply(s, failure(s, unit, ErrorInfo("E", "bad", True), 0.0))
    run_ok(s, "x", 1)
    advance(s, 0.0)
    assert s.status == FAILED
    targets = reset_targets(s, "a")
    assert targets == ["a", "b"]
    apply(s, StepsReset(at=1.0, steps=targets))
    assert ready(s, 1.0) == ["a"]
    assert unit.failures == 0 and unit.attempt == 1
    ev = start(s, unit, 1.0)
    assert ev.attempt == 2  # type: ignore[attr-defined]
    apply(s, ev)
    apply(s, success(unit, "fixed", 1.0))
    run_ok(s, "b", 2) if ready(s, 1.0) == ["b"] else None
    advance(s, 1.0)
    assert s.status == SUCCEEDED


def test_unresolvable_arguments_fail_the_step_permanently() -> None:
    s = make([{"id": "a", "tool": "t"}, {"id": "b", "tool": "t", "args": {"x": "${a.missing}"}}])
    ready(s)
    run_ok(s, "a", {"here": 1})
    ready(s)
    ev = start(s, s.steps["b"].units[None], 0.0)
    assert ev.type == "StepFailed" and "has no field 'missing'" in ev.error["message"]  # type: ignore[attr-defined]
    assert ev.retry_at is None  # type: ignore[attr-defined]


def test_output_template_and_replay_give_the_same_state() -> None:
    s = make([{"id": "a", "tool": "t"}, {"id": "b", "tool": "t"}], output={"first": "${a}", "both": ["${a}", "${b}"]})
    events = []
    for sid, out in (("a", 1), ("b", 2)):
        advance(s, 0.0)
        unit = s.steps[sid].units[None]
        e1, e2 = start(s, unit, 0.0), success(unit, out, 0.0)
        apply(s, e1)
        apply(s, e2)
        events += [e1, e2]
    d = advance(s, 0.0)
    assert s.output == {"first": 1, "both": [1, 2]}
    created = RunCreated(at=0.0, plan=s.plan.to_json())
    again = replay("r1", [created, PlanApproved(at=0.0), *events, *d.events])
    assert again.status == SUCCEEDED and again.output == s.output and again.done_steps == 2


def test_nothing_is_ready_while_paused() -> None:
    from charter.events import RunPaused, RunResumed

    s = make([{"id": "a", "tool": "t"}])
    apply(s, RunPaused(at=0.0, reason="lunch"))
    assert s.status == PAUSED and ready(s) == []
    apply(s, RunResumed(at=0.0))
    assert ready(s) == ["a"]
