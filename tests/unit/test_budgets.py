"""Budgets: a run that reaches a limit pauses with the reason, and goes on when the limit is raised."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from charter import Charter, ConfigError, RetryableError, ToolContext, tool
from charter.engine import control, rules
from charter.events import ModelCalled, PlanApproved, RunCreated, StepInterrupted, StepStarted
from charter.models import set_price
from charter.plan import Plan
from charter.testing import FakeClock, ScriptedModel

ran: list[str] = []


@tool
def step(name: str) -> str:
    ran.append(name)
    return name


def app(db: Path, model: ScriptedModel | None = None, clock: FakeClock | None = None) -> Charter:
    ran.clear()
    a = Charter(db, tools=[step], clock=clock or FakeClock(auto_advance=True))
    a.engine().model = model
    return a


def llm_chain(n: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"id": "l0", "llm": {"prompt": "start " * 40}}]
    steps += [{"id": f"l{i}", "llm": {"prompt": f"go on from ${{l{i - 1}}}"}} for i in range(1, n)]
    return {"goal": "talk", "steps": steps}


async def test_budget_recorded_at_creation_pauses_then_resumes(db_path: Path) -> None:
    model = ScriptedModel(["first answer " * 20, "second", "third"])
    a = app(db_path, model)
    engine = a.engine()
    run_id = await engine.create(Plan.from_dict(llm_chain(3)), a.registry, budget={"tokens": 30})
    await engine.run_until_settled()
    report = await a.report(run_id)
    assert report.status == "paused" and report.reason.startswith("budget reached: ")
    assert "tokens used of 30" in report.reason
    assert [s.status for s in report.steps] == ["succeeded", "pending", "pending"]
    again = Charter(db_path, clock=FakeClock(auto_advance=True))
    again.engine().model = model
    await again.engine().control(run_id, control.Resume(budget={"tokens": 10_000}))
    await again.engine().run_until_settled()
    final = await again.report(run_id)
    assert final.status == "succeeded" and final.output == "third"
    assert sum(isinstance(e, ModelCalled) for e in final.events) == 3 and len(model.requests) == 3
    assert final.budget == {"tokens": 10_000} and final.tokens > 30


async def test_a_step_budget_caps_attempts(db_path: Path) -> None:
    a = app(db_path)
    plan = Plan.from_dict({"goal": "g", "steps": [{"id": f"s{i}", "tool": "step", "args": {"name": f"s{i}"}} for i in range(5)]},
                          a.registry)
    run_id = await a.engine().create(plan, a.registry, budget={"steps": 2})
    await a.engine().run_until_settled()
    report = await a.report(run_id)
    assert report.status == "paused" and "2 attempts started of 2" in report.reason
    assert len(ran) == 2


async def test_a_time_budget_stops_a_run_that_waits_too_long(db_path: Path) -> None:
    @tool
    def slow_service(ctx: ToolContext) -> str:
        if ctx.attempt == 1:
            raise RetryableError("busy", next_retry_delay=100)
        return "ok"

    a = Charter(db_path, tools=[slow_service], clock=FakeClock(start=0, auto_advance=True))
    plan = Plan.from_dict({"goal": "g", "steps": [{"id": "s", "tool": "slow_service"}]}, a.registry)
    run_id = await a.engine().create(plan, a.registry, budget={"seconds": 50})
    await a.engine().run_until_settled()
    report = await a.report(run_id)
    assert report.status == "paused" and "elapsed of 50s" in report.reason


async def test_a_cost_budget_counts_priced_calls(db_path: Path) -> None:
    set_price("scripted:pricey", input=1_000_000, output=1_000_000)  # a dollar a token
    model = ScriptedModel(["a", "b", "c"], name="pricey")
    a = app(db_path, model)
    run_id = await a.engine().create(Plan.from_dict(llm_chain(3)), a.registry, budget={"cost": 5})
    await a.engine().run_until_settled()
    report = await a.report(run_id)
    assert report.status == "paused" and "spent of $5" in report.reason and report.cost >= 5


def test_bad_budgets_are_refused(db_path: Path) -> None:
    a = app(db_path)
    plan = Plan.from_dict({"goal": "g", "steps": [{"id": "s", "tool": "step", "args": {"name": "x"}}]}, a.registry)
    with pytest.raises(ConfigError, match="unknown budget limit 'dollars'"):
        asyncio.run(a.engine().create(plan, a.registry, budget={"dollars": 3}))
    with pytest.raises(ConfigError, match="must be positive"):
        asyncio.run(a.engine().create(plan, a.registry, budget={"tokens": 0}))
    assert asyncio.run(a.runs()) == []


def test_an_interrupted_attempt_counts_against_neither_budget() -> None:
    plan = {"goal": "g", "steps": [{"id": "s", "tool": "step", "args": {"name": "s"}}]}
    events = [RunCreated(at=0, plan=plan, budget={"steps": 1}), PlanApproved(at=0, by="test"),
              StepStarted(at=1, step="s", attempt=1, key="r/s", args={"name": "s"}),
              StepInterrupted(at=2, step="s", attempt=1, reason="the process running it stopped")]
    state = rules.replay("r", events)
    unit = state.steps["s"].units[None]
    assert (state.attempts, unit.failures) == (0, 0)  # both budgets: the attempt runs again, and counts once
    decision = rules.advance(state, 3)
    assert [u.step for u in decision.ready] == ["s"]  # the steps budget of 1 still lets it run
