"""Replanning: a failure for good leads to a revised plan of the rest; finished steps are kept; writes go to review."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from charter import Charter, PermanentError, RetryableError, RunStateError, tool
from charter.engine import control
from charter.events import ModelCalled, PlanRevised, ReplanRequested
from charter.plan import Plan
from charter.testing import FakeClock, ScriptedModel, assert_events_in_order

ran: list[str] = []


@tool
def fetch(source: str) -> str:
    """Fetch a document from a source."""
    ran.append(f"fetch {source}")
    if source == "primary":
        raise PermanentError("primary is gone")
    return f"doc from {source}"


@tool
def count_words(text: str) -> int:
    """Count words."""
    ran.append("count")
    return len(text.split())


@tool
def exists(path: str) -> bool:
    """Whether a file exists."""
    ran.append(f"exists {path}")
    return False


@tool(effect="write")
def publish(text: str) -> str:
    """Publish a text."""
    ran.append("publish")
    return "published"


ORIGINAL: dict[str, Any] = {"goal": "count the words of the document", "steps": [
    {"id": "start", "tool": "count_words", "args": {"text": "warm up"}},
    {"id": "get", "tool": "fetch", "args": {"source": "primary"}},
    {"id": "count", "tool": "count_words", "args": {"text": "${get}"}},
]}
REVISED = {"goal": "count the words of the document", "assumptions": ["the mirror has the same document"], "steps": [
    {"id": "start", "why": "kept", "tool": "count_words", "args": {"text": "warm up"}},
    {"id": "get_mirror", "why": "primary is gone", "tool": "fetch", "args": {"source": "mirror"}},
    {"id": "count", "why": "the goal", "tool": "count_words", "args": {"text": "${get_mirror}"}},
]}


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def make(db: Path, model: ScriptedModel) -> Charter:
    app = Charter(db, tools=[fetch, count_words, exists, publish], clock=FakeClock(auto_advance=True))
    app.engine().model = model
    return app


async def run(app: Charter, plan: dict[str, Any], max_replans: int) -> Any:
    engine = app.engine()
    run_id = await engine.create(Plan.from_dict(plan, app.registry), app.registry, max_replans=max_replans, request="count it")
    await engine.run_until_settled()
    return await app.report(run_id)


async def test_a_failure_for_good_is_replanned_and_finished_steps_are_kept(db_path: Path) -> None:
    model = ScriptedModel([REVISED])
    report = await run(make(db_path, model), ORIGINAL, max_replans=1)
    assert report.status == "succeeded" and report.output == {"start": 2, "count": 3}  # "doc from mirror"
    assert ran == ["count", "fetch primary", "fetch mirror", "count"]  # start ran once; the failed path was replaced
    assert report.plan_version == 2 and [s.id for s in report.steps] == ["start", "get_mirror", "count"]
    [ask] = model.requests
    context = ask.messages[-1].content
    assert "The request was: count it" in context and "- start: 2" in context
    assert "Step get failed for good: primary is gone" in context and "Step count did not run (get failed)." in context
    revised = next(e for e in report.events if isinstance(e, PlanRevised))
    assert "-  tool: fetch" not in revised.diff and "+- id: get_mirror" in revised.diff and not revised.needs_review
    assert_events_in_order(report.events, ["ReplanRequested", "ModelCalled", "PlanRevised", "RunSucceeded"])


async def test_replans_are_bounded(db_path: Path) -> None:
    still_broken = {**ORIGINAL, "steps": [*ORIGINAL["steps"][:1], {**ORIGINAL["steps"][1], "why": "again"},
                                          ORIGINAL["steps"][2]]}
    model = ScriptedModel([still_broken, still_broken])
    report = await run(make(db_path, model), ORIGINAL, max_replans=2)
    assert report.status == "failed" and report.plan_version == 3
    assert sum(isinstance(e, ReplanRequested) for e in report.events) == 2
    assert ran.count("fetch primary") == 3 and ran.count("count") == 1


async def test_a_revision_that_adds_writes_goes_back_to_review(db_path: Path) -> None:
    with_write = {**REVISED, "steps": [*REVISED["steps"], {"id": "pub", "why": "share", "tool": "publish",
                                                            "args": {"text": "words: ${count}"}}]}
    app = make(db_path, ScriptedModel([with_write]))
    report = await run(app, ORIGINAL, max_replans=1)
    assert report.status == "created" and "needs review" in report.reason
    assert "publish" not in ran
    await app.engine().control(report.id, control.ApprovePlan())
    await app.engine().run_until_settled()
    final = await app.report(report.id)
    assert final.status == "succeeded" and ran[-1] == "publish"


async def test_a_failed_assumption_check_leads_to_a_replan(db_path: Path) -> None:
    plan = {"goal": "g", "steps": [
        {"id": "has_config", "tool": "exists", "args": {"path": "config.toml"}, "check": "config.toml exists"},
        {"id": "go", "tool": "count_words", "args": {"text": "use the config"}, "needs": ["has_config"]},
    ]}
    revised = {"goal": "g", "steps": [{"id": "go_default", "why": "no config", "tool": "count_words",
                                       "args": {"text": "defaults"}}]}
    model = ScriptedModel([revised])
    report = await run(make(db_path, model), plan, max_replans=1)
    assert report.status == "succeeded" and report.output == 1
    assert "assumption does not hold: config.toml exists (exists returned False)" in model.requests[0].messages[-1].content


async def test_no_model_means_the_run_fails_with_both_reasons(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARTER_MODEL", raising=False)
    app = Charter(db_path, tools=[fetch, count_words], clock=FakeClock(auto_advance=True))
    report = await run(app, ORIGINAL, max_replans=1)
    assert report.status == "failed"
    assert report.reason.startswith("1 step(s) failed (get), 1 skipped; no revised plan:") and "no model chosen" in report.reason
    assert not any(isinstance(e, ModelCalled) for e in report.events)


posted: list[str] = []


@tool(effect="write")
def post(channel: str, text: str) -> bool:
    """Post a text to a channel; says whether the channel took it."""
    if channel == "closed":
        raise PermanentError("channel closed refuses posts")
    posted.append(channel)
    return channel != "archived"


@tool
def channels(names: list[str]) -> list[str]:
    """The channels to post to."""
    return names


async def _revised_and_approved(db: Path, plan: dict[str, Any], revised: dict[str, Any]) -> Any:
    posted.clear()
    app = Charter(db, tools=[post, channels], clock=FakeClock(auto_advance=True))
    app.engine().model = ScriptedModel([revised])
    first = await run(app, plan, max_replans=1)
    assert first.status == "created" and first.plan_version == 2  # a changed write goes back to review
    await app.engine().control(first.id, control.ApprovePlan())
    await app.engine().run_until_settled()
    return app, await app.report(first.id)


async def test_a_revised_write_with_new_arguments_is_a_new_effect(db_path: Path) -> None:
    plan = {"goal": "announce", "steps": [{"id": "pub", "tool": "post", "check": "the channel took it",
                                           "args": {"channel": "archived", "text": "hello"}}]}
    revised = {"goal": "announce", "steps": [{"id": "pub", "why": "archived takes nothing", "tool": "post",
                                              "args": {"channel": "general", "text": "hello"}}]}
    app, report = await _revised_and_approved(db_path, plan, revised)
    assert posted == ["archived", "general"]  # the approved v2 call was made, once
    assert report.status == "succeeded" and report.output is True
    effects = await app.effects(report.id)
    assert [(e.key.removeprefix(report.id), e.target) for e in effects] == [("/pub", []), ("/pub@v2", [])]


async def test_for_each_writes_are_neither_skipped_nor_repeated_across_a_revision(db_path: Path) -> None:
    plan = {"goal": "announce", "inputs": {"to": ["a", "closed", "b"]}, "steps": [
        {"id": "pub", "tool": "post", "for_each": "${inputs.to}", "args": {"channel": "${item}", "text": "hi"}}]}
    revised = {"goal": "announce", "steps": [
        {"id": "which", "why": "closed refuses", "tool": "channels", "args": {"names": ["c", "a", "d", "b"]}},
        {"id": "pub", "why": "a and b moved, c and d are new", "tool": "post", "for_each": "${which}",
         "args": {"channel": "${item}", "text": "hi"}}]}
    app, report = await _revised_and_approved(db_path, plan, revised)
    assert report.status == "succeeded"
    assert sorted(posted) == ["a", "b", "c", "d"]  # a and b not again (they moved), c and d once (not skipped)
    keys = {e.key.removeprefix(report.id): e.result for e in await app.effects(report.id)}
    assert keys == {"/pub/0": True, "/pub/2": True, "/pub/0@v2": True, "/pub/2@v2": True}


async def test_an_unchanged_write_keeps_its_key_and_is_not_repeated(db_path: Path) -> None:
    plan = {"goal": "announce", "steps": [
        {"id": "pub", "tool": "post", "args": {"channel": "general", "text": "hi"}},
        {"id": "bad", "tool": "post", "args": {"channel": "closed", "text": "${pub}"}, "needs": ["pub"]}]}
    revised = {"goal": "announce", "steps": [
        {"id": "pub", "why": "as before", "tool": "post", "args": {"channel": "general", "text": "hi"}},
        {"id": "other", "why": "closed refuses", "tool": "post", "args": {"channel": "news", "text": "hi"}}]}
    app, report = await _revised_and_approved(db_path, plan, revised)
    assert report.status == "succeeded" and posted == ["general", "news"]
    assert [e.key.removeprefix(report.id) for e in await app.effects(report.id)] == ["/pub", "/other"]


async def test_a_transient_model_error_during_replanning_is_retried(db_path: Path) -> None:
    model = ScriptedModel([RetryableError("compat answered 503", next_retry_delay=0), REVISED])
    report = await run(make(db_path, model), ORIGINAL, max_replans=1)
    assert report.status == "succeeded" and report.plan_version == 2
    assert len(model.requests) == 2  # the 503, then the revision


async def test_when_no_revision_is_left_the_reason_says_so(db_path: Path) -> None:
    still_broken = {**ORIGINAL, "steps": [*ORIGINAL["steps"][:1], {**ORIGINAL["steps"][1], "why": "again"},
                                          ORIGINAL["steps"][2]]}
    report = await run(make(db_path, ScriptedModel([still_broken])), ORIGINAL, max_replans=1)
    assert report.status == "failed"
    assert report.reason == ("1 step(s) failed (get), 1 skipped; no revision left: "
                             "the plan was revised 1 time(s), the most this run allows")


async def test_a_person_saying_no_is_not_planned_around(db_path: Path) -> None:
    gated = {"goal": "publish the count", "steps": [
        {"id": "ok", "approval": {"message": "publish?"}},
        {"id": "out", "tool": "publish", "args": {"text": "42"}, "needs": ["ok"]},
    ]}
    model = ScriptedModel([{**gated, "steps": gated["steps"][1:]}])  # a revision that would skip the question
    app = make(db_path, model)
    report = await run(app, gated, max_replans=2)
    assert report.status == "awaiting"
    assert await app.reject(report.id, "ok", by="ana", reason="not today") == "done"
    report = await app.resume(report.id)
    assert report.status == "failed" and ran == []
    assert "ok rejected by a person, so the plan is not revised" in report.reason
    assert model.requests == [] and not any(isinstance(e, ReplanRequested) for e in report.events)


async def test_a_decision_on_a_step_the_plan_lacks_names_it_whole(db_path: Path) -> None:
    app = make(db_path, ScriptedModel([]))
    report = await run(app, {"goal": "g", "steps": [{"id": "ok", "approval": {"message": "go?"}}]}, max_replans=0)
    with pytest.raises(RunStateError, match=r"has no step 'nosuch'$"):
        await app.approve(report.id, "nosuch")
