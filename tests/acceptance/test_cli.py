"""Acceptance tests: the `charter` command, driven in subprocesses as a person would.

Each test works in its own folder (``ws``: a store, plans and a tools file whose
tools log every call to ``calls.log``). Background runs are stopped by the
test; states are awaited by polling with a deadline, never by fixed sleeps.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
from pathlib import Path

import pytest

from .helpers import Proc, Workspace, step, wait_until

REPO = Path(__file__).resolve().parents[2]
NOTES = REPO / "examples" / "notes"

MIXED = """\
goal: A plan with a failing branch, a flaky branch and a plain one
assumptions:
  - fixed.flag decides whether the gated step works
steps:
  - id: root
    title: Start
    why: Everything hangs off this step.
    tool: echo
    args: {name: root}
  - id: bad
    title: The gated step
    why: It needs fixed.flag.
    tool: gated
    args: {name: bad}
    needs: [root]
  - id: after_bad
    tool: echo
    args: {name: after_bad, value: "${bad}"}
  - id: after_after
    tool: echo
    args: {name: after_after, value: "${after_bad}"}
  - id: side
    title: Flaky but fine
    why: It fails twice, then works.
    tool: flaky
    args: {name: side, fails: 2}
    needs: [root]
  - id: after_side
    tool: echo
    args: {name: after_side, value: "${side}"}
"""

HELD = """\
goal: Wait at a gate
steps:
  - id: first
    tool: echo
    args: {name: first}
  - id: wait
    tool: hold
    args: {name: wait}
    needs: [first]
  - id: last
    tool: echo
    args: {name: last, value: "${wait}"}
"""

HELD_SYNC = HELD.replace("tool: hold", "tool: block")

SIMPLE = """\
goal: Add two numbers
inputs:
  a: 1
  b: 2
steps:
  - id: sum
    tool: add
    args: {a: "${inputs.a}", b: "${inputs.b}"}
"""

RUN_ID = re.compile(r"\brun ([0-9a-f]{12})\b")


def copy_notes(ws: Workspace) -> None:
    """The notes example, where its plan expects it (examples/notes, relative to the working folder)."""
    shutil.copytree(NOTES, ws.root / "examples" / "notes")


def start_held(ws: Workspace, *extra: str, plan_text: str = HELD) -> tuple[Proc, str]:
    """Start a run of HELD and wait until its `wait` step is executing; returns the process and run id."""
    ws.write("gate", "closed")
    plan = ws.write("held.yaml", plan_text)
    proc = ws.start("run", plan, "--tools", ws.tools, *extra)

    def executing() -> bool:
        if not proc.alive():
            raise AssertionError(f"charter run exited early\n{proc.result()}")
        return bool(ws.calls("wait"))

    wait_until(executing, what="the `wait` step to start")
    run_id = ws.only_run_id()
    assert ws.status(run_id) == "running"
    return proc, run_id


def outcomes(s: dict) -> list[str]:
    return [a["outcome"] for a in s["attempts"]]


# --- charter run ------------------------------------------------------------------------


def test_run_notes_example_writes_the_report(ws: Workspace) -> None:
    copy_notes(ws)
    res = ws("run", "examples/notes/plan.yaml", "--tools", "examples/notes/tools.py")
    assert res.rc == 0, res
    run_id = ws.only_run_id()
    printed = RUN_ID.search(res.out)
    assert printed is not None and printed.group(1) == run_id, res
    assert f"run {run_id} succeeded" in res.out

    report = (ws.root / "action-items.md").read_text(encoding="utf-8")
    assert report.startswith("# Open action items\n")
    for owner in ("Ana", "Bo", "Chidi", "unassigned"):
        assert f"## {owner}\n" in report
    for task in (
        "- [ ] write the rollback runbook for billing (Standup, 2 November)",
        "- [ ] ask finance which invoices failed on Monday (Standup, 2 November)",
        "- [ ] draft the export API and circulate it by Friday (Planning, 9 November)",
        "- [ ] confirm the holiday support rota (Planning, 9 November)",
        "- [ ] add alerting on failed invoice runs (Retro, 16 November)",
        "- [ ] book the room for the retro (Standup, 2 November)",
        "- [ ] move the retro notes into the wiki (Retro, 16 November)",
    ):
        assert task in report
    assert report.count("- [ ] ") == 8
    assert "rotate the staging database password" not in report  # done items are not open
    assert f"<!-- charter:{run_id}/report -->" in report

    runs = ws.runs()
    assert runs[0]["status"] == "succeeded"
    assert runs[0]["steps_done"] == runs[0]["steps_total"] == 3
    shown = ws.show(run_id)
    assert shown["output"]["actions"] == 8
    assert [i["status"] for i in step(shown, "extract")["items"]] == ["succeeded"] * 4


def test_run_with_inputs(ws: Workspace) -> None:
    copy_notes(ws)
    ws.write("mine/meeting.md", "# Sync, 1 December\n\n- [ ] Dana: buy cake\nTODO: water the plants\n")
    res = ws("run", "examples/notes/plan.yaml", "--tools", "examples/notes/tools.py",
             "--input", "folder=mine", "--input", "report=mine-report.md")
    assert res.rc == 0, res
    assert not (ws.root / "action-items.md").exists()
    report = (ws.root / "mine-report.md").read_text(encoding="utf-8")
    assert "## Dana\n- [ ] buy cake (Sync, 1 December)" in report
    assert "- [ ] water the plants (Sync, 1 December)" in report
    assert report.count("- [ ] ") == 2
    shown = ws.show(ws.only_run_id())
    assert shown["inputs"] == {"folder": "mine", "report": "mine-report.md"}


def test_input_values_are_parsed_as_yaml_scalars(ws: Workspace) -> None:
    plan = ws.write("simple.yaml", SIMPLE)
    res = ws("run", plan, "--tools", ws.tools, "--input", "a=40", "--json")
    assert res.rc == 0, res
    report = json.loads(res.out)
    assert report["status"] == "succeeded"
    assert report["output"] == 42
    assert report["inputs"] == {"a": 40, "b": 2}


@pytest.mark.parametrize(
    ("arg", "message"),
    [("nope=1", "unknown input(s) nope"), ("novalue", "--input wants NAME=VALUE")],
)
def test_bad_input_is_rejected_and_nothing_is_stored(ws: Workspace, arg: str, message: str) -> None:
    plan = ws.write("simple.yaml", SIMPLE)
    res = ws("run", plan, "--tools", ws.tools, "--input", arg)
    assert res.rc == 2, res
    assert message in res.err
    assert "Traceback" not in res.err
    assert ws.runs() == []


# --- charter runs / show ---------------------------------------------------------------------


def test_runs_lists_runs_as_table_and_json(ws: Workspace) -> None:
    none = ws("runs")  # no store yet: reading creates none
    assert none.rc == 2 and f"no store at {ws.db}" in none.err, none
    assert not Path(ws.db).exists()

    ok = ws("run", ws.write("simple.yaml", SIMPLE), "--tools", ws.tools)
    assert ok.rc == 0, ok
    failing = ws("run", ws.write("mixed.yaml", MIXED), "--tools", ws.tools)
    assert failing.rc == 1, failing

    runs = ws.runs()
    assert [r["status"] for r in runs] == ["failed", "succeeded"]  # newest first
    newest, oldest = runs
    assert newest["goal"].startswith("A plan with a failing branch")
    assert (newest["steps_done"], newest["steps_total"]) == (6, 6)
    assert (oldest["steps_done"], oldest["steps_total"]) == (1, 1)
    assert "bad" in newest["reason"]
    assert oldest["finished_at"] is not None and oldest["parent_run"] is None

    table = ws("runs")
    assert table.rc == 0, table
    assert re.search(rf"^{newest['id']}\s+failed\s+6/6\b", table.out, re.M), table
    assert re.search(rf"^{oldest['id']}\s+succeeded\s+1/1\b", table.out, re.M), table

    limited = ws("runs", "--json", "--limit", "1")
    assert [r["id"] for r in json.loads(limited.out)] == [newest["id"]]


def test_show_tells_steps_attempts_args_output_error_and_why(ws: Workspace) -> None:
    res = ws("run", ws.write("mixed.yaml", MIXED), "--tools", ws.tools)
    assert res.rc == 1, res
    run_id = ws.only_run_id()

    shown = ws.show(run_id)
    assert shown["id"] == run_id
    assert shown["status"] == "failed"
    assert shown["assumptions"] == ["fixed.flag decides whether the gated step works"]
    assert [s["id"] for s in shown["steps"]] == ["root", "bad", "after_bad", "after_after", "side", "after_side"]

    root = step(shown, "root")
    assert (root["title"], root["why"]) == ("Start", "Everything hangs off this step.")
    assert root["args"] == {"name": "root"}
    assert root["output"] == "root"
    assert outcomes(root) == ["succeeded"]

    bad = step(shown, "bad")
    assert bad["status"] == "failed"
    assert bad["error"]["type"] == "PermanentError"
    assert bad["error"]["message"] == "bad: fixed.flag is missing"
    assert bad["error"]["retryable"] is False
    assert outcomes(bad) == ["failed"]

    after_bad = step(shown, "after_bad")
    assert after_bad["status"] == "skipped"
    assert after_bad["reason"] == "bad failed"
    assert after_bad["attempts"] == []

    after_side = step(shown, "after_side")
    assert after_side["args"] == {"name": "after_side", "value": "side"}  # the reference, resolved
    assert after_side["output"] == {"name": "after_side", "value": "side"}

    plain = ws("show", run_id[:6])  # a unique prefix is enough
    assert plain.rc == 0, plain
    out = plain.out
    assert f"run {run_id} · failed" in out
    assert "goal: A plan with a failing branch, a flaky branch and a plain one" in out
    assert "why: Everything hangs off this step." in out
    assert "The gated step" in out
    assert 'args: {"name": "bad"}' in out
    assert "output: root" in out
    assert "error: PermanentError: bad: fixed.flag is missing" in out
    assert "skipped: bad failed" in out
    assert re.search(r"^✓ side\s+flaky\s+succeeded.*3 attempts", out, re.M), out

    events = ws("show", run_id, "--json", "--events")
    types = [e["type"] for e in json.loads(events.out)["events"]]
    assert types[0] == "RunCreated" and types[-1] == "RunFailed"


def test_unknown_run_id_is_a_clear_error(ws: Workspace) -> None:
    assert ws("run", ws.write("simple.yaml", SIMPLE), "--tools", ws.tools).rc == 0
    for args in (("show", "feedc0ffee00"), ("show", "feedc0ffee00", "--json"), ("resume", "feedc0ffee00"),
                 ("pause", "feedc0ffee00"), ("cancel", "feedc0ffee00"), ("retry", "feedc0ffee00", "x"),
                 ("rerun", "feedc0ffee00", "--from", "x")):
        res = ws(*args)
        assert res.rc == 2, (args, res)
        assert "no run 'feedc0ffee00'" in res.err, (args, res)
        assert "Traceback" not in res.err, (args, res)


# --- failures and retries --------------------------------------------------------------------


def test_failing_plan_exits_1_and_reports_what_failed(ws: Workspace) -> None:
    res = ws("run", ws.write("mixed.yaml", MIXED), "--tools", ws.tools)
    assert res.rc == 1, res
    run_id = ws.only_run_id()
    out = res.out
    assert f"run {run_id} failed" in out
    assert "1 step(s) failed (bad), 2 skipped" in out
    assert re.search(r"^bad\s+failed\s+1\s+PermanentError: bad: fixed\.flag is missing\s*$", out, re.M), out
    assert re.search(r"^after_bad\s+skipped\s+0\s+bad failed\s*$", out, re.M), out
    assert re.search(r"^after_after\s+skipped\s+0\s+after_bad skipped\s*$", out, re.M), out
    assert "3 of 6 steps succeeded." in out
    assert f"charter retry {run_id} bad" in out

    # the independent branch finished; the dependents of the failure never ran
    shown = ws.show(run_id)
    assert {s["id"]: s["status"] for s in shown["steps"]} == {
        "root": "succeeded", "bad": "failed", "after_bad": "skipped", "after_after": "skipped",
        "side": "succeeded", "after_side": "succeeded",
    }
    assert ws.calls("after_bad") == [] and ws.calls("after_after") == []
    assert len(ws.calls("bad")) == 1  # a permanent error is not retried
    assert len(ws.calls("after_side")) == 1


def test_failed_step_reports_its_tries(ws: Workspace) -> None:
    plan = ws.write("flaky.yaml", """\
goal: Give up after two tries
steps:
  - id: shaky
    tool: flaky
    args: {name: shaky, fails: 5}
    retry: {max_attempts: 2}
""")
    res = ws("run", plan, "--tools", ws.tools)
    assert res.rc == 1, res
    assert re.search(r"^shaky\s+failed\s+2\s+RetryableError: shaky: transient failure 2\s*$", res.out, re.M), res
    assert len(ws.calls("shaky")) == 2


def test_retryable_errors_are_retried_and_visible_in_show(ws: Workspace) -> None:
    plan = ws.write("flaky.yaml", """\
goal: Succeed on the third try
steps:
  - id: shaky
    tool: flaky
    args: {name: shaky, fails: 2}
""")
    res = ws("run", plan, "--tools", ws.tools)
    assert res.rc == 0, res
    assert "shaky attempt 1 failed: RetryableError: shaky: transient failure 1" in res.out
    run_id = ws.only_run_id()

    shaky = step(ws.show(run_id), "shaky")
    assert shaky["status"] == "succeeded"
    assert outcomes(shaky) == ["failed", "failed", "succeeded"]
    assert [a["number"] for a in shaky["attempts"]] == [1, 2, 3]
    for n, attempt in enumerate(shaky["attempts"][:2], 1):
        assert attempt["error"] == {"type": "RetryableError", "message": f"shaky: transient failure {n}",
                                    "retryable": True}
        assert attempt["retry_at"] == pytest.approx(attempt["ended_at"] + 0.05)
    calls = ws.calls("shaky")
    assert [c["attempt"] for c in calls] == [1, 2, 3]
    assert len({c["key"] for c in calls}) == 1  # every attempt has the same idempotency key

    plain = ws("show", run_id).out
    assert "attempt 1: failed" in plain and "RetryableError: shaky: transient failure 1" in plain
    assert "retry scheduled 50ms later" in plain
    assert "attempt 3: succeeded" in plain


def test_retry_a_failed_step_after_fixing_the_cause(ws: Workspace) -> None:
    assert ws("run", ws.write("mixed.yaml", MIXED), "--tools", ws.tools).rc == 1
    run_id = ws.only_run_id()

    wrong = ws("retry", run_id, "root")
    assert wrong.rc == 2 and "only a failed step can be retried" in wrong.err, wrong
    missing = ws("retry", run_id, "nosuch")
    assert missing.rc == 2 and "has no step 'nosuch'" in missing.err, missing

    ws.write("fixed.flag", "")
    res = ws("retry", run_id, "bad")
    assert res.rc == 0, res
    assert f"run {run_id} succeeded" in res.out
    shown = ws.show(run_id)
    assert shown["status"] == "succeeded"
    assert all(s["status"] == "succeeded" for s in shown["steps"])
    assert outcomes(step(shown, "bad")) == ["failed", "succeeded"]
    assert step(shown, "after_after")["output"] == {"name": "after_after",
                                                    "value": {"name": "after_bad", "value": "bad"}}
    # the dependents ran once, now; what had succeeded did not run again
    assert len(ws.calls("after_bad")) == len(ws.calls("after_after")) == 1
    assert len(ws.calls("root")) == 1 and len(ws.calls("after_side")) == 1
    assert len(ws.calls("side")) == 3
    assert ws.runs()[0]["status"] == "succeeded" and len(ws.runs()) == 1


def test_retry_a_fan_out_runs_only_the_failed_items_again(ws: Workspace) -> None:
    plan = ws.write("fan.yaml", """\
goal: Shout each letter
steps:
  - id: list
    tool: letters
  - id: each
    tool: shout
    for_each: ${list}
    args: {letter: "${item}"}
  - id: joined
    tool: concat
    args: {parts: "${each}"}
""")
    res = ws("run", plan, "--tools", ws.tools)
    assert res.rc == 1, res
    assert re.search(r"^each\s+failed\s+\d+\s+PermanentError: 1 of 3 items failed; item 1: y is broken", res.out,
                     re.M), res
    run_id = ws.only_run_id()
    items = step(ws.show(run_id), "each")["items"]
    assert [i["status"] for i in items] == ["succeeded", "failed", "succeeded"]

    ws.write("fixed.flag", "")
    again = ws("retry", run_id, "each")
    assert again.rc == 0, again
    shown = ws.show(run_id)
    assert shown["output"] == "XYZ"
    assert [len(ws.calls(letter)) for letter in "xyz"] == [1, 2, 1]  # the items that succeeded did not run again
    assert [outcomes(i) for i in step(shown, "each")["items"]] == [["succeeded"], ["failed", "succeeded"],
                                                                   ["succeeded"]]


def test_rerun_from_a_step_reuses_upstream_outputs(ws: Workspace) -> None:
    plan = ws.write("pipeline.yaml", """\
goal: Fetch, parse, publish
steps:
  - id: fetch
    tool: echo
    args: {name: fetch}
  - id: parse
    tool: echo
    args: {name: parse, value: "${fetch}"}
  - id: publish
    tool: write_file
    args: {path: out.txt, text: "${parse.value}"}
  - id: audit
    tool: echo
    args: {name: audit}
""")
    assert ws("run", plan, "--tools", ws.tools).rc == 0
    old = ws.only_run_id()

    res = ws("rerun", old, "--from", "parse")
    assert res.rc == 0, res
    runs = ws.runs()
    assert len(runs) == 2
    new = runs[0]["id"]
    assert new != old and runs[0]["parent_run"] == old and runs[0]["status"] == "succeeded"

    # upstream and independent steps did not run again; parse and what follows did
    assert [c["run"] for c in ws.calls("fetch")] == [old]
    assert [c["run"] for c in ws.calls("audit")] == [old]
    assert [c["run"] for c in ws.calls("parse")] == [old, new]
    assert [c["run"] for c in ws.calls("out.txt")] == [old, new]
    assert (ws.root / "out.txt").read_text(encoding="utf-8") == f"fetch\nkey={new}/publish\n"

    shown = ws.show(new)
    assert shown["parent_run"] == old
    for sid in ("fetch", "audit"):
        s = step(shown, sid)
        assert (s["status"], s["reused_from"], s["attempts"]) == ("succeeded", old, [])
    assert step(shown, "fetch")["output"] == "fetch"
    assert outcomes(step(shown, "parse")) == ["succeeded"]
    assert step(shown, "parse")["reused_from"] is None
    assert "output reused from run " + old in ws("show", new).out

    bad = ws("rerun", old, "--from", "nosuch")
    assert bad.rc == 2 and "no step 'nosuch'" in bad.err, bad
    assert len(ws.runs()) == 2

    # with an edited plan: the edited step and what follows run; the rest is reused
    edited = ws.write("edited.yaml", plan.read_text(encoding="utf-8").replace(
        "args: {name: parse, value: \"${fetch}\"}", "args: {name: parse, value: \"${fetch}-v2\"}"))
    res = ws("rerun", old, "--from", "parse", "--plan", edited)
    assert res.rc == 0, res
    third = ws.runs()[0]["id"]
    assert third not in (old, new)
    assert len(ws.calls("fetch")) == 1
    assert step(ws.show(third), "parse")["output"] == {"name": "parse", "value": "fetch-v2"}
    assert (ws.root / "out.txt").read_text(encoding="utf-8") == f"fetch-v2\nkey={third}/publish\n"


# --- invalid input ---------------------------------------------------------------------------


INVALID = """\
goal: Invalid in many ways
inputs: {who: me}
steps:
  - id: a
    tool: echo
    args: {name: a}
  - id: a
    tool: echo
    args: {name: again}
  - id: c
    tool: no_such_tool
    args: {name: c}
  - id: d
    tool: echo
    args: {name: "${ghost}"}
  - id: e
    tool: echo
    args: {name: "${f}"}
  - id: f
    tool: echo
    args: {name: "${e}"}
  - id: g
    tool: add
    args: {a: not a number, b: 2}
  - id: h
    tool: echo
    args: {name: "${inputs.nope}"}
    needs: [nowhere]
"""

INVALID_PROBLEMS = [
    ("steps[1].id", "duplicate id 'a' (first at steps[0])"),
    ("steps[2].tool", "unknown tool 'no_such_tool'"),
    ("steps[3].args.name", "${ghost}: unknown step 'ghost'"),
    ("steps[4]", "cycle: e -> f -> e"),
    ("steps[6].args.a", "valid integer"),
    ("steps[7].args.name", "unknown input 'nope'"),
    ("steps[7].needs", "unknown step 'nowhere'"),
]


@pytest.mark.parametrize("command", ["run", "validate"])
def test_invalid_plan_lists_every_problem_and_stores_nothing(ws: Workspace, command: str) -> None:
    plan = ws.write("invalid.yaml", INVALID)
    res = ws(command, plan, "--tools", ws.tools)
    assert res.rc == 2, res
    assert "Traceback" not in res.err
    assert f"invalid plan {plan}: {len(INVALID_PROBLEMS)} problem(s)" in res.err, res
    lines = [line.strip() for line in res.err.splitlines() if line.strip().startswith("- ")]
    assert len(lines) == len(INVALID_PROBLEMS), res
    for where, message in INVALID_PROBLEMS:
        assert any(line.startswith(f"- {where}: ") and message in line for line in lines), (where, res.err)
    assert ws.runs() == []
    assert ws.calls() == []


def test_unreadable_plan_files(ws: Workspace) -> None:
    missing = ws("run", "nowhere.yaml", "--tools", ws.tools)
    assert missing.rc == 2 and "file not found: nowhere.yaml" in missing.err, missing

    broken = ws.write("broken.yaml", "goal: x\nsteps:\n  - id: a\n    args: {name: [unclosed\n")
    res = ws("run", broken, "--tools", ws.tools)
    assert res.rc == 2, res
    assert "not valid YAML/JSON" in res.err and "line " in res.err
    assert "Traceback" not in res.err
    assert ws.runs() == []


def test_plan_text_is_printed_verbatim_in_errors(ws: Workspace) -> None:
    """Names from the plan file are data: they must not be read as terminal markup."""
    plan = ws.write("markup.yaml", """\
goal: Brackets in names
steps:
  - id: a
    tool: "[/nope]"
  - id: b
    tool: "[bold]fancy"
""")
    res = ws("validate", plan, "--tools", ws.tools)
    assert res.rc == 2, res
    assert "Traceback" not in res.err, res
    assert "unknown tool '[/nope]'" in res.err, res
    assert "unknown tool '[bold]fancy'" in res.err, res


@pytest.mark.parametrize(
    ("tools_text", "message"),
    [
        (None, "tool file not found: missing_tools.py"),
        ("raise RuntimeError('no config here')\n",
         "importing tool file missing_tools.py failed: RuntimeError: no config here"),
        ("X = 1\n", "no tools found in 'missing_tools.py'"),
        ("def broken(:\n", "importing tool file missing_tools.py failed: SyntaxError"),
    ],
    ids=["missing", "raises", "empty", "syntax"],
)
@pytest.mark.parametrize("command", ["run", "validate", "tools"])
def test_bad_tool_file_is_a_clear_error(ws: Workspace, tools_text: str | None, message: str,
                                        command: str) -> None:
    if tools_text is not None:
        ws.write("missing_tools.py", tools_text)
    args = ["tools"] if command == "tools" else [command, ws.write("simple.yaml", SIMPLE)]
    res = ws(*args, "--tools", "missing_tools.py")
    assert res.rc == 2, res
    assert message in res.err, res
    assert "Traceback" not in res.err, res
    if command == "run":
        assert ws.runs() == []


def test_unknown_tool_module_is_a_clear_error(ws: Workspace) -> None:
    res = ws("tools", "--tools", "no_such_module_for_charter")
    assert res.rc == 2, res
    assert "cannot import tool module 'no_such_module_for_charter'" in res.err


# --- validate and tools ---------------------------------------------------------------------------


def test_validate_a_good_plan(ws: Workspace) -> None:
    copy_notes(ws)
    res = ws("validate", "examples/notes/plan.yaml", "--tools", "examples/notes/tools.py")
    assert res.rc == 0, res
    assert "examples/notes/plan.yaml: 3 steps, valid; write steps: report" in res.out
    assert ws.calls() == []
    assert not (ws.root / "charter.db").exists()


def test_tools_lists_names_effects_and_arguments(ws: Workspace) -> None:
    res = ws("tools", "--tools", ws.tools)
    assert res.rc == 0, res
    assert re.search(r"^add\(a, b\) read\s+Add two integers\.$", res.out, re.M), res
    assert re.search(r"^echo\(name, value\?\) read\s+Return the name", res.out, re.M), res
    assert re.search(r"^write_file\(path, text\) write\s+Write text to a file", res.out, re.M), res

    catalog = {t["name"]: t for t in json.loads(ws("tools", "--tools", ws.tools, "--json").out)}
    assert set(catalog) == {"echo", "add", "gated", "flaky", "hold", "block", "letters", "shout", "concat",
                            "write_file"}
    assert catalog["write_file"]["effect"] == "write"
    assert catalog["add"]["required"] == ["a", "b"]
    assert catalog["add"]["args"]["a"]["type"] == "integer"
    assert "ctx" not in catalog["echo"]["args"]  # the context is not an argument


# --- steering a run in another process -------------------------------------------------------------


def test_pause_a_run_in_another_process_then_resume(ws: Workspace) -> None:
    proc, run_id = start_held(ws)

    res = ws("pause", run_id, "--reason", "lunch")
    assert res.rc == 0, res
    assert f"run {run_id} paused" in res.out

    ran = proc.wait()
    assert ran.rc == 3, ran
    assert f"charter resume {run_id}" in ran.out
    runs = ws.runs()
    assert (runs[0]["status"], runs[0]["reason"]) == ("paused", "lunch")
    waiting = step(ws.show(run_id), "wait")
    assert outcomes(waiting) == ["interrupted"]
    assert ws.calls("last") == []

    again = ws("pause", run_id)
    assert again.rc == 2 and "already paused" in again.err, again

    (ws.root / "gate").unlink()
    resumed = ws("resume", run_id)
    assert resumed.rc == 0, resumed
    assert f"run {run_id} succeeded" in resumed.out
    shown = ws.show(run_id)
    assert shown["status"] == "succeeded"
    assert outcomes(step(shown, "wait")) == ["interrupted", "succeeded"]
    assert outcomes(step(shown, "first")) == ["succeeded"]
    assert len(ws.calls("first")) == 1  # a finished step never runs again
    waits = ws.calls("wait")
    assert [c["attempt"] for c in waits] == [1, 2] and len({c["key"] for c in waits}) == 1
    assert len(ws.calls("last")) == 1

    done = ws("resume", run_id)
    assert done.rc == 0 and "has already ended (succeeded)" in done.err, done
    assert len(ws.calls("last")) == 1


def test_cancel_a_run_in_another_process(ws: Workspace) -> None:
    proc, run_id = start_held(ws)
    res = ws("cancel", run_id, "--reason", "not needed")
    assert res.rc == 0, res
    assert f"run {run_id} cancelled" in res.out
    ran = proc.wait()
    assert ran.rc == 3, ran
    assert ws.status(run_id) == "cancelled"

    (ws.root / "gate").unlink()
    later = ws("resume", run_id)
    assert later.rc == 3 and "has already ended (cancelled)" in later.err, later
    assert ws.status(run_id) == "cancelled"
    assert ws.calls("last") == []
    assert len(ws.calls("wait")) == 1

    pause = ws("pause", run_id)
    assert pause.rc == 2 and "has already ended (cancelled)" in pause.err, pause


def test_resume_refuses_a_run_another_live_process_is_running(ws: Workspace) -> None:
    proc, run_id = start_held(ws)
    res = ws("resume", run_id)
    assert res.rc == 2, res
    assert "being run by another process" in res.err
    assert "Traceback" not in res.err
    assert len(ws.calls("wait")) == 1  # nothing started twice
    (ws.root / "gate").unlink()
    assert proc.wait().rc == 0
    assert ws.status(run_id) == "succeeded"


def test_ctrl_c_pauses_the_run_and_resume_completes_it(ws: Workspace) -> None:
    proc, run_id = start_held(ws)
    proc.popen.send_signal(signal.SIGINT)
    ran = proc.wait()
    assert ran.rc == 130, ran
    said = ran.out + ran.err
    assert said.count(f"charter resume {run_id}") == 1, said  # how to resume, said once
    assert "Traceback" not in ran.err
    runs = ws.runs()
    assert runs[0]["status"] == "paused"
    assert "Ctrl-C" in runs[0]["reason"]

    (ws.root / "gate").unlink()
    resumed = ws("resume", run_id)
    assert resumed.rc == 0, resumed
    assert ws.status(run_id) == "succeeded"
    assert len(ws.calls("first")) == 1 and len(ws.calls("last")) == 1
    assert outcomes(step(ws.show(run_id), "wait")) == ["interrupted", "succeeded"]


def test_sigterm_pauses_the_run(ws: Workspace) -> None:
    proc, run_id = start_held(ws)
    proc.popen.send_signal(signal.SIGTERM)
    ran = proc.wait()
    assert ran.rc == 3, ran
    assert f"charter resume {run_id}" in ran.out
    assert ws.status(run_id) == "paused"
    (ws.root / "gate").unlink()
    assert ws("resume", run_id).rc == 0
    assert ws.status(run_id) == "succeeded"


def test_ctrl_c_hint_names_the_interrupted_run(ws: Workspace) -> None:
    """With another paused run in the store, the hint must still name the run that was interrupted."""
    first_proc, first = start_held(ws)
    first_proc.popen.send_signal(signal.SIGINT)
    assert first_proc.wait().rc == 130

    # a second run, newer, also paused
    second_proc = ws.start("run", ws.root / "held.yaml", "--tools", ws.tools)
    wait_until(lambda: len(ws.calls("wait")) == 2, what="the second run's `wait` step")
    second = ws.runs()[0]["id"]
    assert second != first
    second_proc.popen.send_signal(signal.SIGINT)
    assert second_proc.wait().rc == 130

    # resume the first (older) run and interrupt it again
    resumed = ws.start("resume", first)
    wait_until(lambda: len(ws.calls("wait")) == 3, what="the resumed `wait` step")
    resumed.popen.send_signal(signal.SIGINT)
    res = resumed.wait()
    assert res.rc == 130, res
    said = res.out + res.err
    assert f"charter resume {first}" in said and f"charter resume {second}" not in said, res


def test_resume_when_the_tools_no_longer_import(ws: Workspace) -> None:
    proc, run_id = start_held(ws)
    assert ws("pause", run_id).rc == 0
    assert proc.wait().rc == 3

    good = ws.tools.read_text(encoding="utf-8")
    ws.tools.write_text("raise ImportError('the SDK is gone')\n", encoding="utf-8")
    res = ws("resume", run_id)
    assert res.rc == 2, res
    assert "the SDK is gone" in res.err and str(ws.tools) in res.err, res
    assert "Traceback" not in res.err
    assert ws.status(run_id) == "paused"  # nothing lost

    ws.tools.write_text(good, encoding="utf-8")
    (ws.root / "gate").unlink()
    ok = ws("resume", run_id)
    assert ok.rc == 0, ok
    assert ws.status(run_id) == "succeeded"


def test_resume_from_another_folder_after_the_process_died(ws: Workspace) -> None:
    proc, run_id = start_held(ws)
    proc.popen.kill()
    proc.popen.wait()
    (ws.root / "gate").unlink()
    elsewhere = ws.root / "elsewhere"
    elsewhere.mkdir()
    res = ws("resume", run_id, cwd=elsewhere)  # the run remembers its tools file by its absolute path
    assert res.rc == 0, res
    assert ws.status(run_id) == "succeeded"
    assert outcomes(step(ws.show(run_id), "wait")) == ["interrupted", "succeeded"]


def test_second_ctrl_c_stops_at_once_even_if_a_tool_blocks(ws: Workspace) -> None:
    """The first Ctrl-C pauses the run; the second stops the process now (cli.py: "a second Ctrl-C: stop now")."""
    proc, run_id = start_held(ws, plan_text=HELD_SYNC)
    proc.popen.send_signal(signal.SIGINT)
    wait_until(lambda: ws.status(run_id) == "paused", timeout=10, what="the run to be paused")
    if proc.alive():  # still waiting for the blocking tool: the second Ctrl-C must end it
        proc.popen.send_signal(signal.SIGINT)
        try:
            wait_until(lambda: not proc.alive(), timeout=5, what="the process to stop after a second Ctrl-C")
        finally:
            (ws.root / "gate").unlink()  # let the tool go, whatever happened
    res = proc.wait()
    assert res.rc == 130, res
    assert f"charter resume {run_id}" in res.err + res.out, res
    assert ws.status(run_id) == "paused"


def test_no_two_attempts_of_a_step_run_at_once_after_a_pause(ws: Workspace) -> None:
    """A paused run's blocking tool may still be running in its old process; a resume must not run it twice at once."""
    proc, run_id = start_held(ws, plan_text=HELD_SYNC)
    assert ws("pause", run_id).rc == 0
    resumer = ws.start("resume", run_id)
    try:
        # give the resume every chance to start the step again (or to refuse) before the gate opens
        wait_until(lambda: not resumer.alive() or len(ws.calls("wait")) >= 2, timeout=10,
                   what="`charter resume` to start the step again or to give up")
    except AssertionError:
        pass  # it neither started nor refused: fine, as long as it does not overlap
    finally:
        (ws.root / "gate").unlink()
    first = proc.wait()
    resumed = resumer.wait()
    overlaps = ws.root / "overlaps.log"
    assert not overlaps.exists(), (
        f"attempts of one step ran at the same time: {overlaps.read_text(encoding='utf-8')}\n"
        f"first process: {first}\nresume: {resumed}")
