"""Models from the command line: a plan that needs one is refused up front, an unreachable server
fails fast and says where, retries are shown, and a server without `json_schema` can still plan."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from tests.provider_server import LLAMA_CPP_PYTHON_REFUSAL, Reply, openai_reply, provider_server, refusing_forms

from .helpers import Workspace

NEEDS_A_MODEL = {"goal": "Greet and judge", "steps": [
    {"id": "hello", "tool": "echo", "args": {"name": "hello"}},
    {"id": "judge", "llm": {"prompt": "Is ${hello} polite?"}},
    {"id": "helper", "agent": {"prompt": "Say hi", "tools": ["echo"]}},
]}
PLAN = {"goal": "Greet", "steps": [{"id": "hello", "why": "w", "tool": "echo", "args": {"name": "hello"}}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_validate_and_run_say_up_front_that_the_plan_needs_a_model(ws: Workspace) -> None:
    plan = ws.write("judge.json", json.dumps(NEEDS_A_MODEL))
    for command in ("validate", "run"):
        res = ws(command, plan, "-t", ws.tools)
        assert res.rc == 2, res
        assert "Traceback" not in res.err and f"invalid plan {plan}: 2 problem(s)" in res.err, res
        assert ("steps[1].llm: an llm step needs a model, and none is chosen: pass --model or set CHARTER_MODEL="
                in res.err), res
        assert "steps[2].agent: an agent step needs a model" in res.err, res
    assert ws.calls() == [] and not Path(ws.db).exists()  # the first step did not run; no store was made
    # With a model chosen, the same plan is valid (nothing is called to check it): by --model, or the environment.
    answers = ws.write("answers.yaml", "- fine\n")
    res = ws("validate", plan, "-t", ws.tools, "--model", f"scripted:{answers}")
    assert res.rc == 0 and "3 steps, valid" in res.out, res
    ws.env.update({"CHARTER_MODEL": "compat:small", "CHARTER_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"})
    res = ws("validate", plan, "-t", ws.tools)
    assert res.rc == 0 and "3 steps, valid" in res.out, res


def test_replanning_needs_a_model_too(ws: Workspace) -> None:
    res = ws("run", ws.write("p.json", json.dumps(PLAN)), "-t", ws.tools, "--replan", "1")
    assert res.rc == 2 and "--replan needs a model to revise the plan: no model chosen" in res.err, res
    assert ws.calls() == []


def test_a_refused_server_fails_at_once_and_says_where(ws: Workspace) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    ws.env.update({"CHARTER_MODEL": "compat:small", "CHARTER_BASE_URL": url})
    res = ws("plan", "Say hello", "-t", ws.tools, timeout=30)
    assert res.rc == 2, res
    assert f"planning with compat:small at {url}" in res.err, res
    assert f"cannot reach compat at {url}: connection refused" in res.err, res
    assert "retrying" not in res.err and "Traceback" not in res.err, res


def test_retries_are_shown_while_they_wait(ws: Workspace) -> None:
    with provider_server() as server:
        ws.env.update({"CHARTER_MODEL": "compat:small", "CHARTER_BASE_URL": server.url + "/v1"})
        server.reply(Reply(503, {"error": {"message": "loading the model"}}, {"retry-after": "0"}),
                     openai_reply(json.dumps(PLAN)))
        res = ws("plan", "Say hello", "-t", ws.tools)
    assert res.rc == 0, res
    assert "compat:small: compat answered 503: loading the model; retrying in 0.0s (try 2 of 5)" in res.err, res


def test_a_server_without_json_schema_can_plan(ws: Workspace) -> None:
    # llama-cpp-python's server: json_object (with a schema) or text; json_schema is refused with a 500.
    respond = refusing_forms({"json_object", "text"}, lambda body: openai_reply(json.dumps(PLAN)), status=500,
                             message=LLAMA_CPP_PYTHON_REFUSAL, kind="internal_server_error")
    with provider_server(respond) as server:
        ws.env.update({"CHARTER_MODEL": "compat:small", "CHARTER_BASE_URL": server.url + "/v1"})
        res = ws("plan", "Say hello", "-t", ws.tools)
    assert res.rc == 0, res
    assert "retrying" not in res.err, res  # a refused form is not a passing fault
    forms = [(r.body.get("response_format") or {}).get("type") for r in server.received]
    assert forms == ["json_schema", "json_object"]


def test_show_lists_every_model_call_and_never_makes_up_a_cost(ws: Workspace) -> None:
    # Two models on one loopback server: openai:gpt-4o-mini has a price, compat:tiny has none.
    def respond(body: dict[str, object]) -> Reply:
        if body["model"] == "gpt-4o-mini":
            return openai_reply("Polite enough.", prompt_tokens=1000, completion_tokens=100)
        return openai_reply('{"greeting": "hi"}', prompt_tokens=30, completion_tokens=5)

    with provider_server(respond) as server:
        ws.env.update({"CHARTER_MODEL": "compat:tiny", "CHARTER_BASE_URL": server.url + "/v1",
                       "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.url + "/v1"})
        plan = ws.write("p.json", json.dumps({"goal": "Greet and judge", "steps": [
            {"id": "greet", "llm": {"prompt": "Greet the team.\nBe brief.", "schema": {
                "type": "object", "properties": {"greeting": {"type": "string"}}}}},
            {"id": "judge", "llm": {"prompt": "Is ${greet.greeting} polite?", "model": "openai:gpt-4o-mini"}},
        ]}))
        res = ws("run", plan)
        assert res.rc == 0, res
    run_id = ws.only_run_id()
    shown = ws("show", run_id)
    assert shown.rc == 0, shown
    assert "$0.0000" not in shown.out, shown.out
    assert ("spent: 1,135 model tokens, cost unknown (no price for compat:tiny; $0.0002 for the calls with a "
            "price; add prices with CHARTER_PRICES)") in shown.out, shown.out
    assert "model compat:tiny · 30 in + 5 out tokens · cost unknown · " in shown.out, shown.out
    assert "prompt: Greet the team. Be brief." in shown.out and 'answer: {"greeting": "hi"}' in shown.out
    assert "model openai:gpt-4o-mini · 1,000 in + 100 out tokens · $0.0002 · " in shown.out
    assert "prompt: Is hi polite?" in shown.out and "answer: Polite enough." in shown.out

    data = json.loads(ws("show", run_id, "--json").out)
    assert data["cost"] is None and data["unpriced_models"] == ["compat:tiny"]
    assert abs(data["cost_known"] - (1000 * 0.15 + 100 * 0.6) / 1e6) < 1e-12
    calls = data["model_calls"]
    assert [(c["step"], c["model"], c["cost"] is None) for c in calls] == [
        ("greet", "compat:tiny", True), ("judge", "openai:gpt-4o-mini", False)]
    assert calls[0]["prompt"] == "Greet the team. Be brief." and calls[0]["latency"] >= 0


def test_show_lists_the_planners_calls(ws: Workspace) -> None:
    with provider_server() as server:
        ws.env.update({"CHARTER_MODEL": "compat:planner", "CHARTER_BASE_URL": server.url + "/v1"})
        bad = {"goal": "Greet", "steps": [{"id": "hello", "why": "w", "tool": "teleport", "args": {}}]}
        server.reply(openai_reply(json.dumps(bad)), openai_reply(json.dumps(PLAN)))
        res = ws("do", "Say hello", "-t", ws.tools, "--yes")
        assert res.rc == 0, res
    shown = ws("show", ws.only_run_id())
    assert "planner: 2 model calls" in shown.out, shown.out
    assert "prompt: Say hello" in shown.out and "prompt: That plan cannot be used: - steps[0].tool: unknown tool" \
        in shown.out, shown.out
    assert shown.out.count("model compat:planner · 11 in + 7 out tokens · cost unknown") == 2, shown.out


def test_an_llm_step_with_a_schema_runs_on_a_server_without_json_schema(ws: Workspace) -> None:
    schema = {"type": "object", "properties": {"greeting": {"type": "string"}}, "required": ["greeting"]}
    respond = refusing_forms({"json_object", "text"}, lambda body: openai_reply('{"greeting": "hi"}'), status=500,
                             message=LLAMA_CPP_PYTHON_REFUSAL, kind="internal_server_error")
    with provider_server(respond) as server:
        ws.env.update({"CHARTER_MODEL": "compat:small", "CHARTER_BASE_URL": server.url + "/v1"})
        plan = ws.write("p.json", json.dumps({"goal": "Greet", "steps": [
            {"id": "greet", "llm": {"prompt": "Greet the team.", "schema": schema}}]}))
        res = ws("run", plan, "--json")
    assert res.rc == 0, res
    assert json.loads(res.out)["output"] == {"greeting": "hi"}
    forms = [(r.body.get("response_format") or {}).get("type") for r in server.received]
    assert forms == ["json_schema", "json_object"]  # refused once, then asked in the accepted form: no retry
    system = server.received[-1].body["messages"][0]["content"]
    assert system.count(json.dumps(schema)) == 1  # the step already says the schema: not twice
