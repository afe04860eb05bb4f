"""Providers against a real HTTP server on loopback speaking their APIs: answers, errors, limits, timeouts."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from charter import ConfigError, PermanentError, RetryableError
from charter.models import Message, ModelRequest, RetryingModel, ToolSpec, cost, model_from_spec
from charter.models.base import ToolCall
from charter.testing import FakeClock
from tests.provider_server import ProviderServer, Reply, anthropic_reply, openai_reply, provider_server

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
