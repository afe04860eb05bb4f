"""Replanning through the command line, with a model on a loopback HTTP server: retried, reviewed, shown."""

from __future__ import annotations

import json

import yaml

from tests.provider_server import Reply, openai_reply, provider_server

from .helpers import Workspace

PLAN = {"goal": "Add and record", "steps": [
    {"id": "zero", "why": "a sum that must be positive", "tool": "add", "args": {"a": 0, "b": 0},
     "check": "the sum is positive"},
    {"id": "save", "why": "keep it", "tool": "write_file", "args": {"path": "out.txt", "text": "sum ${zero}"}},
]}
REVISED = {"goal": "Add and record", "steps": [
    {"id": "one", "why": "zero was not positive", "tool": "add", "args": {"a": 1, "b": 1}},
    {"id": "save", "why": "keep it", "tool": "write_file", "args": {"path": "out.txt", "text": "sum ${one}"}},
]}


def test_a_replan_survives_a_503_goes_to_review_and_show_tells_the_whole_story(ws: Workspace) -> None:
    plan = ws.write("plan.yaml", yaml.safe_dump(PLAN))
    with provider_server() as server:
        ws.env.update({"CHARTER_MODEL": "compat:planner", "CHARTER_BASE_URL": server.url + "/v1"})
        server.reply(Reply(503, {"error": {"message": "overloaded"}}, {"retry-after": "0"}),
                     openai_reply(json.dumps(REVISED)))
        res = ws("run", plan, "-t", ws.tools, "--replan", "1")
        assert res.rc == 3, res  # the revision writes: it waits for review
        assert len(server.received) == 2  # the 503 was retried, as in first-time planning
    run_id = ws.only_run_id()
    assert ws.status(run_id) == "created" and ws.calls() == []
    approved = ws("approve", run_id)
    assert approved.rc == 0, approved
    assert (ws.root / "out.txt").read_text().startswith("sum 2")

    shown = ws("show", run_id)
    assert shown.rc == 0, shown
    text = shown.out
    assert "plan versions: 2 (v2 is the current one)" in text
    assert "v1 · approved by plan file" in text
    assert "failed: zero (assumption does not hold: the sum is positive" in text
    assert "skipped: save" in text
    assert "v2 by planner because 1 step(s) failed (zero), 1 skipped · approved by" in text
    assert "+- id: one" in text and "-- id: zero" in text  # the diff, in plain `show`
    data = json.loads(ws("show", run_id, "--json").out)
    assert [(v["number"], v["by"]) for v in data["versions"]] == [(1, ""), (2, "planner")]
    assert data["versions"][0]["ended"][0]["step"] == "zero"
    full = ws("show", run_id, "--events")
    revised = next(line for line in full.out.splitlines() if "PlanRevised" in line)
    assert len(revised) > 300 and '"needs_review": true' in full.out  # events are not cut


def test_a_plan_approval_keeps_who_and_what_they_said(ws: Workspace) -> None:
    with provider_server() as server:
        ws.env.update({"CHARTER_MODEL": "compat:planner", "CHARTER_BASE_URL": server.url + "/v1"})
        server.reply(openai_reply(json.dumps(REVISED)))
        res = ws("do", "Add one and one, and record it", "-t", ws.tools)
        assert res.rc == 3, res  # no terminal: it waits for review
    run_id = ws.only_run_id()
    waiting = ws("show", run_id)
    assert f"waits for review: charter approve {run_id} or charter reject {run_id} --reason" in waiting.out
    approved = ws("approve", run_id, "--comment", "looks fine")
    assert approved.rc == 0, approved
    [version] = json.loads(ws("show", run_id, "--json").out)["versions"]
    assert version["approval_note"] == "looks fine" and version["approved_by"] not in ("", "user")
    assert f"plan: v1 by planner · approved by {version['approved_by']}: looks fine" in ws("show", run_id).out
