"""The small things a person expects of the `charter` command: inputs checked before a run exists,
the same options on the commands that go on with a run, --json where a script needs it, and wording."""

from __future__ import annotations

import json

import yaml

from .helpers import Workspace

ADD = """\
goal: Add 21
inputs: {n: 1}
steps:
  - id: double
    tool: add
    args: {a: "${inputs.n}", b: 21}
"""

GATED = """\
goal: One gated step
steps:
  - id: only
    tool: gated
    args: {name: only}
"""

APPROVAL = """\
goal: Ask first
steps:
  - id: ask
    approval: {message: "Go on?"}
  - id: after
    tool: echo
    args: {name: after}
    needs: [ask]
"""


def move_tools(ws: Workspace) -> str:
    """Move the tools file away, so a run can no longer load the tools it recorded."""
    moved = ws.root / "moved_tools.py"
    ws.tools.rename(moved)
    return str(moved)


# --- inputs ----------------------------------------------------------------------------------------


def test_an_input_of_the_wrong_type_is_refused_before_a_run_exists(ws: Workspace) -> None:
    plan = ws.write("add.yaml", ADD)
    res = ws("run", plan, "-t", ws.tools, "-i", "n=abc")
    assert res.rc == 2, res
    assert res.err.strip() == ("error: input n: \"abc\" does not fit steps[0].args.a of tool 'add': "
                               "Input should be a valid integer, unable to parse string as an integer"), res
    assert not (ws.root / "charter.db").exists()  # no store, no run

    ok = ws("run", plan, "-t", ws.tools, "-i", "n=21", "--json")
    assert ok.rc == 0 and json.loads(ok.out)["output"] == 42, ok


# --- the same options where a person expects them ------------------------------------------------------


def test_retry_loads_tools_from_where_they_are_now(ws: Workspace) -> None:
    plan = ws.write("gated.yaml", GATED)
    first = ws("run", plan, "-t", ws.tools)
    assert first.rc == 1, first
    run_id = ws.only_run_id()
    moved = move_tools(ws)
    (ws.root / "fixed.flag").write_text("")

    stale = ws("retry", run_id, "only")
    assert stale.rc == 2 and "tool file not found" in stale.err, stale
    res = ws("retry", run_id, "only", "--tools", moved)
    assert res.rc == 0, res
    assert ws.status(run_id) == "succeeded"


def test_approve_and_reject_load_tools_from_where_they_are_now(ws: Workspace) -> None:
    plan = ws.write("ask.yaml", APPROVAL)
    runs = []
    for _ in range(2):
        waiting = ws("run", plan, "-t", ws.tools)
        assert waiting.rc == 3, waiting
        runs.append(ws.runs()[0]["id"])
    moved = move_tools(ws)
    for run_id, decision, expected_rc, status in ((runs[0], "approve", 0, "succeeded"),
                                                  (runs[1], "reject", 1, "failed")):
        stale = ws(decision, run_id, "ask")
        assert stale.rc == 2 and "tool file not found" in stale.err, stale
        res = ws(decision, run_id, "ask", "-t", moved)
        assert res.rc == expected_rc, res
        assert ws.status(run_id) == status


def test_pause_and_cancel_answer_in_json(ws: Workspace) -> None:
    waiting = ws("run", ws.write("ask.yaml", APPROVAL), "-t", ws.tools)
    assert waiting.rc == 3, waiting
    run_id = ws.only_run_id()

    paused = ws("pause", run_id, "--json")
    assert paused.rc == 0, paused
    assert json.loads(paused.out) == {"id": run_id, "action": "pause", "confirmed": True, "status": "paused"}
    cancelled = ws("cancel", run_id, "--json", "--reason", "not needed")
    assert cancelled.rc == 0, cancelled
    assert json.loads(cancelled.out) == {"id": run_id, "action": "cancel", "confirmed": True,
                                         "status": "cancelled"}

    again = ws("cancel", run_id)
    assert again.rc == 2, again
    assert again.err.strip() == f"error: run {run_id} has already ended (cancelled)"


def test_validate_answers_in_json(ws: Workspace) -> None:
    good = ws("validate", ws.write("add.yaml", ADD), "-t", ws.tools, "--json")
    assert good.rc == 0, good
    assert json.loads(good.out) == {"plan": str(ws.root / "add.yaml"), "valid": True, "steps": ["double"],
                                    "write_steps": []}

    bad = ws("validate", ws.write("bad.yaml", ADD.replace("tool: add", "tool: nope")), "-t", ws.tools, "--json")
    assert bad.rc == 2, bad
    answer = json.loads(bad.out)
    assert answer["valid"] is False
    assert [p["where"] for p in answer["problems"]] == ["steps[0].tool"]
    assert answer["problems"][0]["message"].startswith("unknown tool 'nope'")


def test_tools_with_nothing_loaded_says_so(ws: Workspace) -> None:
    res = ws("tools")
    assert res.rc == 0, res
    assert res.out.strip() == ("no tools loaded: pass --tools FILE|MODULE, or list tools and MCP servers "
                               "in charter.yaml")
    assert json.loads(ws("tools", "--json").out) == []


# --- wording --------------------------------------------------------------------------------------------


def test_one_step_is_one_step(ws: Workspace) -> None:
    plan = ws.write("add.yaml", ADD)
    valid = ws("validate", plan, "-t", ws.tools)
    assert valid.out.strip() == f"✓ {plan}: 1 step, valid", valid
    ran = ws("run", plan, "-t", ws.tools)
    assert ran.rc == 0 and "(1 step)" in ran.out and "1 steps" not in ran.out, ran
    failed = ws("run", ws.write("gated.yaml", GATED), "-t", ws.tools)
    assert failed.rc == 1 and "0 of 1 step succeeded." in failed.out, failed


def test_a_saved_plan_leaves_out_what_is_left_at_its_default(ws: Workspace) -> None:
    answers = ws.write("answers.yaml", yaml.safe_dump([
        {"json": {"goal": "Greet", "steps": [{"id": "hello", "tool": "echo", "args": {"name": "hi"}},
                                             {"id": "last", "tool": "letters"}]}},
    ]))
    res = ws("plan", "Say hi", "-t", ws.tools, "--model", f"scripted:{answers}", "--save", "saved.yaml")
    assert res.rc == 0, res
    saved = (ws.root / "saved.yaml").read_text(encoding="utf-8")
    assert "''" not in saved and "[]" not in saved and "{}" not in saved, saved
    assert yaml.safe_load(saved) == {"goal": "Greet", "steps": [
        {"id": "hello", "tool": "echo", "args": {"name": "hi"}}, {"id": "last", "tool": "letters"}]}
    assert ws("validate", "saved.yaml", "-t", ws.tools).rc == 0
