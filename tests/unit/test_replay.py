"""Replays: a recorded run again with today's code, fed from its log, and what now differs."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from charter import (
    Charter,
    PermanentError,
    RetryableError,
    RetryPolicy,
    RunNotFoundError,
    RunStateError,
    ToolContext,
    tool,
)
from charter.cli.replay import print_replay
from charter.events import Event, StepStarted, StepSucceeded
from charter.replay import replay_run
from charter.testing import FakeClock, ScriptedModel

calls: list[tuple[str, Any]] = []
greeting = {"word": "hello"}
flaky = {"failures": 0}


@tool
def fetch(name: str) -> str:
    """Fetch a greeting for a name."""
    calls.append(("fetch", name))
    return f"{greeting['word']} {name}"


@tool
def names() -> list[str]:
    """The names to greet."""
    calls.append(("names", None))
    return ["ann", "bo"]


@tool(effect="write")
def send(text: Any, ctx: ToolContext) -> dict[str, Any]:
    """Send a text."""
    calls.append(("send", text))
    return {"sent": text, "key": ctx.idempotency_key}


@tool(retry=RetryPolicy(max_attempts=3, initial_interval=5))
def wobbly(x: int) -> int:
    """Fails once, then works."""
    calls.append(("wobbly", x))
    if flaky["failures"] < 1:
        flaky["failures"] += 1
        raise RetryableError("not yet")
    return x * 2


@tool
def broken(x: int) -> int:
    """Always fails for good."""
    calls.append(("broken", x))
    raise PermanentError("broken for good")


TOOLS = [fetch, names, send, wobbly, broken]

FAN_OUT = {"goal": "greet everyone", "steps": [
    {"id": "who", "tool": "names"},
    {"id": "greet", "tool": "fetch", "for_each": "${who}", "args": {"name": "${item}"}},
    {"id": "post", "tool": "send", "args": {"text": "${greet}"}},
]}


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    greeting["word"] = "hello"
    flaky["failures"] = 0


def app(db: Path, tools: list[Any] = TOOLS, model: ScriptedModel | None = None) -> Charter:
    a = Charter(db, tools=tools, clock=FakeClock(auto_advance=True), model=model)
    return a


async def recorded(db: Path, plan: dict[str, Any], model: ScriptedModel | None = None, **kw: Any) -> str:
    with app(db, model=model) as a:
        report = await a.run(plan, **kw)
    calls.clear()
    return report.id


async def test_an_unchanged_run_replays_without_divergence_and_calls_no_tool(db_path: Path) -> None:
    run_id = await recorded(db_path, FAN_OUT)
    with app(db_path) as a:
        before = await a.store.events(run_id)
        report = await a.replay(run_id)
        assert report.divergences == [] and report.exit_code == 0
        assert (report.recorded_status, report.replayed_status) == ("succeeded", "succeeded")
        assert (report.attempts, report.tool_results, report.writes_withheld) == (4, 4, 1)
        assert calls == []  # every result came from the log, the write's too
        assert await a.store.events(run_id) == before and len(await a.effects()) == 1  # nothing written here
        assert len(await a.runs()) == 1


async def test_live_reads_call_read_tools_and_never_a_write(db_path: Path) -> None:
    run_id = await recorded(db_path, FAN_OUT)
    with app(db_path) as a:
        report = await a.replay(run_id, live_reads=True)
    assert report.divergences == [] and report.live_calls == 3 and report.writes_withheld == 1
    assert sorted(calls) == [("fetch", "ann"), ("fetch", "bo"), ("names", None)]


async def test_a_changed_read_tool_makes_its_dependents_arguments_diverge(db_path: Path) -> None:
    run_id = await recorded(db_path, FAN_OUT)
    greeting["word"] = "hi"  # today's code of fetch returns something else
    with app(db_path) as a:
        fed = await a.replay(run_id)  # fed from the log: the change is not seen
        live = await a.replay(run_id, live_reads=True)
    assert fed.divergences == []
    assert live.exit_code == 1 and ("send", ["hi ann", "hi bo"]) not in calls
    kinds = [(d.kind, d.where) for d in live.divergences]
    assert kinds == [("output", "greet[0] attempt 1"), ("output", "greet[1] attempt 1"),
                     ("arguments", "post attempt 1")]  # post is answered from the log: the run ends alike
    args = live.divergences[2]
    assert args.recorded == {"text": ["hello ann", "hello bo"]} and args.replayed == {"text": ["hi ann", "hi bo"]}


async def test_a_retry_is_replayed_and_a_changed_retry_policy_is_reported(db_path: Path) -> None:
    plan = {"goal": "g", "steps": [{"id": "w", "tool": "wobbly", "args": {"x": 2}},
                                   {"id": "s", "tool": "send", "args": {"text": "${w}"}}]}
    run_id = await recorded(db_path, plan)
    with app(db_path) as a:
        same = await a.replay(run_id)
    assert same.divergences == [] and same.attempts == 3 and calls == []
    strict = dataclasses.replace(wobbly, retry=RetryPolicy(max_attempts=1))  # today: no retry
    with app(db_path, tools=[strict, send]) as a:
        report = await a.replay(run_id)
    assert [(d.kind, d.where) for d in report.divergences] == [
        ("retry", "w attempt 1"), ("not_run", "w attempt 2"), ("skipped", "s"), ("not_run", "s attempt 1"),
        ("end", "run")]
    assert report.divergences[0].recorded is True and report.divergences[0].replayed is False
    assert report.replayed_status == "failed" and calls == []


async def test_a_tool_the_log_recorded_as_a_write_is_never_called_though_today_it_is_a_read(db_path: Path) -> None:
    run_id = await recorded(db_path, FAN_OUT)
    now_read = dataclasses.replace(send, effect="read")  # effect="write" dropped from the tool since
    with app(db_path, tools=[fetch, names, now_read]) as a:
        fed = await a.replay(run_id)
        live = await a.replay(run_id, live_reads=True)
    for report in (fed, live):
        assert [(d.kind, d.where) for d in report.divergences] == [("effect", "post attempt 1")]
        assert "recorded write, now read" in report.divergences[0].message
        assert (report.divergences[0].recorded, report.divergences[0].replayed) == ("send: write", "send: read")
        assert report.writes_withheld == 1
    assert live.live_calls == 3 and sorted(calls) == [("fetch", "ann"), ("fetch", "bo"), ("names", None)]


LLM_PLAN = {"goal": "g", "steps": [
    {"id": "hello", "tool": "fetch", "args": {"name": "ann"}},
    {"id": "shout", "llm": {"prompt": "Shout this: ${hello}", "schema": {"type": "object"}}},
    {"id": "bad", "tool": "broken", "args": {"x": 1}},
    {"id": "post", "tool": "send", "args": {"text": "${shout}"}},
]}
REVISED = {"goal": "g", "steps": [
    {"id": "hello", "tool": "fetch", "args": {"name": "ann"}},
    {"id": "shout", "llm": {"prompt": "Shout this: ${hello}", "schema": {"type": "object"}}},
    {"id": "post", "tool": "send", "args": {"text": "${shout}"}},
]}


async def test_model_answers_through_a_retry_and_a_replan_are_fed_again(db_path: Path) -> None:
    # the first answer does not fit the schema (a retry), then the planner revises the plan once
    model = ScriptedModel(["not json", {"text": "HELLO ANN"}, REVISED])
    run_id = await recorded(db_path, LLM_PLAN, model=model, max_replans=1)
    with app(db_path) as a:
        report = await a.state(run_id)
        assert report.status == "succeeded" and report.plan_version == 2
        replayed = await a.replay(run_id)
    assert replayed.divergences == [] and replayed.model_answers == 3 and calls == []


async def test_a_replan_todays_code_does_not_make_is_reported_with_labelled_counts(db_path: Path) -> None:
    model = ScriptedModel(["not json", {"text": "HELLO ANN"}, REVISED])
    run_id = await recorded(db_path, LLM_PLAN, model=model, max_replans=1)
    fixed = dataclasses.replace(broken, fn=lambda x: x)  # today's broken works: no revised plan is asked for
    with app(db_path, tools=[fetch, fixed, send]) as a:
        report = await a.replay(run_id, live_reads=True)
    replan = [d for d in report.divergences if d.kind == "replan"]
    assert [(d.recorded, d.replayed) for d in replan] == [("1 revised plan(s)", "0 revised plan(s)")]


async def test_a_changed_prompt_is_reported_with_its_digest(db_path: Path) -> None:
    model = ScriptedModel(["not json", {"text": "HELLO ANN"}, REVISED])
    run_id = await recorded(db_path, LLM_PLAN, model=model, max_replans=1)
    greeting["word"] = "hey"  # the prompt is made of fetch's output: today's differs
    with app(db_path) as a:
        report = await a.replay(run_id, live_reads=True)
    requests = [d for d in report.divergences if d.kind == "model_request"]
    assert [d.where for d in requests] == ["shout attempt 1", "shout attempt 2", "run"]  # the planner's too
    assert "digest" in requests[0].message and "hello ann" in requests[0].recorded
    assert "hey ann" in requests[0].replayed
    assert report.exit_code == 1


async def test_no_provider_is_called_whatever_the_steps_name_or_charter_model_says(
        db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "answers.yaml"
    script.write_text("- Hello from the file\n")
    plan = {"goal": "g", "steps": [{"id": "say", "llm": {"prompt": "Say hello", "model": f"scripted:{script}"}}]}
    run_id = await recorded(db_path, plan)
    script.unlink()  # the model the step names is gone
    monkeypatch.setenv("CHARTER_MODEL", "openai:gpt-4o-mini")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with app(db_path) as a:
        report = await a.replay(run_id)
    assert report.divergences == [] and report.model_answers == 1


AGENT_PLAN = {"goal": "g", "steps": [
    {"id": "ask", "agent": {"prompt": "Greet ann and send it", "tools": ["fetch", "send"]}},
]}


async def test_an_agents_tool_calls_are_fed_from_the_log(db_path: Path) -> None:
    model = ScriptedModel([ScriptedModel.call("fetch", {"name": "ann"}), ScriptedModel.call("send", {"text": "hi"}),
                           "Done."])
    run_id = await recorded(db_path, AGENT_PLAN, model=model)
    with app(db_path) as a:
        report = await a.replay(run_id)
    assert report.divergences == [] and calls == []
    assert (report.model_answers, report.tool_results, report.writes_withheld) == (3, 2, 1)
    described = dataclasses.replace(fetch, description="Fetch a warm greeting.")  # what the model is shown changed
    with app(db_path, tools=[described, send]) as a:
        changed = await a.replay(run_id)
    assert [(d.kind, d.where) for d in changed.divergences] == [("model_request", "ask attempt 1")] * 3
    assert calls == []


async def test_an_agents_calls_of_read_tools_count_as_called_for_real(db_path: Path) -> None:
    model = ScriptedModel([ScriptedModel.call("fetch", {"name": "ann"}), ScriptedModel.call("send", {"text": "hi"}),
                           "Done."])
    run_id = await recorded(db_path, AGENT_PLAN, model=model)
    greeting["word"] = "hey"  # today's fetch answers otherwise: the agent's next request differs
    with app(db_path) as a:
        report = await a.replay(run_id, live_reads=True)
    assert calls == [("fetch", "ann")]
    assert [(d.kind, d.where) for d in report.divergences] == [("model_request", "ask attempt 1")] * 2
    assert (report.live_calls, report.tool_results, report.writes_withheld) == (1, 1, 1)
    shown = io.StringIO()
    print_replay(Console(file=shown, width=300), report)
    assert "1 tool result(s) fed from the log" in shown.getvalue()
    assert "1 read(s) called for real" in shown.getvalue()


async def test_an_agents_call_of_a_tool_the_log_recorded_as_a_write_is_never_made(db_path: Path) -> None:
    model = ScriptedModel([ScriptedModel.call("fetch", {"name": "ann"}), ScriptedModel.call("send", {"text": "hi"}),
                           "Done."])
    run_id = await recorded(db_path, AGENT_PLAN, model=model)
    with app(db_path, tools=[fetch, dataclasses.replace(send, effect="read")]) as a:
        report = await a.replay(run_id, live_reads=True)
    assert [(d.kind, d.where) for d in report.divergences] == [("effect", "ask attempt 1")]
    assert calls == [("fetch", "ann")] and report.writes_withheld == 1


APPROVAL_PLAN = {"goal": "g", "steps": [
    {"id": "hello", "tool": "fetch", "args": {"name": "ann"}},
    {"id": "ok", "approval": {"message": "Send ${hello}?"}},
    {"id": "post", "tool": "send", "args": {"text": "${hello}"}, "needs": ["ok"]},
]}


@pytest.mark.parametrize("approve", [True, False])
async def test_an_approval_is_replayed_with_the_recorded_decision(db_path: Path, approve: bool) -> None:
    with app(db_path) as a:
        run_id = await a.start(APPROVAL_PLAN)
        await a.drive()
        if approve:
            await a.approve(run_id, "ok", by="ann", note="fine")
        else:
            await a.reject(run_id, "ok", by="ann", reason="not now")
        await a.drive()
        status = (await a.report(run_id)).status
    calls.clear()
    with app(db_path) as a:
        report = await a.replay(run_id)
    assert report.divergences == [] and calls == []
    assert report.replayed_status == status == ("succeeded" if approve else "failed")
    assert report.writes_withheld == (1 if approve else 0)


async def test_bad_input(db_path: Path) -> None:
    await recorded(db_path, FAN_OUT)
    with app(db_path) as a, pytest.raises(RunNotFoundError):
        await a.replay("nope")
    with pytest.raises(RunStateError, match="no events"):
        await replay_run("r1", [], None)


# --- the comparison, on logs changed by hand (as if an older Charter had written them) ------------


async def log_of(db: Path, plan: dict[str, Any]) -> tuple[str, list[Event]]:
    run_id = await recorded(db, plan)
    with app(db) as a:
        return run_id, await a.store.events(run_id)


def registry() -> Any:
    from charter.app import make_registry

    return make_registry(TOOLS)


async def test_a_step_that_started_before_a_step_it_now_waits_for_is_reported(db_path: Path) -> None:
    run_id, events = await log_of(db_path, FAN_OUT)
    # in this log, post started before greet finished: its plan then did not make it wait
    post = next(i for i, e in enumerate(events) if isinstance(e, StepStarted) and e.step == "post")
    done = next(i for i, e in enumerate(events) if isinstance(e, StepSucceeded) and e.step == "greet" and e.item is None)
    events.insert(done, events.pop(post))
    report = await replay_run(run_id, events, registry())
    assert [(d.kind, d.where) for d in report.divergences] == [("order", "post")]
    assert "wait for greet" in report.divergences[0].message


async def test_a_log_that_stops_midway_says_where_the_replay_cannot_go_on(db_path: Path) -> None:
    run_id, events = await log_of(db_path, FAN_OUT)
    cut = next(i for i, e in enumerate(events) if isinstance(e, StepStarted) and e.step == "post")
    report = await replay_run(run_id, events[: cut + 1], registry())  # the process died while post ran
    assert [(d.kind, d.where) for d in report.divergences] == [("unrecorded", "post attempt 1")]
    assert "cannot go further" in report.divergences[0].message and calls == []
    assert json.loads(json.dumps(report.to_json()))["divergences"][0]["kind"] == "unrecorded"


async def test_a_plan_that_no_longer_compiles_is_reported(db_path: Path) -> None:
    run_id = await recorded(db_path, FAN_OUT)
    with app(db_path, tools=[fetch, send]) as a:  # today there is no tool called names
        report = await a.replay(run_id)
    assert [d.kind for d in report.divergences] == ["plan"] and "names" in report.divergences[0].message
    assert report.replayed_status == "not replayed" and report.exit_code == 1
    shown = io.StringIO()
    print_replay(Console(file=shown, width=200), report)  # each value says what it is, not a bare "1"
    assert "recorded: plan version 1: compiled when recorded" in shown.getvalue()
    assert "today:    plan version 1: does not compile: " in shown.getvalue()
