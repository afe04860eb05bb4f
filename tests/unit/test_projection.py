"""The projection: the run's row and the rows of the steps and items a batch of events touched."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from charter import RetryPolicy
from charter.engine.rules import (
    AWAITING,
    FAILED,
    RUNNING,
    SUCCEEDED,
    WAITING,
    RunRecord,
    RunState,
    StepRecord,
    advance,
    apply,
    decision,
    failure,
    new_run,
    project,
    start,
    step_record,
    success,
)
from charter.errors import ErrorInfo
from charter.events import Event, ModelCalled, PlanApproved, RunCreated, StepsReset
from charter.plan import Plan

FLAKY = ErrorInfo("RetryableError", "flaky", True)


def make(steps: list[dict[str, Any]], policies: dict[str, RetryPolicy] | None = None) -> RunState:
    created = RunCreated(at=0.0, plan=Plan.from_dict({"goal": "g", "steps": steps}).to_json())
    state = RunState.from_created("r1", created)
    state.policies = policies or {}
    return state


def emit(state: RunState, *events: Event) -> list[Event]:
    for ev in events:
        apply(state, ev)
    return list(events)


def test_a_new_run_row() -> None:
    state = make([{"id": "a", "tool": "t"}, {"id": "b", "tool": "t"}])
    rec = new_run(state)
    assert (rec.run_id, rec.status, rec.goal, rec.steps_total, rec.created_at) == ("r1", "created", "g", 2, 0.0)
    assert rec.tool_sources == () and rec.parent_run is None


def test_approving_touches_the_run_only() -> None:
    state = make([{"id": "a", "tool": "t"}])
    p = project(state, emit(state, PlanApproved(at=1.0, by="me")))
    assert p.run_id == "r1" and p.steps == ()
    assert p.run == RunRecord(status=RUNNING, steps_done=0, reason="", output=None, updated_at=1.0, finished_at=None)


def test_a_started_step_and_its_success() -> None:
    state = make([{"id": "a", "tool": "t"}])
    emit(state, PlanApproved(at=1.0))
    unit = advance(state, 1.0).ready[0]
    p = project(state, emit(state, start(state, unit, 2.0)))
    assert p.steps == (StepRecord("a", None, RUNNING, 1, None, 2.0, None, None, None),)
    p = project(state, emit(state, success(unit, {"n": 1}, 3.0)) + advance(state, 3.0).events)
    assert p.steps == (StepRecord("a", None, SUCCEEDED, 1, None, 2.0, 3.0, {"n": 1}, None),)
    assert p.run == RunRecord(SUCCEEDED, 1, "", {"n": 1}, 3.0, 3.0)


def test_a_retry_due_shows_waiting_with_its_time_and_error() -> None:
    state = make([{"id": "a", "tool": "t"}], {"a": RetryPolicy(max_attempts=2, initial_interval=10, jitter=0)})
    emit(state, PlanApproved(at=0.0))
    unit = advance(state, 0.0).ready[0]
    emit(state, start(state, unit, 0.0))
    (row,) = project(state, emit(state, failure(state, unit, FLAKY, 1.0))).steps
    assert (row.status, row.attempt, row.retry_at) == (WAITING, 1, 11.0)
    assert state.steps["a"].status == RUNNING  # the step's own status; people see its unit's
    assert (row.finished_at, row.error) == (None, None)  # the step's, as before: it has not finished or failed


def test_an_item_touches_its_row_and_its_steps_row() -> None:
    state = make([{"id": "list", "tool": "t"}, {"id": "each", "tool": "t", "for_each": "${list}"}])
    emit(state, PlanApproved(at=0.0))
    unit = advance(state, 0.0).ready[0]
    emit(state, start(state, unit, 0.0), success(unit, ["x", "y"], 0.0))
    first, second = advance(state, 1.0).ready
    emit(state, start(state, first, 1.0), failure(state, first, FLAKY, 1.5))
    p = project(state, emit(state, start(state, first, 2.0), start(state, second, 2.0)))
    assert [(r.step_id, r.item) for r in p.steps] == [("each", 0), ("each", None), ("each", 1)]
    item0, step, item1 = p.steps
    assert (item0.status, item0.attempt, item1.attempt) == (RUNNING, 2, 1)
    assert (step.status, step.attempt, step.started_at, step.retry_at) == (RUNNING, 2, 1.0, None)  # its items' latest


def test_a_reset_touches_the_steps_and_all_their_items() -> None:
    state = make([{"id": "list", "tool": "t"}, {"id": "each", "tool": "t", "for_each": "${list}"}],
                 {"each": RetryPolicy(max_attempts=1)})
    emit(state, PlanApproved(at=0.0))
    unit = advance(state, 0.0).ready[0]
    emit(state, start(state, unit, 0.0), success(unit, ["x", "y"], 0.0))
    for u in advance(state, 1.0).ready:
        emit(state, start(state, u, 1.0), failure(state, u, FLAKY, 1.0))
    assert [e.type for e in advance(state, 1.0).events] == ["StepFailed", "RunFailed"]
    assert project(state, []).run.status == FAILED
    p = project(state, emit(state, StepsReset(at=2.0, steps=["each"])))
    assert [(r.step_id, r.item, r.status) for r in p.steps] == [
        ("each", None, "pending"), ("each", 0, "pending"), ("each", 1, "pending")]
    assert p.run == RunRecord(RUNNING, 1, "", None, 2.0, None)


def test_the_planners_model_call_touches_no_step() -> None:
    state = make([{"id": "a", "tool": "t"}])
    p = project(state, emit(state, ModelCalled(at=4.0, step="", model="m", input_tokens=3)))
    assert p.steps == () and p.run.updated_at == 4.0


def test_records_are_frozen() -> None:
    state = make([{"id": "a", "tool": "t"}])
    p = project(state, emit(state, PlanApproved(at=1.0)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.run.status = "x"  # type: ignore[misc]


Outcome = Callable[[str, int | None, int], Any]  # (step, item, attempt) -> an output, or an ErrorInfo


def drive(state: RunState, outcome: Outcome) -> Iterator[list[Event]]:
    """Run ``state`` to its end as the engine would, yielding each commit's events once they are applied."""
    yield emit(state, PlanApproved(at=0.0))
    now = 0.0
    while not state.finished:
        d = advance(state, now)
        yield d.events
        if state.status == AWAITING:  # a person approves every step that waits for one
            for st in state.steps.values():
                u = st.units.get(None)
                if u is not None and u.status == AWAITING:
                    yield emit(state, decision(state, st.id, True, "me", "", now))
        for u in d.ready:
            ev = start(state, u, now)
            yield emit(state, ev)
            if ev.type != "StepStarted":
                continue
            out = outcome(u.step, u.item, u.attempt)
            yield emit(state, failure(state, u, out, now) if isinstance(out, ErrorInfo) else success(u, out, now))
        if not d.ready and not d.events:
            assert d.wake_at is not None
            now = d.wake_at
        else:
            now += 1.0


def flaky_first_time(step: str, item: int | None, attempt: int) -> Any:
    if (step == "each" and item == 1 and attempt == 1) or step == "bad":
        return FLAKY
    return ["x", "y", "z"] if step == "list" else f"{step}/{item}/{attempt}"


def every_row(state: RunState) -> dict[tuple[str, int | None], StepRecord]:
    return {(sid, i): step_record(state, sid, i)
            for sid, st in state.steps.items() for i in [None, *(i for i in st.units if i is not None)]}


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_rows_written_from_each_commits_projection_are_never_stale(max_attempts: int) -> None:
    """Upserting each batch's rows, as a store does, keeps every row equal to what the state says."""
    state = make([
        {"id": "list", "tool": "t"},
        {"id": "each", "tool": "t", "for_each": "${list}", "args": {"v": "${item}"}},
        {"id": "ok", "approval": {"message": "go on?"}, "needs": ["each"]},
        {"id": "bad", "tool": "t"},
        {"id": "after_bad", "tool": "t", "needs": ["bad"]},
        {"id": "last", "tool": "t", "needs": ["ok"]},
    ], {s: RetryPolicy(max_attempts=max_attempts, initial_interval=5, jitter=0) for s in ("each", "bad")})
    rows: dict[tuple[str, int | None], StepRecord] = {}
    run: RunRecord | None = None
    for events in drive(state, flaky_first_time):
        p = project(state, events)
        rows.update(((r.step_id, r.item), r) for r in p.steps)
        run = p.run
        # after every commit, not only at the end: a row never written must still be as it was made
        now = every_row(state)
        assert {k: rows.get(k, StepRecord(*k, "pending", 0, None, None, None, None, None)) for k in now} == now
    assert rows == every_row(state)
    assert run is not None and (run.status, run.steps_done, run.reason) == (FAILED, 6, state.reason)
    assert rows[("each", None)].status == (SUCCEEDED if max_attempts == 3 else FAILED)
    if max_attempts == 3:  # the fan-out succeeded, so the approval was asked for
        assert rows[("ok", None)].output == {"approved": True, "by": "me", "comment": ""}
    assert rows[("after_bad", None)].status == "skipped" and rows[("bad", None)].attempt == max_attempts
