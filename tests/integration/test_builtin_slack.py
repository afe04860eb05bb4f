"""The built-in Slack tool against a real HTTP server on 127.0.0.1 standing in for Slack."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from charter import ToolContext, load_tools, workspace
from charter.builtins.slack import slack_post
from charter.errors import PermanentError, RetryableError
from charter.workspace import Workspace, WorkspaceConfig, secrets
from tests.loopback_http import Reply, Server

CTX = ToolContext("run1", "step1", None, 1, "run1/step1")
TOKEN = "xoxb-test-4242424242-secret"
METADATA = {"event_type": "charter_effect", "event_payload": {"idempotency_key": "run1/step1"}}


def api_reply(data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(data).encode())


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """The active workspace, without Slack settings; a test adds them with :func:`configure`."""
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    active = Workspace(tmp_path, WorkspaceConfig())
    token = workspace.activate(active)
    yield active
    workspace._current.reset(token)


def configure(ws: Workspace, **slack: Any) -> None:
    ws.config = WorkspaceConfig.model_validate({"slack": {"timeout": 5, **slack}})


def test_the_module_loads_as_a_tool_source() -> None:
    assert load_tools(["charter.builtins.slack"]).names() == ["slack_post"]
    assert slack_post.effect == "write" and slack_post.targets_of({"channel": "#ops"}) == ["#ops"]


async def test_post_with_a_bot_token(ws: Workspace, serve: Callable[..., Server]) -> None:
    server = serve(lambda req: api_reply({"ok": True, "channel": "C0123", "ts": "1700000000.000100"}))
    configure(ws, token="${env:TEST_SLACK_TOKEN}", api_url=server.url + "/api/", channel="#general")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Deployed*"}}]
    got = await slack_post.invoke({"text": "Deployed v2", "channel": "#ops", "blocks": blocks}, CTX)
    assert got == {"ok": True, "channel": "C0123", "ts": "1700000000.000100"}
    [seen] = server.seen
    assert seen.path == "/api/chat.postMessage"
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["content-type"] == "application/json; charset=utf-8"
    assert seen.json == {"channel": "#ops", "text": "Deployed v2", "blocks": blocks, "metadata": METADATA}
    assert secrets.redact(f"token {TOKEN}") == "token ***"  # registered for redaction when read

    await slack_post.invoke({"text": "to the default channel"}, CTX)
    assert server.seen[1].json["channel"] == "#general"


async def test_post_with_a_webhook(ws: Workspace, serve: Callable[..., Server]) -> None:
    server = serve(lambda req: Reply(200, {"Content-Type": "text/html"}, b"ok"))
    configure(ws, webhook_url=server.url + "/services/T0/B0/abc")
    got = await slack_post.invoke({"text": "hello"}, CTX)
    assert got == {"ok": True, "channel": None, "ts": None}
    [seen] = server.seen
    assert seen.path == "/services/T0/B0/abc" and "authorization" not in seen.headers
    assert seen.json == {"text": "hello", "metadata": METADATA}


async def test_slack_errors(ws: Workspace, serve: Callable[..., Server]) -> None:
    replies = {
        "channel_not_found": api_reply({"ok": False, "error": "channel_not_found"}),
        "ratelimited": api_reply({"ok": False, "error": "ratelimited"}, headers={"Retry-After": "3"}),
        "http429": api_reply({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "5"}),
        "http502": Reply(502, body=b"<html>Bad Gateway</html>"),
    }
    server = serve(lambda req: replies[req.json["channel"]])
    configure(ws, token="${env:TEST_SLACK_TOKEN}", api_url=server.url)
    with pytest.raises(PermanentError, match=r"chat.postMessage failed: channel_not_found \(check the channel"):
        await slack_post.invoke({"text": "x", "channel": "channel_not_found"}, CTX)
    with pytest.raises(RetryableError, match=r"chat\.postMessage failed: ratelimited") as limited:
        await slack_post.invoke({"text": "x", "channel": "ratelimited"}, CTX)
    assert limited.value.next_retry_delay == 3
    with pytest.raises(RetryableError, match="HTTP 429") as too_many:
        await slack_post.invoke({"text": "x", "channel": "http429"}, CTX)
    assert too_many.value.next_retry_delay == 5
    with pytest.raises(RetryableError, match="HTTP 502"):
        await slack_post.invoke({"text": "x", "channel": "http502"}, CTX)


async def test_missing_settings_say_how_to_configure(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PermanentError, match=r"token: \$\{env:SLACK_BOT_TOKEN\}.*webhook_url"):
        await slack_post.invoke({"text": "x", "channel": "#ops"}, CTX)
    configure(ws, channel="#ops")
    with pytest.raises(PermanentError, match="Slack is not configured"):
        await slack_post.invoke({"text": "x"}, CTX)
    configure(ws, token="${env:TEST_SLACK_TOKEN}")
    with pytest.raises(PermanentError, match=re.escape("no channel: give `channel`, or set `slack: {channel: ...}`")):
        await slack_post.invoke({"text": "x"}, CTX)
    configure(ws, token="${env:TEST_SLACK_TOKEN_UNSET}", channel="#ops")
    with pytest.raises(PermanentError, match=r"slack.token: the secret \$TEST_SLACK_TOKEN_UNSET is not set"):
        await slack_post.invoke({"text": "x"}, CTX)
    monkeypatch.setenv("TEST_SLACK_TOKEN_NL", TOKEN + "\n")
    configure(ws, token="${env:TEST_SLACK_TOKEN_NL}", channel="#ops")
    with pytest.raises(PermanentError, match=r"slack\.token must be one word") as newline:
        await slack_post.invoke({"text": "x"}, CTX)
    assert TOKEN not in str(newline.value)
    configure(ws, webhook_url="ftp://hooks.example.com/secret-path")
    with pytest.raises(PermanentError, match="not a valid http or https URL") as bad:
        await slack_post.invoke({"text": "x"}, CTX)
    assert "secret-path" not in str(bad.value)


async def test_errors_never_show_the_token_or_the_webhook_url(
    ws: Workspace, serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake Slack echoes what it received, credentials included, in its error replies.
    server = serve(lambda req: Reply(500 if req.path.startswith("/api") else 404, body=json.dumps([req.path, req.headers]).encode()))
    configure(ws, token="${env:TEST_SLACK_TOKEN}", api_url=server.url + "/api", channel="#ops")
    with pytest.raises(RetryableError, match="HTTP 500") as failed:
        await slack_post.invoke({"text": "x"}, CTX)
    assert TOKEN not in str(failed.value)

    hook = server.url + "/services/T0/B0/hook-secret-123"
    monkeypatch.setenv("TEST_SLACK_WEBHOOK", hook)
    configure(ws, webhook_url="${env:TEST_SLACK_WEBHOOK}")
    with pytest.raises(PermanentError, match="the Slack webhook refused the message: HTTP 404") as refused:
        await slack_post.invoke({"text": "x"}, CTX)
    assert "hook-secret-123" not in str(refused.value)

    server.close()  # nothing listens any more: a connection error, which must not show the URL either
    with pytest.raises(RetryableError, match="the Slack webhook: ConnectError") as unreachable:
        await slack_post.invoke({"text": "x"}, CTX)
    assert "hook-secret-123" not in str(unreachable.value)
