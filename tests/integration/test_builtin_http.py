"""The built-in HTTP tools against real HTTP servers on 127.0.0.1 (no network beyond loopback)."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from charter import ToolContext, load_tools, workspace
from charter.builtins import http as http_module
from charter.builtins.http import http_get, http_post, refusal, retry_after
from charter.errors import PermanentError, RetryableError
from charter.workspace import Workspace, WorkspaceConfig
from tests.loopback_http import Reply, Seen, Server, json_reply

CTX = ToolContext("run1", "step1", None, 1, "run1/step1")


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    """The active workspace; a test changes its settings with :func:`configure`."""
    active = Workspace(tmp_path, WorkspaceConfig.model_validate({"http": {"allow_private": True, "timeout": 5}}))
    token = workspace.activate(active)
    yield active
    workspace._current.reset(token)


def configure(ws: Workspace, **settings: Any) -> None:
    ws.config = WorkspaceConfig.model_validate(settings)


def free_port() -> int:
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_port
    probe.server_close()
    return port


def test_the_module_loads_as_a_tool_source() -> None:
    registry = load_tools(["charter.builtins.http"])
    assert registry.names() == ["http_get", "http_post"]
    assert http_get.effect == "read" and http_post.effect == "write"
    assert http_post.targets_of({"url": "https://api.example.com/x"}) == ["https://api.example.com/x"]


async def test_get_returns_json_or_text(ws: Workspace, serve: Callable[..., Server]) -> None:
    def respond(req: Seen) -> Reply:
        if req.path == "/data":
            return json_reply({"items": [1, 2]})
        return Reply(200, {"Content-Type": "text/plain; charset=latin-1", "ETag": '"v1"'}, "café".encode("latin-1"))

    server = serve(respond)
    got = await http_get.invoke({"url": server.url + "/data"}, CTX)
    assert got == {
        "url": server.url + "/data",
        "status": 200,
        "headers": {"content-type": "application/json"},
        "text": None,
        "json": {"items": [1, 2]},
        "bytes": 17,
    }
    page = await http_get.invoke({"url": server.url + "/page", "headers": {"Accept": "text/plain"}}, CTX)
    assert page["text"] == "café" and page["json"] is None and page["bytes"] == 4
    assert page["headers"] == {"content-type": "text/plain; charset=latin-1", "etag": '"v1"'}
    assert server.seen[1].headers["accept"] == "text/plain"


async def test_post_sends_the_idempotency_key_and_the_body(ws: Workspace, serve: Callable[..., Server]) -> None:
    server = serve(lambda req: json_reply({"created": True}, status=201))
    got = await http_post.invoke({"url": server.url + "/orders", "json": {"sku": "A1", "n": 2}}, CTX)
    assert got["status"] == 201 and got["json"] == {"created": True}
    first = server.seen[0]
    assert first.method == "POST" and first.path == "/orders"
    assert first.headers["idempotency-key"] == "run1/step1"
    assert first.headers["content-type"] == "application/json"
    assert json.loads(first.body) == {"sku": "A1", "n": 2}

    await http_post.invoke({"url": server.url, "body": "héllo", "headers": {"idempotency-key": "order-7"}}, CTX)
    second = server.seen[1]
    assert second.body == "héllo".encode() and second.headers["content-type"] == "text/plain; charset=utf-8"
    assert second.headers["idempotency-key"] == "order-7"  # the caller's own key wins

    with pytest.raises(PermanentError, match="either json or body"):
        await http_post.invoke({"url": server.url, "json": {}, "body": "x"}, CTX)


async def test_a_response_larger_than_max_bytes_fails(ws: Workspace, serve: Callable[..., Server]) -> None:
    configure(ws, http={"allow_private": True, "max_bytes": 1000})
    big = b"x" * 5000
    server = serve(lambda req: Reply(body=big, length=req.path == "/declared"))
    with pytest.raises(PermanentError, match="5000 bytes, more than max_bytes=1000"):
        await http_get.invoke({"url": server.url + "/declared"}, CTX)
    with pytest.raises(PermanentError, match="more than max_bytes=1000 bytes"):  # no Content-Length: streamed
        await http_get.invoke({"url": server.url + "/streamed"}, CTX)
    with pytest.raises(PermanentError, match="more than max_bytes=10"):
        await http_get.invoke({"url": server.url + "/streamed", "max_bytes": 10}, CTX)
    with pytest.raises(PermanentError, match=r"above the workspace's limit, http.max_bytes=1000"):
        await http_get.invoke({"url": server.url, "max_bytes": 5000}, CTX)


async def test_a_slow_server_times_out_as_retryable(ws: Workspace, serve: Callable[..., Server]) -> None:
    configure(ws, http={"allow_private": True, "timeout": 0.3})
    server = serve(lambda req: Reply(body=b"late", delay=10))
    started = time.monotonic()
    with pytest.raises(RetryableError, match=r"no complete response within 0.3 s"):
        await http_get.invoke({"url": server.url}, CTX)
    assert time.monotonic() - started < 3


async def test_private_addresses_are_refused_by_default(ws: Workspace, serve: Callable[..., Server]) -> None:
    configure(ws)  # allow_private is false unless charter.yaml says otherwise
    server = serve(lambda req: Reply(body=b"internal"))
    with pytest.raises(PermanentError) as caught:
        await http_get.invoke({"url": server.url + "/admin"}, CTX)
    message = str(caught.value)
    assert "refusing to connect to 127.0.0.1: it is a loopback address" in message
    assert "`http: {allow_private: true}` in charter.yaml" in message
    with pytest.raises(PermanentError, match=r"refusing to connect to localhost \(.*\): it is a loopback address"):
        await http_post.invoke({"url": server.url.replace("127.0.0.1", "localhost"), "body": "x"}, CTX)
    assert server.seen == []

    configure(ws, http={"allow_private": True})
    assert (await http_get.invoke({"url": server.url}, CTX))["text"] == "internal"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:93.184.216.34", None),
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd00::1", "a private address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a private address"),  # also reserved; the first reason found is given
        ("100.64.0.1", "an address that is not globally routable"),
        ("fec0::1", "a site-local address"),
        ("2002:7f00:1::", "a loopback address (inside a 6to4 address)"),
    ],
)
def test_which_addresses_are_refused(address: str, reason: str | None) -> None:
    assert refusal(address) == reason


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names resolved by the test, and the test server's 127.0.0.1 treated as public."""
    names: dict[str, list[str]] = {}

    async def resolve(host: str, port: int) -> list[str]:
        return names.get(host, [host])

    real = http_module.refusal
    monkeypatch.setattr(http_module, "_resolve", resolve)
    monkeypatch.setattr(http_module, "refusal", lambda a: None if a == "127.0.0.1" else real(a))
    return names


async def test_every_hop_is_checked_and_the_checked_address_is_used(
    ws: Workspace, serve: Callable[..., Server], fake_dns: dict[str, list[str]]
) -> None:
    configure(ws, http={"timeout": 2})
    server = serve(lambda req: Reply(302, {"Location": req.path.removeprefix("/to/")}) if req.path != "/" else Reply())
    port = server.httpd.server_port
    fake_dns["api.test"] = ["127.0.0.1"]
    got = await http_get.invoke({"url": f"http://api.test:{port}/"}, CTX)
    assert got["status"] == 200 and got["url"] == f"http://api.test:{port}/"
    assert server.seen[0].headers["host"] == f"api.test:{port}"  # connected to the checked address, by name

    fake_dns["meta.test"] = ["93.184.216.34", "169.254.169.254"]  # one bad address is enough to refuse
    for target, shown in [
        ("http://10.0.0.1/x", "10.0.0.1: it is a private address"),
        ("http://[::ffff:127.0.0.2]/", "::ffff:127.0.0.2: it is a loopback address"),
        ("http://meta.test/latest", "meta.test (169.254.169.254): it is a link-local address"),
    ]:
        with pytest.raises(PermanentError, match=re.escape(f"refusing to connect to {shown}")):
            await http_get.invoke({"url": f"http://api.test:{port}/to/{target}"}, CTX)


async def test_redirects(ws: Workspace, serve: Callable[..., Server]) -> None:
    other = serve(lambda req: json_reply({"path": req.path, "method": req.method}))

    def respond(req: Seen) -> Reply:
        routes = {"/a": "/b", "/loop": "/loop", "/away": other.url + "/there", "/post303": "/b", "/post307": "/b"}
        if req.path in routes:
            code = 303 if req.path == "/post303" else 307 if req.path == "/post307" else 302
            return Reply(code, {"Location": routes[req.path]})
        return json_reply({"path": req.path, "method": req.method})

    server = serve(respond)
    got = await http_get.invoke({"url": server.url + "/a", "headers": {"X-Token": "t0ken-value"}}, CTX)
    assert got["url"] == server.url + "/b" and got["json"] == {"path": "/b", "method": "GET"}
    assert server.seen[1].headers["x-token"] == "t0ken-value"  # same origin: headers kept

    away = await http_get.invoke({"url": server.url + "/away", "headers": {"X-Token": "t0ken-value"}}, CTX)
    assert away["url"] == other.url + "/there"
    assert "x-token" not in other.seen[0].headers  # another origin does not get the caller's headers

    assert (await http_post.invoke({"url": server.url + "/post303", "json": {"a": 1}}, CTX))["json"]["method"] == "GET"
    assert (await http_post.invoke({"url": server.url + "/post307", "json": {"a": 1}}, CTX))["json"]["method"] == "POST"
    assert json.loads(server.seen[-1].body) == {"a": 1}

    before = len(server.seen)
    with pytest.raises(PermanentError, match="more than 5 redirects"):
        await http_get.invoke({"url": server.url + "/loop"}, CTX)
    assert len(server.seen) - before == 6


@pytest.mark.parametrize("url", ["ftp://example.com/f", "file:///etc/passwd", "/relative/path", "http:///no-host", "gopher://x"])
async def test_only_http_and_https_urls(ws: Workspace, url: str) -> None:
    with pytest.raises(PermanentError, match=r"only http and https|no host|not a valid URL"):
        await http_get.invoke({"url": url}, CTX)


async def test_statuses(ws: Workspace, serve: Callable[..., Server]) -> None:
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    replies = {
        "/busy": Reply(429, {"Retry-After": "7"}),
        "/down": Reply(503, {"Retry-After": later}),
        "/broken": Reply(500),
        "/missing": Reply(404, {"Content-Type": "text/plain"}, b"no such order"),
    }
    server = serve(lambda req: replies[req.path])
    with pytest.raises(RetryableError, match="HTTP 429") as busy:
        await http_post.invoke({"url": server.url + "/busy", "json": {}}, CTX)
    assert busy.value.next_retry_delay == 7
    with pytest.raises(RetryableError, match="HTTP 503") as down:
        await http_get.invoke({"url": server.url + "/down"}, CTX)
    assert down.value.next_retry_delay is not None and 100 < down.value.next_retry_delay <= 120
    with pytest.raises(RetryableError, match="HTTP 500") as broken:
        await http_get.invoke({"url": server.url + "/broken"}, CTX)
    assert broken.value.next_retry_delay is None
    with pytest.raises(PermanentError, match=r"GET .*/missing: HTTP 404 Not Found: no such order"):
        await http_get.invoke({"url": server.url + "/missing"}, CTX)
    data = await http_get.invoke({"url": server.url + "/missing", "raise_for_status": False}, CTX)
    assert data["status"] == 404 and data["text"] == "no such order"


async def test_errors_never_show_header_values(ws: Workspace, serve: Callable[..., Server]) -> None:
    secret = "Bearer sk-live-0123456789"
    server = serve(lambda req: Reply(400, {}, f"bad token: {req.headers.get('authorization')}".encode()))
    with pytest.raises(PermanentError, match="HTTP 400") as rejected:
        await http_post.invoke({"url": server.url, "json": {}, "headers": {"Authorization": secret}}, CTX)
    assert "sk-live" not in str(rejected.value) and "***" in str(rejected.value)
    with pytest.raises(RetryableError, match="ConnectError") as refused:
        await http_get.invoke({"url": f"http://127.0.0.1:{free_port()}/", "headers": {"Authorization": secret}}, CTX)
    assert "sk-live" not in str(refused.value)
    with pytest.raises(PermanentError, match="'X-Key': the value must be ASCII text on one line") as bad:
        await http_get.invoke({"url": server.url, "headers": {"X-Key": "sk-live-01\r\nInjected: 1"}}, CTX)
    assert "sk-live" not in str(bad.value)


def test_retry_after() -> None:
    assert retry_after("7") == 7 and retry_after("1.5") == 1.5 and retry_after("-3") == 0
    assert retry_after(None) is None and retry_after("soon") is None and retry_after("nan") is None
    assert retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0
    delay = retry_after(email.utils.formatdate(time.time() + 60, usegmt=True))
    assert delay is not None and 50 < delay <= 60
