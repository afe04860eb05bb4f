"""Planning from the command line: `charter demo`, `plan`, `do`, `approve`, `reject`, against a real HTTP model server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.provider_server import ProviderServer, openai_reply, provider_server

from .helpers import Workspace

PLAN = {
    "goal": "Greet and record",
    "assumptions": ["greeting twice is fine"],
    "steps": [
        {"id": "hello", "title": "Say hello", "why": "to start", "tool": "echo", "args": {"name": "hello"}},
        {"id": "save", "why": "keep it", "tool": "write_file", "args": {"path": "out.txt", "text": "${hello}"}},
    ],
}
READ_ONLY = {"goal": "Just read", "steps": [{"id": "hello", "why": "w", "tool": "echo", "args": {"name": "hi"}}]}


@pytest.fixture
def model(ws: Workspace) -> Iterator[ProviderServer]:
    """An OpenAI-compatible server on loopback, chosen through CHARTER_MODEL."""
    with provider_server() as server:
        ws.env.update({"CHARTER_MODEL": "compat:planner", "CHARTER_BASE_URL": server.url + "/v1"})
        yield server


def events(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    res = ws("show", run_id, "--json", "--events")
    assert res.rc == 0, res
    return json.loads(res.out)["events"]


def test_the_demo_runs_offline_end_to_end(ws: Workspace) -> None:
    del ws.env["COLUMNS"]  # as in a pipe: no terminal, no width given
    res = ws("demo", "--dir", ws.root / "demo", timeout=120)
    assert res.rc == 0, res
    assert "SCRIPTED" in res.out and "Plan for run" in res.out and "⚠ WRITE" in res.out
    report = (ws.root / "demo" / "action-items.md").read_text()
    assert "8 open action items across 4 notes: Bo has 3, Ana has 2, Chidi has 1." in report
    assert "**Ana** <ana@example.com>: write the rollback runbook for billing" in report
    run_id = res.out.split("Plan for run ")[1].split(":")[0]
    hint = f"charter show {run_id} --db {ws.root / 'demo' / 'charter.db'}"
    assert hint in res.out.splitlines()[-1], res.out  # one line, to copy, even in a pipe
    shown = ws("show", run_id, "--json", "--events", db=False, cwd=ws.root / "demo")
    assert shown.rc == 0, shown
    data = json.loads(shown.out)
    steps = {s["id"]: s for s in data["steps"]}
    assert data["status"] == "succeeded"
    assert [a["outcome"] for a in steps["team"]["attempts"]] == ["failed", "succeeded"]  # the transient failure, retried
    assert len(steps["extract"]["items"]) == 4
    kinds = [e["type"] for e in data["events"]]
    assert kinds.count("ModelCalled") == 2  # the plan and the summary, each paid once
    assert kinds.index("PlanApproved") < kinds.index("StepStarted")


def test_do_with_yes_plans_and_runs(ws: Workspace, model: ProviderServer) -> None:
    model.reply(openai_reply(json.dumps(PLAN)))
    res = ws("do", "Say hello and write it down", "-t", ws.tools, "--yes")
    assert res.rc == 0, res
    assert (ws.root / "out.txt").read_text().startswith("hello")
    [req] = model.received
    system = req.body["messages"][0]["content"]
    assert '"name": "echo"' in system and '"effect": "write"' in system
    assert req.body["messages"][1]["content"] == "Say hello and write it down"
    run_id = ws.only_run_id()
    evs = events(ws, run_id)
    assert [e["type"] for e in evs[:3]] == ["RunCreated", "ModelCalled", "PlanApproved"]
    assert evs[0]["request"] == "Say hello and write it down" and evs[2]["by"] == "--yes"


def test_without_a_terminal_the_run_waits_for_review(ws: Workspace, model: ProviderServer) -> None:
    model.reply(openai_reply(json.dumps(PLAN)), openai_reply(json.dumps(PLAN)))
    res = ws("do", "Say hello", "-t", ws.tools)
    assert res.rc == 3, res
    assert "waits for review" in res.out
    first = ws.only_run_id()
    assert ws.status(first) == "created" and ws.calls() == []
    approved = ws("approve", first)
    assert approved.rc == 0, approved
    assert ws.status(first) == "succeeded"

    res = ws("do", "Say hello again", "-t", ws.tools)
    assert res.rc == 3, res
    second = next(r["id"] for r in ws.runs() if r["id"] != first)
    rejected = ws("reject", second, "--reason", "not today")
    assert rejected.rc == 0 and ws.status(second) == "rejected"
    assert [e["type"] for e in events(ws, second)][-1] == "PlanRejected"
    assert ws.calls(run=second) == []  # nothing ran
    again = ws("approve", second)
    assert again.rc == 2 and "not waiting for its plan to be reviewed" in again.err


def test_a_policy_can_approve_plans_that_only_read(ws: Workspace, model: ProviderServer) -> None:
    model.reply(openai_reply(json.dumps(READ_ONLY)), openai_reply(json.dumps(PLAN)))
    res = ws("do", "Read only", "-t", ws.tools, "--auto-approve", "reads")
    assert res.rc == 0 and "approved by policy" in res.out, res
    res = ws("do", "Write too", "-t", ws.tools, "--auto-approve", "reads")
    assert res.rc == 3, res  # a write step still needs a person


def test_a_model_that_cannot_plan_fails_clearly_and_creates_no_run(ws: Workspace, model: ProviderServer) -> None:
    bad = {"goal": "g", "steps": [{"id": "a", "why": "w", "tool": "teleport", "args": {}}]}
    model.reply(*(openai_reply(json.dumps(bad)) for _ in range(4)))
    res = ws("do", "Go to the moon", "-t", ws.tools, "--yes")
    assert res.rc == 2, res
    assert "no usable plan after 4 answer(s)" in res.err and "unknown tool 'teleport'" in res.err
    assert len(model.received) == 4
    assert not Path(ws.db).exists() or ws.runs() == []


def test_plan_shows_and_saves_a_plan_that_run_accepts(ws: Workspace, model: ProviderServer) -> None:
    model.reply(openai_reply("```json\n" + json.dumps(PLAN) + "\n```"))
    res = ws("plan", "Say hello", "-t", ws.tools, "--save", "saved.yaml")
    assert res.rc == 0, res
    assert "hello" in res.out and "⚠ WRITE" in res.out and "greeting twice is fine" in res.out
    assert ws.runs() == [] if Path(ws.db).exists() else True
    ran = ws("run", "saved.yaml", "-t", ws.tools)
    assert ran.rc == 0, ran
    again = ws("plan", "Say hello", "-t", ws.tools, "--save", ws.tools)  # a slip that would lose the tools file
    assert again.rc == 2 and "exists: give --save a new file" in again.err, again
    assert "@tool" in Path(ws.tools).read_text(encoding="utf-8") and len(model.received) == 1  # not even asked


def test_no_model_no_planning(ws: Workspace) -> None:
    res = ws("do", "anything", "-t", ws.tools, "--yes")
    assert res.rc == 2 and "no model chosen" in res.err, res


def test_resume_with_tools_that_moved(ws: Workspace) -> None:
    plan = ws.write("p.json", json.dumps({"goal": "g", "steps": [
        {"id": "a", "tool": "echo", "args": {"name": "a"}},
        {"id": "ok", "approval": {"message": "go on?"}},
        {"id": "b", "tool": "echo", "args": {"name": "b"}, "needs": ["ok", "a"]},
    ]}))
    res = ws("run", plan, "-t", ws.tools)
    assert res.rc == 3, res
    run_id = ws.only_run_id()
    moved = ws.root / "moved_tools.py"
    ws.tools.rename(moved)
    res = ws("resume", run_id)
    assert res.rc == 2 and "tool file not found" in res.err, res
    res = ws("resume", run_id, "-t", moved)
    assert res.rc == 3 and "waits for a decision on ok" in res.out, res  # loaded, and still waiting for a person
