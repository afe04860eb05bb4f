"""`charter` with OpenTelemetry on: spans and metrics reach a real OTLP/HTTP receiver on loopback, which
decodes them with opentelemetry-proto; a dead or silent collector never holds a run up; off costs nothing."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.loopback_http import Reply, Seen, Server

from .helpers import Workspace

SECRET = "otel-secret-value-5150"
OTEL_TOOLS = '''
import os
from charter import PermanentError, tool
from charter.workspace.secrets import Secret

@tool
def token() -> str:
    """A text with a secret in it."""
    return "the key is " + Secret("OTEL_TEST_SECRET").reveal()

@tool
def env_key() -> str:
    """A variable's value, read straight from the environment (no Secret)."""
    return "the env key is " + os.environ["OTEL_ENV_KEY"]

@tool
def once_down() -> str:
    """Down the first time it is called."""
    if not os.path.exists("was-down"):
        open("was-down", "w").close()
        raise PermanentError("down")
    return "up"
'''
PLAN = """
goal: Tell the key
steps:
  - id: tok
    tool: token
  - id: say
    llm: {prompt: "PROMPT-TEXT-1 ${tok}"}
"""
GATED = """
goal: Ask first
steps:
  - id: first
    tool: token
  - id: gate
    approval: {message: "go on?"}
    needs: [first]
  - id: last
    tool: token
    needs: [gate]
"""


class Receiver:
    """An OTLP/HTTP collector on 127.0.0.1: decodes every request it is sent."""

    def __init__(self) -> None:
        self.server = Server(lambda seen: Reply(200, {"Content-Type": "application/x-protobuf"}, b""))
        self.url = self.server.url

    def bodies(self) -> list[Seen]:
        return list(self.server.seen)

    def spans(self) -> list[tuple[Any, Any]]:
        """Every span received, with its resource spans' resource (``(span, resource, scope)``)."""
        out = []
        for seen in self.server.seen:
            if seen.path == "/v1/traces":
                req = ExportTraceServiceRequest.FromString(seen.body)
                out += [(s, rs.resource, ss.scope) for rs in req.resource_spans for ss in rs.scope_spans
                        for s in ss.spans]
        return out

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for seen in self.server.seen:
            if seen.path == "/v1/metrics":
                req = ExportMetricsServiceRequest.FromString(seen.body)
                out.update({m.name: m for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics})
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.close()


def attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") != "array_value" else [
            getattr(x, x.WhichOneof("value")) for x in v.array_value.values]
    return out


def setup(ws: Workspace, endpoint: str | None, **env: str) -> None:
    ws.write("otel_tools.py", OTEL_TOOLS)
    ws.write("plan.yaml", PLAN)
    ws.write("gated.yaml", GATED)
    ws.write("answers.yaml", "- ANSWER-TEXT-2\n")
    ws.env["OTEL_TEST_SECRET"] = SECRET
    if endpoint is not None:
        ws.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    ws.env.update(env)


def test_the_cli_sends_genai_spans_and_metrics_to_an_otlp_receiver(ws: Workspace, receiver: Receiver) -> None:
    setup(ws, receiver.url)
    done = ws("run", "plan.yaml", "-t", "otel_tools.py", "--model", "scripted:answers.yaml")
    assert done.rc == 0, done
    spans = receiver.spans()
    by_name = {s.name: (s, resource, scope) for s, resource, scope in spans}
    root, resource, scope = by_name["invoke_workflow Tell the key"]
    assert {kv.key: kv.value.string_value for kv in resource.attributes}["service.name"] == "charter"
    assert scope.name == "charter"
    assert sorted(by_name) == sorted(["invoke_workflow Tell the key", "execute_tool token", "step say",
                                      "chat answers.yaml"])
    assert {s.trace_id for s, _, _ in spans} == {root.trace_id} and root.parent_span_id == b""
    tool_span, step, chat = (by_name[n][0] for n in ("execute_tool token", "step say",
                                                     "chat answers.yaml"))
    assert tool_span.parent_span_id == step.parent_span_id == root.span_id
    assert chat.parent_span_id == step.span_id
    assert attrs(root)["gen_ai.operation.name"] == "invoke_workflow"
    assert attrs(tool_span)["gen_ai.tool.name"] == "token"
    a = attrs(chat)
    assert (a["gen_ai.operation.name"], a["gen_ai.provider.name"]) == ("chat", "scripted")
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    metrics = receiver.metrics()
    assert set(metrics) == {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"}
    usage = metrics["gen_ai.client.token.usage"]
    assert usage.unit == "{token}" and list(usage.histogram.data_points[0].explicit_bounds)[:3] == [1, 4, 16]
    everything = b"".join(seen.body for seen in receiver.bodies())
    assert b"PROMPT-TEXT-1" not in everything and b"ANSWER-TEXT-2" not in everything  # capture is opt-in
    assert SECRET.encode() not in everything


def test_prompts_and_results_reach_the_collector_only_when_asked_and_never_a_secret(
        ws: Workspace, receiver: Receiver) -> None:
    setup(ws, receiver.url, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="SPAN_ONLY")
    assert ws("run", "plan.yaml", "-t", "otel_tools.py", "--model", "scripted:answers.yaml").rc == 0
    everything = b"".join(seen.body for seen in receiver.bodies())
    assert b"PROMPT-TEXT-1" in everything and b"ANSWER-TEXT-2" in everything
    assert SECRET.encode() not in everything and b"the key is ***" in everything


def test_a_secret_the_workspace_names_never_reaches_the_collector_though_a_tool_read_it_itself(
        ws: Workspace, receiver: Receiver) -> None:
    setup(ws, receiver.url, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="SPAN_ONLY")
    ws.env["OTEL_ENV_KEY"] = env_key = "otel-env-key-8086-" + "x" * 8
    ws.write("charter.yaml", "slack:\n  token: ${env:OTEL_ENV_KEY}\n")  # named here, read by the tool itself
    ws.write("env.yaml", "goal: Tell the env key\nsteps:\n  - id: key\n    tool: env_key\n"
                         "  - id: say\n    llm: {prompt: 'repeat ${key}'}\n")
    assert ws("run", "env.yaml", "-t", "otel_tools.py", "--model", "scripted:answers.yaml").rc == 0
    everything = b"".join(seen.body for seen in receiver.bodies())
    assert b"repeat the env key is ***" in everything  # the content was captured, masked
    assert env_key.encode() not in everything


def test_a_run_resumed_by_a_second_process_continues_its_trace(ws: Workspace, receiver: Receiver) -> None:
    setup(ws, None)
    first = ws("--otel", receiver.url, "run", "gated.yaml", "-t", "otel_tools.py", "--db", ws.db, db=False)
    assert first.rc == 3, first  # waits for the approval; no root span yet
    assert [s.name for s, _, _ in receiver.spans()] == ["execute_tool token"]
    run_id = ws.only_run_id()
    ws.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = receiver.url + "/v1/traces"  # the variable, this time
    second = ws("approve", run_id, "gate")
    assert second.rc == 0, second
    spans = [s for s, _, _ in receiver.spans()]
    assert sorted(s.name for s in spans) == sorted(["execute_tool token", "step gate", "execute_tool token",
                                                   "invoke_workflow Ask first"])
    [root] = [s for s in spans if s.name == "invoke_workflow Ask first"]
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert all(s.parent_span_id == root.span_id for s in spans if s is not root)
    shown = ws("show", run_id, "--json", "--events")
    created = next(e for e in json.loads(shown.out)["events"] if e["type"] == "RunCreated")
    assert created["trace"]["traceparent"].split("-")[1:3] == [root.trace_id.hex(), root.span_id.hex()]


def test_a_run_retried_after_it_failed_sends_each_span_once(ws: Workspace, receiver: Receiver) -> None:
    setup(ws, None)
    ws.write("fail.yaml", "goal: Up at last\nsteps:\n  - id: g\n    tool: once_down\n")
    failed = ws("--otel", receiver.url, "run", "fail.yaml", "-t", "otel_tools.py", "--db", ws.db, db=False)
    assert failed.rc == 1, failed
    retried = ws("--otel", receiver.url, "retry", ws.only_run_id(), "g", "-t", "otel_tools.py", "--db", ws.db,
                 db=False)
    assert retried.rc == 0, retried
    spans = [s for s, _, _ in receiver.spans()]
    assert len({s.span_id for s in spans}) == len(spans) == 4, [(s.name, s.span_id.hex()) for s in spans]
    root, again = (s for s in spans if s.name == "invoke_workflow Up at last")  # in the order they were sent
    assert root.parent_span_id == b"" and attrs(root)["charter.run.status"] == "failed"
    assert again.parent_span_id == root.span_id and attrs(again)["charter.run.status"] == "succeeded"
    assert attrs(again)["charter.run.reopening"] == 1


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("collector", ["closed port", "never answers"])
def test_a_dead_or_silent_collector_never_holds_a_run_up(ws: Workspace, collector: str) -> None:
    silent = socket.socket()
    try:
        if collector == "never answers":  # connections are taken (the backlog) and never read or answered
            silent.bind(("127.0.0.1", 0))
            silent.listen(64)
            endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        else:
            endpoint = _closed_port()
        setup(ws, endpoint)
        started = time.monotonic()
        done = ws("run", "plan.yaml", "-t", "otel_tools.py", "--model", "scripted:answers.yaml", "--json")
        wall = time.monotonic() - started
    finally:
        silent.close()
    assert done.rc == 0, done
    report = json.loads(done.out)
    took = max(s["finished_at"] for s in report["steps"]) - report["created_at"]
    assert took < 1.0  # the run itself: as without tracing
    # the process: its start, the run, and at most the tracer's bounded close (2 s), never the SDK's 10 s timeout
    assert wall < 7.0, wall
    # one line says so; none of the SDK's retries ("Transient error ... retrying in 1.92s") reach the terminal
    assert "Transient error" not in done.err and "retrying in" not in done.err, done.err
    lines = [line for line in done.err.splitlines() if not line.startswith(("run ", "  "))]  # but the progress
    assert len(lines) == 1, done.err
    [said] = lines
    assert ("could not be reached (Connection refused)" if collector == "closed port" else
            "did not take the last spans in time") in said, said
    assert endpoint in said or collector == "never answers"


def test_a_collector_that_refuses_the_spans_is_said_as_the_sdk_says_it(ws: Workspace) -> None:
    wrong = Server(lambda seen: Reply(404, {"Content-Type": "text/plain"}, b"no such path"))
    try:
        setup(ws, wrong.url)
        done = ws("run", "plan.yaml", "-t", "otel_tools.py", "--model", "scripted:answers.yaml")
    finally:
        wrong.close()
    assert done.rc == 0, done  # the run is not the collector's business
    assert "Failed to export spans batch code: 404" in done.err  # a wrong URL path: not hidden
    assert "could not be reached" not in done.err


@pytest.mark.parametrize(("option", "variable"), [
    ("not-a-url", None), ("", None), ("ftp://collector", None),
    (None, ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318/v1/traces")),
])
def test_a_collector_url_that_cannot_be_one_is_refused_before_anything_runs(
        ws: Workspace, option: str | None, variable: tuple[str, str] | None) -> None:
    setup(ws, None, **dict([variable] if variable else []))
    args = ("--otel", option) if option is not None else ()
    done = ws(*args, "run", "plan.yaml", "-t", "otel_tools.py", "--model", "scripted:answers.yaml", "--db", ws.db,
              db=False)
    assert done.rc == 2, done
    [said] = [line for line in done.err.splitlines() if line.strip()]
    name = "--otel" if option is not None else variable[0]  # type: ignore[index]
    assert said.startswith(f"error: {name}: ") and "http:// or https://" in said, said
    assert "Invalid URL" not in done.err and done.out == ""
    assert ws.runs() == []  # nothing was recorded


def test_without_the_variables_opentelemetry_is_never_imported(ws: Workspace) -> None:
    setup(ws, None)
    seen = ws.root / "modules.json"
    code = ("import atexit, json, sys\n"
            f"atexit.register(lambda: open({str(seen)!r}, 'w').write(json.dumps("
            "sorted(m for m in sys.modules if m.startswith('opentelemetry')))))\n"
            "sys.argv = ['charter', 'run', 'plan.yaml', '-t', 'otel_tools.py', '--model', 'scripted:answers.yaml',"
            f" '--db', {ws.db!r}]\n"
            "from charter.cli import main\nmain()\n")
    import subprocess

    done = subprocess.run([sys.executable, "-c", code], cwd=ws.root, env=ws.env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(seen.read_text()) == []


def test_tracing_asked_for_without_the_extra_is_a_clear_error(ws: Workspace, tmp_path: Path) -> None:
    setup(ws, "http://127.0.0.1:9")
    shadow = tmp_path / "shadow" / "opentelemetry"  # an `opentelemetry` without the SDK, first on the path
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    ws.env["PYTHONPATH"] = str(shadow.parent)
    done = ws("run", "plan.yaml", "-t", "otel_tools.py", "--model", "scripted:answers.yaml")
    assert done.rc == 2
    assert "pip install 'charter[otel]'" in done.err and "Traceback" not in done.err
    assert ws.runs() == []  # nothing was recorded
