"""Providers against a real HTTP server on loopback speaking their APIs: answers, errors, limits, timeouts."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from charter import ConfigError, PermanentError, RetryableError
from charter.models import Message, ModelRequest, RetryingModel, ToolSpec, cost, model_from_spec
from charter.models.base import ToolCall
from charter.testing import FakeClock
from tests.provider_server import (
    LLAMA_CPP_PYTHON_REFUSAL,
    ProviderServer,
    Reply,
    anthropic_reply,
    openai_reply,
    provider_server,
    refusing_forms,
)

ASK = ModelRequest(messages=(Message("system", "Be brief."), Message("user", "Say hi")))
SCHEMA = {"type": "object", "properties": {"greeting": {"type": "string"}}, "required": ["greeting"]}


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with provider_server() as s:
        yield s


def openai_model(server: ProviderServer, timeout: str = "5") -> object:
    return model_from_spec("openai:gpt-4o-mini", {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.url + "/v1",
                                                  "CHARTER_MODEL_TIMEOUT": timeout})


def anthropic_model(server: ProviderServer, timeout: str = "5") -> object:
    return model_from_spec("anthropic:claude-test", {"ANTHROPIC_API_KEY": "sk-ant", "ANTHROPIC_BASE_URL": server.url,
                                                            "CHARTER_MODEL_TIMEOUT": timeout})


async def test_openai_text_answer_and_usage(server: ProviderServer) -> None:
    server.reply(openai_reply("hi there", prompt_tokens=20, completion_tokens=3))
    model = openai_model(server)
    resp = await model.complete(ASK)  # type: ignore[attr-defined]
    assert (resp.text, resp.model, resp.usage.input_tokens, resp.usage.output_tokens) == ("hi there", "openai:gpt-4o-mini", 20, 3)
    [req] = server.received
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.body["model"] == "gpt-4o-mini"
    assert req.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    assert cost("openai:gpt-4o-mini", resp.usage) == pytest.approx((20 * 0.15 + 3 * 0.60) / 1e6)


async def test_openai_structured_output_and_tool_calls(server: ProviderServer) -> None:
    server.reply(openai_reply('{"greeting": "hi"}'),
                 openai_reply(None, tool_calls=[{"name": "lookup", "arguments": '{"q": "x"}'},
                                                {"name": "broken", "arguments": "{not json"}], finish_reason="tool_calls"))
    model = openai_model(server)
    resp = await model.complete(ModelRequest(ASK.messages, schema=SCHEMA))  # type: ignore[attr-defined]
    assert json.loads(resp.text) == {"greeting": "hi"}
    assert server.received[0].body["response_format"]["json_schema"]["schema"] == SCHEMA
    tools = (ToolSpec("lookup", "Look up", {"type": "object", "properties": {"q": {"type": "string"}}}),)
    resp = await model.complete(ModelRequest(ASK.messages, tools=tools))  # type: ignore[attr-defined]
    assert [(c.name, c.arguments) for c in resp.tool_calls] == [("lookup", {"q": "x"}), ("broken", {"__unparsed__": "{not json"})]
    assert server.received[1].body["tools"][0]["function"]["name"] == "lookup"


async def test_openai_errors_are_sorted_by_what_helps(server: ProviderServer) -> None:
    model = openai_model(server)
    server.reply(Reply(429, {"error": {"message": "slow down"}}, {"retry-after": "7"}))
    with pytest.raises(RetryableError) as info:
        await model.complete(ASK)  # type: ignore[attr-defined]
    assert info.value.next_retry_delay == 7 and "429" in str(info.value) and "slow down" in str(info.value)
    server.reply(Reply(503, {"error": {"message": "overloaded"}}))
    with pytest.raises(RetryableError, match="503"):
        await model.complete(ASK)  # type: ignore[attr-defined]
    server.reply(Reply(400, {"error": {"message": "bad model"}}))
    with pytest.raises(PermanentError, match="400: bad model"):
        await model.complete(ASK)  # type: ignore[attr-defined]
    server.reply(Reply(401, {"error": {"message": "bad key"}}))
    with pytest.raises(PermanentError, match="401"):
        await model.complete(ASK)  # type: ignore[attr-defined]
    server.reply(Reply(200, b"{this is not json"))
    with pytest.raises(RetryableError, match="cannot be read"):
        await model.complete(ASK)  # type: ignore[attr-defined]


async def test_a_slow_server_is_a_retryable_timeout(server: ProviderServer) -> None:
    model = openai_model(server, timeout="0.3")
    server.reply(Reply(200, openai_reply("late").body, delay=1.5))
    with pytest.raises(RetryableError, match="in time"):
        await model.complete(ASK)  # type: ignore[attr-defined]


async def test_anthropic_text_schema_and_tools(server: ProviderServer) -> None:
    model = anthropic_model(server)
    server.reply(anthropic_reply([{"type": "text", "text": "hello"}], input_tokens=30, output_tokens=4))
    resp = await model.complete(ASK)  # type: ignore[attr-defined]
    assert (resp.text, resp.usage.input_tokens, resp.usage.output_tokens) == ("hello", 30, 4)
    req = server.received[0]
    assert req.path == "/v1/messages"
    assert "sk-ant" in req.headers.get("x-api-key", "") + req.headers.get("authorization", "")
    assert req.body["system"] == "Be brief." and req.body["messages"] == [{"role": "user", "content": "Say hi"}]

    server.reply(anthropic_reply([{"type": "tool_use", "id": "tu1", "name": "answer", "input": {"greeting": "hi"}}],
                                 stop_reason="tool_use"))
    resp = await model.complete(ModelRequest(ASK.messages, schema=SCHEMA))  # type: ignore[attr-defined]
    assert json.loads(resp.text) == {"greeting": "hi"} and resp.tool_calls == ()
    assert server.received[1].body["tool_choice"] == {"type": "tool", "name": "answer"}

    server.reply(anthropic_reply([{"type": "text", "text": "let me look"},
                                  {"type": "tool_use", "id": "tu2", "name": "lookup", "input": {"q": "x"}}],
                                 stop_reason="tool_use"))
    tools = (ToolSpec("lookup", "Look up", {"type": "object", "properties": {"q": {"type": "string"}}}),)
    resp = await model.complete(ModelRequest(ASK.messages, tools=tools))  # type: ignore[attr-defined]
    assert resp.text == "let me look" and [(c.id, c.name, c.arguments) for c in resp.tool_calls] == [("tu2", "lookup", {"q": "x"})]


async def test_anthropic_errors(server: ProviderServer) -> None:
    model = anthropic_model(server)
    server.reply(Reply(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                       {"retry-after": "3"}))
    with pytest.raises(RetryableError) as info:
        await model.complete(ASK)  # type: ignore[attr-defined]
    assert info.value.next_retry_delay == 3 and "Overloaded" in str(info.value)
    server.reply(Reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens"}}))
    with pytest.raises(PermanentError, match="max_tokens"):
        await model.complete(ASK)  # type: ignore[attr-defined]


async def test_retrying_model_honours_retry_after_on_its_clock(server: ProviderServer) -> None:
    clock = FakeClock(start=0, auto_advance=True)
    model = RetryingModel(openai_model(server), clock=clock)  # type: ignore[arg-type]
    server.reply(Reply(429, {"error": {"message": "later"}}, {"retry-after": "12"}),
                 Reply(500, {"error": {"message": "oops"}}),
                 openai_reply("finally"))
    resp = await model.complete(ASK)
    assert resp.text == "finally" and len(server.received) == 3
    assert clock.now() >= 12  # waited what the server asked, then a backoff
    server.reply(Reply(400, {"error": {"message": "no"}}))
    with pytest.raises(PermanentError):
        await model.complete(ASK)
    assert len(server.received) == 4  # a permanent error is not retried


def test_model_specs_and_keys() -> None:
    with pytest.raises(ConfigError, match="no model chosen"):
        model_from_spec(None, {})
    with pytest.raises(ConfigError, match="not provider:model"):
        model_from_spec("gpt-4o", {})
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        model_from_spec("openai:gpt-4o", {})
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY is not set"):
        model_from_spec("anthropic:claude-sonnet-4-0", {})
    with pytest.raises(ConfigError, match="unknown model provider 'acme'"):
        model_from_spec("acme:x", {})
    with pytest.raises(ConfigError, match="CHARTER_BASE_URL"):
        model_from_spec("compat:qwen", {})
    with pytest.raises(ConfigError, match="CHARTER_MODEL_TIMEOUT='soon': give the seconds"):
        model_from_spec("ollama:llama3", {"CHARTER_MODEL_TIMEOUT": "soon"})
    assert model_from_spec("ollama:llama3", {}).name == "ollama:llama3"
    assert model_from_spec(None, {"CHARTER_MODEL": "compat:qwen", "CHARTER_BASE_URL": "http://127.0.0.1:9/v1"}).name == "compat:qwen"


async def test_mcp_tool_names_are_offered_in_the_providers_alphabet_and_mapped_back(server: ProviderServer) -> None:
    # Providers accept only [A-Za-z0-9_-] in tool names; an MCP tool is called "server.tool" in Charter.
    tools = (ToolSpec("time.get_current_time", "Now", {"type": "object", "properties": {}}),)
    history = (
        *ASK.messages,
        Message("assistant", "", (ToolCall("c0", "time.get_current_time", {}),)),
        Message("tool", '{"result": 1}', tool_call_id="c0"),
    )
    server.reply(openai_reply(None, tool_calls=[{"name": "time__get_current_time", "arguments": "{}"}],
                              finish_reason="tool_calls"))
    resp = await openai_model(server).complete(ModelRequest(history, tools=tools))  # type: ignore[attr-defined]
    assert [c.name for c in resp.tool_calls] == ["time.get_current_time"]
    body = server.received[0].body
    assert body["tools"][0]["function"]["name"] == "time__get_current_time"
    assert body["messages"][2]["tool_calls"][0]["function"]["name"] == "time__get_current_time"

    server.reply(anthropic_reply([{"type": "tool_use", "id": "tu", "name": "time__get_current_time", "input": {}}],
                                 stop_reason="tool_use"))
    resp = await anthropic_model(server).complete(ModelRequest(history, tools=tools))  # type: ignore[attr-defined]
    assert [c.name for c in resp.tool_calls] == ["time.get_current_time"]
    body = server.received[1].body
    assert body["tools"][0]["name"] == "time__get_current_time"
    assert body["messages"][1]["content"][0]["name"] == "time__get_current_time"


# --- failing fast, and saying where -----------------------------------------------------------


def free_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_refused_connection_names_the_url_and_is_not_retried() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    clock = FakeClock(start=0, auto_advance=True)
    notices: list[object] = []
    model = RetryingModel(model_from_spec("compat:qwen", {"CHARTER_BASE_URL": url}), clock=clock,
                          on_retry=notices.append)
    with pytest.raises(PermanentError) as info:
        await model.complete(ASK)
    assert f"cannot reach compat at {url}: connection refused" in str(info.value)
    assert model.attempts == 1 and notices == [] and clock.now() == 0  # failed at once: nothing listens
    anthropic = model_from_spec("anthropic:claude-test", {"ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": url})
    with pytest.raises(PermanentError, match=f"cannot reach anthropic at {url}: connection refused"):
        await anthropic.complete(ASK)  # type: ignore[attr-defined]


async def test_retries_are_announced_with_the_wait_and_the_give_up_says_how_long(
        server: ProviderServer, caplog: pytest.LogCaptureFixture) -> None:
    from charter.models.retrying import Retrying

    clock = FakeClock(start=0, auto_advance=True)
    notices: list[Retrying] = []
    model = RetryingModel(openai_model(server), clock=clock, on_retry=notices.append)  # type: ignore[arg-type]
    server.reply(*[Reply(503, {"error": {"message": "overloaded"}}, {"retry-after": "2"})] * 5)
    with pytest.raises(RetryableError) as info:
        await model.complete(ASK)
    assert [(n.attempt, n.delay) for n in notices] == [(1, 2.0), (2, 2.0), (3, 2.0), (4, 2.0)]
    assert str(notices[0]) == ("openai:gpt-4o-mini: openai answered 503: overloaded; retrying in 2.0s "
                               "(try 2 of 5)")
    assert "gave up after 5 tries in 8.0s" in str(info.value)
    # Without a callback, the notices go to the charter.models logger.
    server.reply(Reply(503, {"error": {"message": "busy"}}, {"retry-after": "1"}), openai_reply("ok"))
    with caplog.at_level("WARNING", logger="charter.models"):
        resp = await RetryingModel(openai_model(server), clock=clock).complete(ASK)  # type: ignore[arg-type]
    assert resp.text == "ok" and "busy; retrying in 1.0s (try 2 of 5)" in caplog.text


def test_an_answer_that_says_the_request_is_invalid_is_permanent_whatever_its_status() -> None:
    import httpx
    import openai

    from charter.models._http import translate

    def error(status: int, body: dict[str, object]) -> Exception:
        request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
        response = httpx.Response(status, json=body, request=request)
        return openai.APIStatusError("error", response=response, body=body)

    invalid = {"error": {"message": "bad response_format", "type": "invalid_request_error"}}
    assert isinstance(translate(error(500, invalid), "compat"), PermanentError)
    validation = {"error": {"message": "1 validation error: Input should be 'text' or 'json_object'",
                            "type": "internal_server_error"}}
    assert isinstance(translate(error(500, validation), "compat"), PermanentError)
    assert isinstance(translate(error(500, {"error": {"message": "out of memory"}}), "compat"), RetryableError)
    # "Later" answers stay retryable whatever their words.
    assert isinstance(translate(error(503, invalid), "compat"), RetryableError)
    assert isinstance(translate(error(429, invalid), "compat"), RetryableError)


# --- structured output: negotiated, remembered, settable ------------------------------------------


def compat(server: ProviderServer, spec: str = "compat:small") -> object:
    return model_from_spec(spec, {"CHARTER_BASE_URL": server.url + "/v1", "CHARTER_MODEL_TIMEOUT": "5"})


def forms_sent(server: ProviderServer) -> list[str]:
    return [(r.body.get("response_format") or {}).get("type", "text") for r in server.received]


GREETING = openai_reply('{"greeting": "hi"}')


@pytest.mark.parametrize(("accepts", "status", "message", "kind", "expected"), [
    # llama-cpp-python: json_object (with a schema) or text; an unknown form is a 500.
    ({"json_object", "text"}, 500, LLAMA_CPP_PYTHON_REFUSAL, "internal_server_error", ["json_schema", "json_object"]),
    # The same, with a FastAPI that says nothing of why (an empty message).
    ({"json_object", "text"}, 500, "", "internal_server_error", ["json_schema", "json_object"]),
    # A server with no structured output at all: the schema goes into the prompt.
    ({"text"}, 400, "response_format {form!r} is not supported", "invalid_request_error",
     ["json_schema", "json_object", "text"]),
    ({"text"}, 422, "unknown field response_format", "BadRequestError", ["json_schema", "json_object", "text"]),
])
async def test_structured_output_falls_back_to_what_the_server_accepts_and_remembers_it(
        accepts: set[str], status: int, message: str, kind: str, expected: list[str]) -> None:
    with provider_server(refusing_forms(accepts, lambda body: GREETING, status=status, message=message,
                                       kind=kind)) as server:
        clock = FakeClock(start=0, auto_advance=True)
        model = RetryingModel(compat(server), clock=clock)  # type: ignore[arg-type]
        resp = await model.complete(ModelRequest(ASK.messages, schema=SCHEMA))
        assert json.loads(resp.text) == {"greeting": "hi"}
        assert forms_sent(server) == expected and model.attempts == 1 and clock.now() == 0  # no retry, no wait
        last = server.received[-1].body
        if expected[-1] == "json_object":
            assert last["response_format"]["schema"] == SCHEMA
        # Whatever the form, the model is told the schema (json_object servers may ignore the one sent).
        system = last["messages"][0]["content"]
        assert system.startswith("Be brief.") and json.dumps(SCHEMA) in system
        assert [m["role"] for m in last["messages"]] == ["system", "user"]
        # Remembered for the model: a new instance (another step, the planner) asks in the accepted form at once.
        await compat(server).complete(ModelRequest(ASK.messages, schema=SCHEMA))  # type: ignore[attr-defined]
        assert forms_sent(server)[len(expected):] == [expected[-1]]
        # A request without a schema sends no response_format at all.
        await compat(server).complete(ASK)  # type: ignore[attr-defined]
        assert "response_format" not in server.received[-1].body


async def test_a_server_that_takes_json_schema_is_sent_json_schema_only(server: ProviderServer) -> None:
    server.responder = refusing_forms({"json_schema", "json_object", "text"}, lambda body: GREETING)
    for _ in range(2):
        await compat(server, "compat:full").complete(ModelRequest(ASK.messages, schema=SCHEMA))  # type: ignore[attr-defined]
    assert forms_sent(server) == ["json_schema", "json_schema"]
    assert json.dumps(SCHEMA) not in server.received[0].body["messages"][0]["content"]


async def test_the_form_can_be_fixed_per_model(server: ProviderServer) -> None:
    server.responder = refusing_forms({"json_schema", "json_object", "text"}, lambda body: GREETING)
    await compat(server, "compat:fixed?response_format=text").complete(  # type: ignore[attr-defined]
        ModelRequest(ASK.messages, schema=SCHEMA))
    await compat(server, "compat:fixed?response_format=json_object").complete(  # type: ignore[attr-defined]
        ModelRequest(ASK.messages, schema=SCHEMA))
    assert forms_sent(server) == ["text", "json_object"]
    # A fixed form is not negotiated: the server's refusal is the answer.
    server.responder = refusing_forms({"text"}, lambda body: GREETING)
    with pytest.raises(PermanentError, match="400: response_format type 'json_object' is not supported"):
        await compat(server, "compat:fixed?response_format=json_object").complete(  # type: ignore[attr-defined]
            ModelRequest(ASK.messages, schema=SCHEMA))
    for spec, message in [("compat:m?response_format=xml", "must be one of auto, json_schema, json_object, text"),
                          ("compat:m?format=json", "unknown option 'format'"),
                          ("compat:m?response_format", "options are"),
                          ("anthropic:c?response_format=text", "for OpenAI-compatible servers")]:
        with pytest.raises(ConfigError, match=message):
            model_from_spec(spec, {"CHARTER_BASE_URL": server.url, "ANTHROPIC_API_KEY": "k"})


async def test_when_every_form_is_refused_the_plain_request_error_is_raised(server: ProviderServer) -> None:
    # Not about the format at all (a context overflow): the error of the plainest request is the one that helps.
    server.responder = lambda body: Reply(400, {"error": {"message": "context length exceeded",
                                                          "type": "invalid_request_error"}})
    with pytest.raises(PermanentError, match="400: context length exceeded"):
        await compat(server, "compat:tiny").complete(ModelRequest(ASK.messages, schema=SCHEMA))  # type: ignore[attr-defined]
    assert forms_sent(server) == ["json_schema", "json_object", "text"]
    # Nothing was accepted, so nothing is remembered as refused.
    server.responder = refusing_forms({"json_schema", "json_object", "text"}, lambda body: GREETING)
    await compat(server, "compat:tiny").complete(ModelRequest(ASK.messages, schema=SCHEMA))  # type: ignore[attr-defined]
    assert forms_sent(server)[-1] == "json_schema"
