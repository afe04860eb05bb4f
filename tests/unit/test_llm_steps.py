"""``llm`` steps with the scripted model: prompts over outputs, JSON answers, retries, and answers never paid twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from charter import Charter, ConfigError, PlanError, RetryableError, tool
from charter.engine import Engine
from charter.events import Event, ModelCalled
from charter.plan import Plan
from charter.testing import FakeClock, ScriptedModel, assert_events_in_order
from tests.crashing import crash_after_commit

SCHEMA = {"type": "object", "properties": {"verdict": {"enum": ["ok", "bad"]}}, "required": ["verdict"]}


@tool
def notes() -> list[str]:
    return ["ship it", "fix the bug"]


def app_with(db: Path, model: ScriptedModel, clock: FakeClock | None = None) -> Charter:
    app = Charter(db, tools=[notes], clock=clock or FakeClock(auto_advance=True))
    app.engine().model = model
    return app


async def test_a_prompt_over_earlier_outputs_gives_text(db_path: Path) -> None:
    model = ScriptedModel(["Two notes: ship, fix."])
    app = app_with(db_path, model)
    report = await app.run({"goal": "g", "steps": [
        {"id": "n", "tool": "notes"},
        {"id": "sum", "llm": {"prompt": "Summarize: ${n}", "system": "Be terse."}},
    ]})
    assert report.status == "succeeded" and report.output == "Two notes: ship, fix."
    [req] = model.requests
    assert [(m.role, m.content) for m in req.messages] == [
        ("system", "Be terse."), ("user", 'Summarize: ["ship it", "fix the bug"]')]
    [called] = [e for e in report.events if isinstance(e, ModelCalled)]
    assert called.model == "scripted:demo" and called.step == "sum" and called.input_tokens > 0


async def test_json_answers_are_checked_and_a_bad_one_is_retried(db_path: Path) -> None:
    model = ScriptedModel(["not json at all", {"verdict": "maybe"}, "```json\n{\"verdict\": \"ok\"}\n```"])
    app = app_with(db_path, model)
    plan = {"goal": "g", "steps": [
        {"id": "judge", "llm": {"prompt": "Judge it.", "schema": SCHEMA}, "retry": {"max_attempts": 3, "initial_interval": 0}},
    ]}
    report = await app.run(plan)
    assert report.status == "succeeded" and report.output == {"verdict": "ok"}
    errors = [a.error["message"] for a in report.step("judge").attempts if a.error]  # type: ignore[index]
    assert errors[0].startswith("the model's answer is not JSON")
    assert errors[1] == "the model's answer does not fit the schema at verdict: 'maybe' is not one of ['ok', 'bad']"
    assert len(model.requests) == 3  # a failed attempt's answer is not reused
    assert model.requests[0].schema == SCHEMA and "JSON schema" in model.requests[0].messages[0].content


async def test_llm_steps_fan_out_over_items(db_path: Path) -> None:
    model = ScriptedModel(lambda req: req.messages[-1].content.upper() for _ in range(2))
    app = app_with(db_path, model)
    report = await app.run({"goal": "g", "steps": [
        {"id": "n", "tool": "notes"},
        {"id": "loud", "for_each": "${n}", "llm": {"prompt": "${item}"}},
    ]})
    assert report.output == ["SHIP IT", "FIX THE BUG"]


async def test_model_failures_follow_the_retry_policy(db_path: Path) -> None:
    model = ScriptedModel([RetryableError("429", next_retry_delay=30), "fine"])
    clock = FakeClock(start=0, auto_advance=True)
    report = await app_with(db_path, model, clock).run({"goal": "g", "steps": [{"id": "x", "llm": {"prompt": "hi"}}]})
    assert report.output == "fine" and clock.now() >= 30


async def test_without_a_model_the_plan_is_refused_before_anything_runs(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARTER_MODEL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ran: list[str] = []

    @tool
    def first() -> str:
        ran.append("first")
        return "done"

    app = Charter(db_path, tools=[first], clock=FakeClock(auto_advance=True))
    plan = {"goal": "g", "steps": [
        {"id": "a", "tool": "first"},
        {"id": "x", "llm": {"prompt": "${a}"}},
        {"id": "y", "agent": {"prompt": "go", "tools": ["first"]}},
        {"id": "z", "llm": {"prompt": "hi", "model": "openai:gpt-4o-mini"}},
    ]}
    with pytest.raises(PlanError) as info:
        await app.run(plan)
    found = [str(p) for p in info.value.problems]
    assert found[0].startswith("steps[1].llm: an llm step needs a model, and none is chosen: pass --model or set CHARTER_MODEL=")
    assert found[1].startswith("steps[2].agent: an agent step needs a model, and none is chosen")
    assert found[2] == "steps[3].llm.model: OPENAI_API_KEY is not set: the openai provider needs an API key"
    assert ran == [] and await app.runs() == []  # nothing ran, no run was recorded
    # With a model chosen (not built, not called: only checked), the same plan is accepted.
    monkeypatch.setenv("CHARTER_MODEL", "ollama:llama3.1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert [s.id for s in (await app.load_plan(plan)).steps] == ["a", "x", "y", "z"]
    # A model chosen by a reference is known only when the step runs: not judged before.
    monkeypatch.delenv("OPENAI_API_KEY")
    by_input = {"goal": "g", "inputs": {"model": "openai:gpt-4o"},
                "steps": [{"id": "x", "llm": {"prompt": "hi", "model": "${inputs.model}"}}]}
    assert (await app.load_plan(by_input)).steps[0].id == "x"


async def test_without_a_model_a_step_that_runs_anyway_fails_clearly(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A run recorded without the facade's check (an engine of its own) still fails the step with the reason.
    monkeypatch.delenv("CHARTER_MODEL", raising=False)
    engine = Engine(Charter(db_path).store, clock=FakeClock(auto_advance=True))
    from charter.tools import Registry

    run_id = await engine.create(Plan.from_dict({"goal": "g", "steps": [{"id": "x", "llm": {"prompt": "hi"}}]}), Registry())
    await engine.run_until_settled()
    report = await Charter(db_path).report(run_id)
    assert report.status == "failed"
    assert "no model chosen" in report.step("x").error["message"]  # type: ignore[index]
    assert len(report.step("x").attempts) == 1


async def test_a_resumed_llm_step_does_not_pay_twice(db_path: Path) -> None:
    model = ScriptedModel([{"verdict": "ok"}])
    engine = Engine(Charter(db_path).store, clock=FakeClock(auto_advance=True), model=model)
    plan = Plan.from_dict({"goal": "g", "steps": [{"id": "judge", "llm": {"prompt": "Judge.", "schema": SCHEMA}}]})
    from charter.tools import Registry

    run_id = await engine.create(plan, Registry())
    # the answer is committed; the step's result is not
    crash_after_commit(engine.store, lambda events: any(isinstance(e, ModelCalled) for e in events))
    with pytest.raises(asyncio.CancelledError):
        await engine.run_until_settled()
    assert (await Charter(db_path).state(run_id)).steps["judge"].status == "running"

    again = Charter(db_path, clock=FakeClock(auto_advance=True))
    again.engine().model = ScriptedModel([])  # no answers left: a second call would fail
    report = await again.resume(run_id)
    assert report.status == "succeeded" and report.output == {"verdict": "ok"}
    assert len(model.requests) == 1
    events: list[Event] = report.events
    assert_events_in_order(events, ["ModelCalled", "StepInterrupted", "StepStarted", ("StepSucceeded", {"step": "judge"})])
    assert sum(isinstance(e, ModelCalled) for e in events) == 1


def test_llm_steps_are_checked_when_the_plan_loads() -> None:
    with pytest.raises(PlanError) as info:
        Plan.from_dict({"goal": "g", "steps": [
            {"id": "a", "llm": {"prompt": "x"}, "args": {"y": 1}},
            {"id": "b", "llm": {"prompt": "x", "schema": {"type": "nope"}}},
            {"id": "c", "llm": {"prompt": "${ghost}"}},
            {"id": "d", "llm": {"system": "no prompt"}},
            {"id": "e"},
        ]})
    found = [str(p) for p in info.value.problems]
    assert "steps[0]: an llm step takes no 'args': its text references what it needs" in found
    assert any(p.startswith("steps[1].llm.schema: not a valid JSON schema") for p in found)
    assert "steps[2].llm.prompt: ${ghost}: unknown step 'ghost'" in found
    assert "steps[3].llm.prompt: Field required" in found
    assert "steps[4]: a step needs exactly one of 'tool', 'llm', 'agent', 'approval'" in found


async def test_the_report_lists_each_model_call_under_the_attempt_that_made_it(db_path: Path) -> None:
    model = ScriptedModel(["not json at all", {"verdict": "ok"}])
    app = app_with(db_path, model)
    report = await app.run({"goal": "g", "steps": [
        {"id": "n", "tool": "notes"},
        {"id": "judge", "llm": {"prompt": "Judge:\n${n}", "schema": SCHEMA}, "retry": {"initial_interval": 0}},
    ]})
    assert report.status == "succeeded"
    first, second = report.step("judge").attempts
    assert [c.answer for c in first.model_calls] == ["not json at all"]
    assert [c.answer for c in second.model_calls] == ['{"verdict": "ok"}']
    assert second.model_calls[0].prompt == 'Judge: ["ship it", "fix the bug"]'  # one line
    assert [c.attempt for c in report.model_calls] == [1, 2] and all(c.step == "judge" for c in report.model_calls)
    assert all(c.latency is not None and c.latency >= 0 for c in report.model_calls)
    assert report.cost == 0.0 and report.unpriced_models == []  # the scripted model's price is known: nothing


async def test_an_agents_calls_show_the_tools_it_asked_for_and_what_they_returned(db_path: Path) -> None:
    model = ScriptedModel([ScriptedModel.call("notes", {}), "Two notes."])
    report = await app_with(db_path, model).run({"goal": "g", "steps": [
        {"id": "ask", "agent": {"prompt": "How many notes?", "tools": ["notes"]}}]})
    assert report.status == "succeeded"
    first, second = report.model_calls
    assert (first.prompt, first.answer) == ("How many notes?", "calls notes({})")
    assert second.prompt.startswith("tool result: ") and "ship it" in second.prompt and second.answer == "Two notes."


async def test_show_names_the_kind_of_a_step_without_a_tool(db_path: Path) -> None:
    from rich.console import Console

    from charter.cli.console import print_report

    app = app_with(db_path, ScriptedModel(["fine"]))
    report = await app.run({"goal": "g", "steps": [{"id": "ask", "llm": {"prompt": "how are you?"}}]})
    console = Console(record=True, width=120)
    print_report(console, report)
    header = next(line for line in console.export_text().splitlines() if line.startswith("✓ ask"))
    assert header.split()[:4] == ["✓", "ask", "llm", "succeeded"]
    assert report.to_json()["steps"][0]["kind"] == "llm"


async def test_a_run_whose_remaining_llm_steps_find_no_model_is_not_taken_over(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARTER_MODEL", raising=False)
    app = Charter(db_path, tools=[notes], clock=FakeClock(auto_advance=True))
    plan = Plan.from_dict({"goal": "g", "steps": [
        {"id": "n", "tool": "notes"}, {"id": "sum", "llm": {"prompt": "Summarize: ${n}"}}]}, app.registry)
    run_id = await app.engine().create(plan, app.registry)  # recorded by a process that had a model
    await app.engine()._release(run_id)  # as if that process had stopped
    with pytest.raises(ConfigError, match=r"cannot go on: steps\[1\]\.llm: an llm step needs a model"):
        await app.resume(run_id)
    assert (await app.report(run_id)).steps[0].status == "pending"  # nothing ran
    app.engine().model = ScriptedModel(["two notes"])
    assert (await app.resume(run_id)).output == "two notes"
