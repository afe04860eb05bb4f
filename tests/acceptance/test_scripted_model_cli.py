"""A scripted model from the shell: `--model scripted:answers.yaml` (or `CHARTER_MODEL=scripted:...`)
tests a plan with llm and agent steps, and a planned request, offline."""

from __future__ import annotations

import json

import pytest

from .helpers import Workspace

PLAN = """\
goal: Greet, then describe the greeting
steps:
  - id: greet
    agent: {prompt: "Greet Ana with the echo tool, then say what you did.", tools: [echo]}
  - id: describe
    llm:
      prompt: "Describe: ${greet}"
      schema: {type: object, properties: {words: {type: integer}}, required: [words]}
"""

ANSWERS = """\
# one answer per model request, in order
- call: echo
  args: {name: Ana}
- text: I greeted Ana.
- error: overloaded          # a transient failure: the step is tried again
  retry_after: 0
- json: {words: 3}
"""


def test_a_plan_with_llm_and_agent_steps_runs_on_answers_from_a_file(ws: Workspace) -> None:
    plan = ws.write("plan.yaml", PLAN)
    ws.write("answers.yaml", ANSWERS)
    res = ws("run", plan, "-t", ws.tools, "--model", "scripted:answers.yaml", "--json")
    assert res.rc == 0, res
    report = json.loads(res.out)
    greet, describe = report["steps"]
    assert (greet["output"], report["output"]) == ("I greeted Ana.", {"words": 3})
    assert [c["name"] for c in ws.calls()] == ["Ana"]  # the agent's tool call ran the real tool
    assert [a["outcome"] for a in describe["attempts"]] == ["failed", "succeeded"]


def test_charter_model_names_the_file_too(ws: Workspace) -> None:
    plan = ws.write("plan.yaml", PLAN)
    ws.write("answers.yaml", ANSWERS)
    ws.env["CHARTER_MODEL"] = "scripted:answers.yaml"
    res = ws("run", plan, "-t", ws.tools)
    assert res.rc == 0, res
    assert "succeeded" in res.out


def test_a_request_is_planned_and_run_from_one_file(ws: Workspace) -> None:
    plan = {"goal": "Describe a greeting", "steps": [
        {"id": "hello", "why": "to have something to describe", "tool": "echo", "args": {"name": "hello"}},
        {"id": "describe", "why": "the request", "llm": {"prompt": "Describe ${hello}"}},
    ]}
    ws.write("answers.json", json.dumps([{"json": plan}, "A friendly word."]))
    res = ws("do", "Describe a greeting", "-t", ws.tools, "--model", "scripted:answers.json", "--yes", "--json")
    assert res.rc == 0, res
    assert "planning with scripted:answers.json" in res.err
    assert json.loads(res.out)["output"] == "A friendly word."


@pytest.mark.parametrize(("answers", "message"), [
    (None, "error: scripted model file answers.yaml does not exist (scripted:FILE names a YAML or JSON list "
           "of answers)"),
    ("- text: [unclosed\n", "error: scripted model file answers.yaml is not valid YAML/JSON at line 2: "),
    ("{text: hi}\n", "error: scripted model file answers.yaml must hold a non-empty list of answers, one per "
                     "model request"),
    ("- hi\n- {words: 3}\n", "error: scripted model file answers.yaml, answer 2: a mapping needs exactly one of "
                             "text, json, call, error (to answer with JSON data, put it under 'json:'); it has words"),
    ("- {call: echo, args: [Ana]}\n", "error: scripted model file answers.yaml, answer 1: 'call' names a tool, "
                                      "and 'args' is a mapping of its arguments"),
])
def test_a_missing_or_bad_file_is_a_clear_error_before_anything_runs(ws: Workspace, answers: str | None,
                                                                       message: str) -> None:
    if answers is not None:
        ws.write("answers.yaml", answers)
    res = ws("run", ws.write("plan.yaml", PLAN), "-t", ws.tools, "--model", "scripted:answers.yaml")
    assert res.rc == 2, res
    assert res.err.startswith(message), res
    assert "Traceback" not in res.err
    assert not (ws.root / "charter.db").exists()


def test_running_out_of_answers_fails_the_step_and_says_which_file(ws: Workspace) -> None:
    ws.write("answers.yaml", "- call: echo\n  args: {name: Ana}\n- I greeted Ana.\n")
    res = ws("run", ws.write("plan.yaml", PLAN), "-t", ws.tools, "--model", "scripted:answers.yaml", "--json")
    assert res.rc == 1, res
    describe = next(s for s in json.loads(res.out)["steps"] if s["id"] == "describe")
    assert describe["error"]["message"] == ("scripted:answers.yaml: the script has no answer left for request 3 "
                                            "(it had 2); add answers to answers.yaml")
