"""Replanning: a failure for good leads to a revised plan of the rest; finished steps are kept; writes go to review."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from charter import Charter, PermanentError, tool
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
    state = engine.create(Plan.from_dict(plan, app.registry), app.registry, max_replans=max_replans, request="count it")
    await engine.run_until_settled()
    return app.report(state.run_id)


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
    app.engine().approve(report.id)
    await app.engine().run_until_settled()
    final = app.report(report.id)
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
