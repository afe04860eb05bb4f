"""Traces and metrics of real runs on the real engine, read from the SDK's in-memory exporter and reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from charter import Charter, PermanentError, RetryPolicy, tool
from charter.errors import ConfigError
from charter.events import ModelCalled, RunCreated, StepsReset
from charter.telemetry import Tracer, check_endpoint, check_environment
from charter.telemetry.context import run_trace
from charter.telemetry.tracer import DURATION_BUCKETS, TOKEN_BUCKETS, _why
from charter.testing import FakeClock, ScriptedModel
from charter.workspace.secrets import register

tries: list[str] = []


@tool
def fetch(source: str) -> str:
    """Fetch a document."""
    tries.append(source)
    if source == "primary":
        raise PermanentError("primary is gone")
    return f"doc from {source}"


@tool(retry=RetryPolicy(max_attempts=3, initial_interval=1.0, jitter=0))
def flaky(name: str) -> str:
    """Fails once, then works."""
    tries.append(name)
    if tries.count(name) == 1:
        raise ConnectionError("the first call fails")
    return name


@tool
def twice_down(name: str) -> str:
    """Fails for good the first two times it is called."""
    tries.append(name)
    if tries.count(name) <= 2:
        raise PermanentError(f"{name} is down")
    return name


@tool
def lookup(city: str) -> dict[str, Any]:
    """Weather of a city."""
    return {"city": city, "temp": 21}


@pytest.fixture(autouse=True)
def _clear(monkeypatch: pytest.MonkeyPatch) -> None:
    tries.clear()
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED",
                 "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"):
        monkeypatch.delenv(name, raising=False)


class Traced:
    """A Charter app with a tracer into memory."""

    def __init__(self, db: Path, model: ScriptedModel | None = None, **tracer: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.app = Charter(db, tools=[fetch, flaky, twice_down, lookup], clock=FakeClock(auto_advance=True), model=model,
                           tracing=Tracer(exporter=self.exporter, metric_reader=self.reader, **tracer))

    def spans(self) -> list[ReadableSpan]:
        self.app.flush_watchers(10)
        self.app.tracer.flush()
        return list(self.exporter.get_finished_spans())

    def metrics(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for rm in self.reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out.setdefault(m.name, []).extend(m.data.data_points)
        return out


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


PLAN = {"goal": "Brief the team", "steps": [
    {"id": "get", "tool": "flaky", "args": {"name": "notes"}},
    {"id": "summary", "llm": {"prompt": "Summarise ${get} PROMPT-TEXT-7"}, "needs": ["get"]},
    {"id": "research", "agent": {"prompt": "Weather in Lisbon?", "tools": ["lookup"]}, "needs": ["summary"]},
    {"id": "gate", "approval": {"message": "Send ${summary}?"}},
]}


async def test_a_run_is_one_trace_of_genai_spans_and_metrics(db_path: Path) -> None:
    model = ScriptedModel(["a summary", ScriptedModel.call("lookup", {"city": "Lisbon"}), "21 degrees"])
    t = Traced(db_path, model)
    run_id = await t.app.start(PLAN)
    await t.app.drive()
    assert (await t.app.report(run_id)).status == "awaiting"
    t.app.clock.advance(30)  # a person takes half a minute
    await t.app.approve(run_id, "gate")
    await t.app.drive()
    report = await t.app.report(run_id)
    assert report.status == "succeeded"
    spans = t.spans()
    assert len({s.context.trace_id for s in spans}) == 1
    root = one(spans, "invoke_workflow Brief the team")
    assert root.parent is None and root.kind == SpanKind.INTERNAL
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert root.attributes["gen_ai.workflow.name"] == "Brief the team"
    assert root.attributes["charter.run.status"] == "succeeded"
    created = next(e for e in report.events if isinstance(e, RunCreated))
    assert root.start_time == int(created.at * 1e9) and root.end_time >= max(s.end_time for s in spans)

    # the retried tool step: two attempts, the first with its error
    tool_spans = sorted((s for s in spans if s.name == "execute_tool flaky"), key=lambda s: s.start_time)
    assert [s.attributes["charter.step.attempt"] for s in tool_spans] == [1, 2]
    assert tool_spans[0].status.status_code == StatusCode.ERROR
    assert tool_spans[0].attributes["error.type"] == "ConnectionError"
    assert tool_spans[0].attributes["charter.step.outcome"] == "retrying"
    assert tool_spans[1].status.status_code == StatusCode.UNSET
    assert {s.attributes["gen_ai.tool.call.id"] for s in tool_spans} == {f"{run_id}/get"}
    assert all(s.parent.span_id == root.context.span_id for s in tool_spans)

    # the llm step's attempt and its model call
    llm = one(spans, "step summary")
    chats = [s for s in spans if s.name == "chat demo"]
    calls = [e for e in report.events if isinstance(e, ModelCalled)]
    assert len(chats) == len(calls) == 3
    summary_chat = next(s for s in chats if s.parent.span_id == llm.context.span_id)
    assert summary_chat.kind == SpanKind.CLIENT
    attrs = summary_chat.attributes
    assert (attrs["gen_ai.operation.name"], attrs["gen_ai.provider.name"], attrs["gen_ai.request.model"],
            attrs["gen_ai.response.model"]) == ("chat", "scripted", "demo", "scripted:demo")
    assert attrs["gen_ai.usage.input_tokens"] == calls[0].input_tokens > 0
    assert attrs["gen_ai.usage.output_tokens"] == calls[0].output_tokens > 0
    assert llm.start_time <= summary_chat.start_time <= summary_chat.end_time <= llm.end_time

    # the agent: invoke_agent, its two model calls and its tool call under it
    agent = one(spans, "invoke_agent research")
    assert agent.attributes["gen_ai.agent.name"] == "research"
    assert agent.attributes["gen_ai.provider.name"] == "scripted"
    under = sorted((s for s in spans if s.parent and s.parent.span_id == agent.context.span_id),
                   key=lambda s: s.start_time)
    assert [s.name for s in under] == ["chat demo", "execute_tool lookup", "chat demo"]
    assert under[1].attributes["gen_ai.tool.name"] == "lookup"
    assert under[1].attributes["gen_ai.tool.call.id"] == model.requests[2].messages[-1].tool_call_id
    assert agent.attributes["gen_ai.usage.input_tokens"] == sum(c.input_tokens for c in calls[1:])

    # the approval: asked in one drive, given in another
    gate = one(spans, "step gate")
    assert gate.attributes["charter.step.kind"] == "approval" and gate.parent.span_id == root.context.span_id
    assert gate.end_time - gate.start_time == 30 * 10**9

    # nothing of the content was recorded: capture is opt-in
    assert not any("PROMPT-TEXT-7" in json.dumps(dict(s.attributes), default=str) for s in spans)
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output.messages", "gen_ai.tool.call.arg"))
                   for s in spans for k in s.attributes)

    metrics = t.metrics()
    tokens = metrics["gen_ai.client.token.usage"]
    by_type = {p.attributes["gen_ai.token.type"]: p for p in tokens}
    assert by_type["input"].sum == sum(c.input_tokens for c in calls)
    assert by_type["output"].sum == sum(c.output_tokens for c in calls)
    assert by_type["input"].count == 3 and tuple(by_type["input"].explicit_bounds) == TOKEN_BUCKETS
    assert by_type["input"].attributes["gen_ai.operation.name"] == "chat"
    assert by_type["input"].attributes["gen_ai.provider.name"] == "scripted"
    [duration] = metrics["gen_ai.client.operation.duration"]
    assert duration.count == 3 and tuple(duration.explicit_bounds) == DURATION_BUCKETS


ORIGINAL = {"goal": "count the words of the document", "steps": [
    {"id": "get", "tool": "fetch", "args": {"source": "primary"}},
]}
REVISED = {"goal": "count the words of the document", "steps": [
    {"id": "get_mirror", "why": "primary is gone", "tool": "fetch", "args": {"source": "mirror"}},
]}


async def test_planning_and_replanning_are_plan_spans_with_their_model_calls(db_path: Path) -> None:
    t = Traced(db_path, ScriptedModel([ORIGINAL, REVISED]))
    run_id = await t.app.propose("count the words", max_replans=1)
    await t.app.approve(run_id)
    await t.app.drive()
    assert (await t.app.report(run_id)).status == "succeeded"
    spans = t.spans()
    root = one(spans, "invoke_workflow count the words of the document")
    plans = sorted((s for s in spans if s.name == "plan"), key=lambda s: s.attributes["charter.plan.version"])
    assert [p.attributes["charter.plan.version"] for p in plans] == [1, 2]
    assert all(p.parent.span_id == root.context.span_id for p in plans)
    for p in plans:
        [chat] = [s for s in spans if s.parent and s.parent.span_id == p.context.span_id]
        assert chat.name == "chat demo" and chat.attributes["gen_ai.output.type"] == "json"
        assert p.start_time <= chat.start_time <= chat.end_time <= p.end_time
    fetches = [s for s in spans if s.name == "execute_tool fetch"]
    assert {s.attributes["charter.step.id"]: s.status.status_code for s in fetches} == {
        "get": StatusCode.ERROR, "get_mirror": StatusCode.UNSET}
    assert plans[1].start_time >= next(s for s in fetches if s.attributes["charter.step.id"] == "get").end_time


def unique(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """``spans``, after checking that no span id was sent twice (backends flag it)."""
    sent = [s.context.span_id for s in spans]
    assert len(sent) == len(set(sent)), sorted((s.name, s.context.span_id) for s in spans)
    return spans


async def test_a_run_that_ends_again_after_a_retry_sends_each_span_once(db_path: Path) -> None:
    t = Traced(db_path)
    plan = {"goal": "g", "steps": [{"id": "a", "tool": "twice_down", "args": {"name": "db"}}]}
    run_id = await t.app.start(plan)
    await t.app.drive()
    assert (await t.app.report(run_id)).status == "failed"
    t.app.clock.advance(60)
    assert (await t.app.retry(run_id, "a")).status == "failed"
    t.app.clock.advance(60)
    report = await t.app.retry(run_id, "a")
    assert report.status == "succeeded"
    spans = unique(t.spans())
    runs = sorted((s for s in spans if s.name == "invoke_workflow g"), key=lambda s: s.start_time)
    root, *reopened = runs
    # the root is the run's first ending: from its creation to its failure
    assert root.parent is None and root.status.status_code == StatusCode.ERROR
    assert root.attributes["charter.run.status"] == "failed" and "charter.run.reopening" not in root.attributes
    created = next(e for e in report.events if isinstance(e, RunCreated))
    assert root.start_time == int(created.at * 1e9)
    # each reopening: its own span under the root, from the retry to the next ending
    assert [s.attributes["charter.run.reopening"] for s in reopened] == [1, 2]
    assert [s.attributes["charter.run.status"] for s in reopened] == ["failed", "succeeded"]
    assert [s.status.status_code for s in reopened] == [StatusCode.ERROR, StatusCode.UNSET]
    assert all(s.parent.span_id == root.context.span_id for s in reopened)
    assert all(s.attributes["gen_ai.operation.name"] == "invoke_workflow" for s in reopened)
    resets = [e for e in report.events if isinstance(e, StepsReset)]
    assert [s.start_time for s in reopened] == [int(e.at * 1e9) for e in resets]
    attempts = sorted((s for s in spans if s.name == "execute_tool twice_down"), key=lambda s: s.start_time)
    assert [s.attributes["charter.step.attempt"] for s in attempts] == [1, 2, 3]
    assert [s.parent.span_id for s in attempts] == [r.context.span_id for r in runs]  # each under its own


async def test_a_revised_plan_that_keeps_a_failed_steps_id_sends_each_attempt_once(db_path: Path) -> None:
    kept = {"goal": "count the words of the document", "steps": [
        {"id": "get", "why": "primary is gone", "tool": "fetch", "args": {"source": "mirror"}},
    ]}
    t = Traced(db_path, ScriptedModel([ORIGINAL, kept]))
    run_id = await t.app.propose("count the words", max_replans=1)
    await t.app.approve(run_id)
    await t.app.drive()
    assert (await t.app.report(run_id)).status == "succeeded"
    spans = unique(t.spans())
    fetches = sorted((s for s in spans if s.name == "execute_tool fetch"), key=lambda s: s.start_time)
    assert [(s.attributes["charter.step.id"], s.attributes["charter.step.attempt"]) for s in fetches] == [
        ("get", 1), ("get", 1)]  # attempt 1 of "get" under version 1, then under version 2
    assert [s.status.status_code for s in fetches] == [StatusCode.ERROR, StatusCode.UNSET]


async def test_a_model_call_that_failed_is_a_chat_span_with_its_error_type(db_path: Path) -> None:
    t = Traced(db_path, ScriptedModel([PermanentError("the model is overloaded")]))
    report = await t.app.run({"goal": "g", "steps": [{"id": "ask", "llm": {"prompt": "hi"}}]})
    assert report.status == "failed"
    spans = t.spans()
    step = one(spans, "step ask")
    chat = one(spans, "chat demo")
    assert chat.parent.span_id == step.context.span_id
    assert chat.attributes["error.type"] == "PermanentError" and chat.status.status_code == StatusCode.ERROR
    root = one(spans, "invoke_workflow g")
    assert root.attributes["error.type"] == "run_failed" and root.status.status_code == StatusCode.ERROR
    [duration] = t.metrics()["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == "PermanentError"


async def test_content_is_captured_only_when_asked_and_never_a_secret(db_path: Path) -> None:
    register("sk-the-secret-value-42")
    prompt = {"goal": "g", "steps": [
        {"id": "get", "tool": "fetch", "args": {"source": "sk-the-secret-value-42 mirror"}},
        {"id": "ask", "llm": {"prompt": "PROMPT-TEXT-9 about ${get}"}},
    ]}
    t = Traced(db_path, ScriptedModel(["ANSWER-TEXT-3"]), capture_content=True)
    assert (await t.app.run(prompt)).status == "succeeded"
    spans = t.spans()
    text = json.dumps([dict(s.attributes) for s in spans], default=str)
    assert "sk-the-secret-value-42" not in text and "***" in text
    chat = one(spans, "chat demo")
    [message] = json.loads(chat.attributes["gen_ai.input.messages"])
    assert message["role"] == "user" and "PROMPT-TEXT-9" in message["parts"][0]["content"]
    [answer] = json.loads(chat.attributes["gen_ai.output.messages"])
    assert answer["parts"] == [{"type": "text", "content": "ANSWER-TEXT-3"}] and answer["finish_reason"] == "stop"
    tool_span = one(spans, "execute_tool fetch")
    assert json.loads(tool_span.attributes["gen_ai.tool.call.arguments"]) == {"source": "*** mirror"}
    assert json.loads(tool_span.attributes["gen_ai.tool.call.result"]) == "doc from *** mirror"


async def test_a_run_created_under_a_callers_span_belongs_to_its_trace(db_path: Path) -> None:
    caller_spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(caller_spans))
    t = Traced(db_path)
    with provider.get_tracer("caller").start_as_current_span("caller") as caller:
        report = await t.app.run({"goal": "g", "steps": [{"id": "a", "tool": "lookup", "args": {"city": "Oslo"}}]})
    created = next(e for e in report.events if isinstance(e, RunCreated))
    assert created.trace["parent"] == f"{caller.get_span_context().span_id:016x}"
    root = one(t.spans(), "invoke_workflow g")
    assert root.context.trace_id == caller.get_span_context().trace_id
    assert root.parent.span_id == caller.get_span_context().span_id
    assert f"{root.context.span_id:016x}" == created.trace["traceparent"].split("-")[2]


async def test_tracing_off_installs_nothing_and_stores_no_context(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = Charter(db_path, tools=[lookup], clock=FakeClock(auto_advance=True))
    assert app.tracer is None and app.engine().hosting.feeds == []
    report = await app.run({"goal": "g", "steps": [{"id": "a", "tool": "lookup", "args": {"city": "Oslo"}}]})
    assert next(e for e in report.events if isinstance(e, RunCreated)).trace == {}
    app.close()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    disabled = Charter(db_path, clock=FakeClock(auto_advance=True))
    assert disabled.tracer is None and disabled.engine().hosting.feeds == []
    disabled.close()


def test_a_log_without_a_context_gets_stable_ids_from_the_run_id() -> None:
    a, again, b = run_trace("abc123", {}), run_trace("abc123", {}), run_trace("def456", {})
    assert a == again and a.trace_id != b.trace_id and a.root_id != b.root_id
    assert a.parent_id is None and a.sampled
    stored = run_trace("abc123", {"traceparent": f"00-{'1' * 32}-{'2' * 16}-00", "parent": "3" * 16})
    assert (stored.trace_id, stored.root_id, stored.parent_id, stored.sampled) == (
        int("1" * 32, 16), int("2" * 16, 16), int("3" * 16, 16), False)


@pytest.mark.parametrize("url", ["http://localhost:4318", "https://otel.example.com/v1/traces", " http://[::1]:4318 "])
def test_a_collectors_url_is_http_or_https_with_a_host(url: str) -> None:
    assert check_endpoint(url, "--otel") == url


@pytest.mark.parametrize("url", ["", "not-a-url", "localhost:4318", "ftp://x", "http://", "http://:4318",
                                 "http://host:99999", "http://host:port"])
def test_anything_else_is_refused_naming_where_it_came_from(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^--otel: .* an http:// or https:// URL with a host"):
        check_endpoint(url, "--otel")
    if url:  # an empty variable is an unset one
        with pytest.raises(ConfigError, match=r"^OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "):
            check_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318",
                               "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": url})
    with pytest.raises(ConfigError, match=r"^Tracer\(endpoint=...\): "):
        Tracer(endpoint=url)


@pytest.mark.parametrize(("error", "said"), [
    (ConnectionError("HTTPConnection(host='127.0.0.1', port=9): Failed to establish a new connection: "
                     "[Errno 111] Connection refused\")"), "Connection refused"),
    (ConnectionError("Max retries exceeded (Caused by SSLError(SSLCertVerificationError(1, '[SSL: "
                     "CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)')))"),
     "certificate verify failed: self-signed certificate"),
    (TimeoutError("HTTPConnectionPool(host='h', port=4318): Read timed out. (read timeout=10)"), "timed out"),
    ("Service Unavailable", "Service Unavailable"),
])
def test_a_collector_out_of_reach_is_said_with_the_words_that_matter(error: object, said: str) -> None:
    assert _why(error) == said
