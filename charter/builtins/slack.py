"""Slack: post a message with a bot token (``chat.postMessage``) or an incoming webhook.

Settings come from ``slack:`` in ``charter.yaml`` (:class:`~charter.workspace.SlackConfig`).
With a ``token`` the tool calls ``{api_url}/chat.postMessage``; else with a
``webhook_url`` it posts to the webhook. Both are secrets, usually written as
``${env:NAME}``: they are read when a message is sent, and masked wherever
Charter writes text.

Slack does not deduplicate messages by key, so the step's idempotency key
travels in the message's metadata (event type ``charter_effect``): a message
posted twice, by an attempt that died after Slack accepted it, can be told
apart and found.

Load with ``--tools charter.builtins.slack``.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from collections.abc import Sequence
from typing import Any

import httpx

from ..errors import PermanentError, RetryableError
from ..tools import ToolContext, tool
from ..workspace import current
from .http import retry_after

EVENT_TYPE = "charter_effect"
_HOW = (
    "Slack is not configured: in charter.yaml, set `slack: {token: ${env:SLACK_BOT_TOKEN}, channel: '#general'}` "
    "(a bot token with the chat:write scope) or `slack: {webhook_url: ${env:SLACK_WEBHOOK_URL}}`"
)
# Errors Slack reports with ok=false that a later attempt may not meet.
_TRANSIENT = {"ratelimited", "internal_error", "service_unavailable", "request_timeout"}
_HINTS = {
    "not_in_channel": "invite the bot to the channel",
    "channel_not_found": "check the channel's name or id, and that the bot can see it",
    "invalid_auth": "check slack.token",
    "not_authed": "check slack.token",
    "token_revoked": "the token was revoked: set a new slack.token",
    "missing_scope": "the token needs the chat:write scope",
}


@tool(effect="write", target="channel")
async def slack_post(
    text: str,
    ctx: ToolContext,
    channel: str | None = None,
    blocks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Post a message to a Slack channel (default: slack.channel), tagged with the step's idempotency key."""
    ws = current()
    cfg = ws.config.slack
    if cfg is None or (cfg.token is None and cfg.webhook_url is None):
        raise PermanentError(_HOW)
    channel = channel or cfg.channel
    message: dict[str, Any] = {
        "text": text,
        "metadata": {"event_type": EVENT_TYPE, "event_payload": {"idempotency_key": ctx.idempotency_key}},
    }
    if blocks is not None:
        message["blocks"] = blocks
    if cfg.token is not None:
        if not channel:
            raise PermanentError(
                "slack_post: no channel: give `channel`, or set `slack: {channel: ...}` in charter.yaml"
            )
        token = ws.secret(cfg.token, "slack.token") or ""
        if not (token.isascii() and token.isprintable()) or " " in token:  # caught here, before it reaches a header
            raise PermanentError("slack.token must be one word of ASCII text (a trailing newline in the variable?)")
        url = _checked_url(cfg.api_url.rstrip("/") + "/chat.postMessage", "chat.postMessage")
        payload = {**message, "channel": channel}
        response = await _post(url, payload, cfg.timeout, "chat.postMessage", (token,), token)
        return _api_result(response, channel, (token,))
    webhook = ws.secret(cfg.webhook_url, "slack.webhook_url") or ""
    url = _checked_url(webhook, "the Slack webhook")
    hidden = (webhook, url.path)  # a webhook's URL is its credential, mostly in the path
    if channel:
        message["channel"] = channel  # legacy webhooks honour it; an app's webhook posts to its own channel
    response = await _post(url, message, cfg.timeout, "the Slack webhook", hidden)
    if response.is_success:  # Slack answers a plain "ok"
        return {"ok": True, "channel": channel, "ts": None}
    error = " ".join(_scrub(response.text, hidden).split())[:200] or "no detail"  # scrubbed, then cut
    raise PermanentError(f"the Slack webhook refused the message: HTTP {response.status_code}: {error}")


def _checked_url(url: str, what: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.raw_host:
        # The URL itself is not shown: a webhook's URL is a secret.
        raise PermanentError(f"{what}: the configured URL is not a valid http or https URL")
    return parsed


async def _post(
    url: httpx.URL, payload: dict[str, Any], timeout: float, what: str, hidden: Sequence[str], token: str | None = None
) -> httpx.Response:
    """POST ``payload`` as JSON; transport failures, 429 and 5xx become :class:`RetryableError`.

    Messages name the endpoint by ``what`` and mask the ``hidden`` values: they never show a credential.
    """
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with asyncio.timeout(timeout), httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(url, content=jsonlib.dumps(payload).encode(), headers=headers)
    except (TimeoutError, httpx.TimeoutException):
        raise RetryableError(f"{what}: no response within {timeout} s (slack.timeout)") from None
    except httpx.TransportError as exc:
        raise RetryableError(f"{what}: {type(exc).__name__}: {_scrub(str(exc), hidden) or 'no detail'}") from None
    status = response.status_code
    if status == 429 or status >= 500:
        delay = retry_after(response.headers.get("retry-after"))
        raise RetryableError(f"{what}: HTTP {status} {response.reason_phrase}", next_retry_delay=delay)
    return response


def _api_result(response: httpx.Response, channel: str, hidden: Sequence[str]) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code != 200 or not isinstance(data, dict):
        raise PermanentError(
            f"chat.postMessage: unexpected HTTP {response.status_code} response (is slack.api_url right?)"
        )
    if not data.get("ok"):
        error = _scrub(str(data.get("error") or "unknown_error"), hidden)
        if error in _TRANSIENT:
            delay = retry_after(response.headers.get("retry-after"))
            raise RetryableError(f"chat.postMessage failed: {error}", next_retry_delay=delay)
        hint = _HINTS.get(error)
        raise PermanentError(f"chat.postMessage failed: {error}" + (f" ({hint})" if hint else ""))
    return {"ok": True, "channel": data.get("channel") or channel, "ts": data.get("ts")}


def _scrub(text: str, hidden: Sequence[str]) -> str:
    # Redaction elsewhere masks registered secrets too; a message that never holds one is safer still.
    for value in hidden:
        if len(value) >= 6:  # a shorter "secret" (a path of "/") would mangle the text, not protect anything
            text = text.replace(value, "***")
    return text
