"""HTTP tools: GET and POST to public addresses, with limits on size and time.

Settings come from ``http:`` in ``charter.yaml`` (:class:`~charter.workspace.HTTPConfig`):
``max_bytes`` bounds a response body, ``timeout`` a whole call (redirects
included), and ``allow_private`` lets the tools reach loopback, private and
link-local addresses, which they refuse by default so that a plan cannot read a
cloud metadata endpoint or an internal service. Every address a host name
resolves to is checked, at every redirect hop, and the connection goes to the
address that was checked.

A response is returned as data (``url``, ``status``, ``headers``, ``text`` or
``json``, ``bytes``), except that 408, 429 and 5xx raise :class:`RetryableError`
(honouring ``Retry-After``), and any other 4xx a :class:`PermanentError` unless
the call says ``raise_for_status: false``.

Load with ``--tools charter.builtins.http``.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json as jsonlib
import math
import re
import socket
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import httpx
from pydantic import PositiveInt

from ..errors import PermanentError, RetryableError
from ..tools import ToolContext, tool
from ..workspace import HTTPConfig, current

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_KEPT_HEADERS = ("content-type", "etag", "last-modified", "location")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_UNKNOWN_HOST = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
_ALLOW_HINT = "to allow private addresses, set `http: {allow_private: true}` in charter.yaml"


def refusal(address: str) -> str | None:
    """Why the http tools refuse to connect to ``address`` (an IP literal), or None for a public address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv6 form of an IPv4 address reaches that IPv4 address: judge the latter.
        if ip.ipv4_mapped is not None:
            return refusal(str(ip.ipv4_mapped))
        if ip.sixtofour is not None and (inner := refusal(str(ip.sixtofour))) is not None:
            return f"{inner} (inside a 6to4 address)"
        if ip.is_site_local:
            return "a site-local address"
    for flag, phrase in (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(ip, flag):
            return phrase
    if not ip.is_global:  # shared address space (100.64/10) and the like: internal to some network
        return "an address that is not globally routable"
    return None


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True)
class _Request:
    method: str
    url: httpx.URL
    headers: dict[str, str]  # the caller's: dropped at a redirect to another origin, never shown in errors
    content: bytes | None = None
    content_type: str | None = None
    key: str | None = None  # the Idempotency-Key header's value


@tool
async def http_get(
    url: str,
    headers: dict[str, str] | None = None,
    raise_for_status: bool = True,
    max_bytes: PositiveInt | None = None,
) -> dict[str, Any]:
    """Fetch a URL (http or https, public addresses only): status, headers, text or json, final url, bytes."""
    request = _Request("GET", _parse(url), _caller_headers(headers))
    return await _fetch(request, max_bytes, raise_for_status)


# A field named "json" shadows BaseModel.json, which pydantic warns about; the field still works.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "json"', category=UserWarning)

    @tool(effect="write", target="url")
    async def http_post(
        url: str,
        ctx: ToolContext,
        json: Any = None,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        raise_for_status: bool = True,
        max_bytes: PositiveInt | None = None,
    ) -> dict[str, Any]:
        """POST json (or a text body) to a URL, with the step's idempotency key as the Idempotency-Key header."""
        if json is not None and body is not None:
            raise PermanentError("http_post: give either json or body, not both")
        given = _caller_headers(headers)
        # A caller's own Idempotency-Key wins: it may follow the receiving API's rules for keys.
        key = next((given.pop(k) for k in list(given) if k.lower() == "idempotency-key"), ctx.idempotency_key)
        request = _Request("POST", _parse(url), given, key=key)
        if json is not None:
            request = replace(request, content=jsonlib.dumps(json).encode(), content_type="application/json")
        elif body is not None:
            request = replace(request, content=body.encode(), content_type="text/plain; charset=utf-8")
        return await _fetch(request, max_bytes, raise_for_status)


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise PermanentError(f"not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise PermanentError(f"only http and https URLs are supported, not {parsed.scheme or 'a relative URL'!r}")
    if not parsed.raw_host:
        raise PermanentError("the URL has no host")
    return parsed


def _caller_headers(headers: dict[str, str] | None) -> dict[str, str]:
    out = {}
    for name, value in (headers or {}).items():
        # Checked here so that the HTTP library never puts a (possibly secret) value into an error.
        if not _TOKEN.match(name):
            raise PermanentError(f"{name!r} is not a valid header name")
        if not value.isascii() or any(c in value for c in "\r\n\0"):
            raise PermanentError(f"header {name!r}: the value must be ASCII text on one line")
        if name.lower() != "host":  # the URL says where the request goes
            out[name] = value
    return out


def _limit(max_bytes: int | None, cfg: HTTPConfig) -> int:
    if max_bytes is None:
        return cfg.max_bytes
    if max_bytes > cfg.max_bytes:
        raise PermanentError(
            f"max_bytes={max_bytes} is above the workspace's limit, http.max_bytes={cfg.max_bytes} in charter.yaml"
        )
    return max_bytes


def _shown(url: httpx.URL) -> str:
    """The URL for messages: without user info or query, which may carry credentials."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"


def _scrub(text: str, values: Iterable[str]) -> str:
    for value in values:
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


async def _fetch(req: _Request, max_bytes: int | None, raise_for_status: bool) -> dict[str, Any]:
    cfg = current().config.http
    limit = _limit(max_bytes, cfg)
    secrets = list(req.headers.values())
    try:
        async with asyncio.timeout(cfg.timeout), httpx.AsyncClient(timeout=cfg.timeout, trust_env=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                response = await _send(client, req, cfg.allow_private)
                try:
                    follow = _redirect(req, response)
                    if follow is None:
                        return await _result(req, response, limit, raise_for_status)
                finally:
                    await response.aclose()
                req = follow
    except (TimeoutError, httpx.TimeoutException):
        raise RetryableError(
            f"{req.method} {_shown(req.url)}: no complete response within {cfg.timeout} s (http.timeout)"
        ) from None
    except httpx.DecodingError:
        raise PermanentError(f"{req.method} {_shown(req.url)}: the response body cannot be decoded") from None
    except httpx.TransportError as exc:
        detail = _scrub(str(exc), secrets) or "no detail"
        raise RetryableError(f"{req.method} {_shown(req.url)}: {type(exc).__name__}: {detail}") from None
    raise PermanentError(f"{req.method} {_shown(req.url)}: more than {MAX_REDIRECTS} redirects")


async def _send(client: httpx.AsyncClient, req: _Request, allow_private: bool) -> httpx.Response:
    headers = httpx.Headers()
    if req.content_type is not None:
        headers["Content-Type"] = req.content_type
    for name, value in req.headers.items():
        headers[name] = value  # replaces ours whatever the case of the name
    if req.key is not None:
        headers["Idempotency-Key"] = req.key
    url = req.url
    extensions: dict[str, Any] = {}
    if not allow_private:
        # Connect to the address just checked, so that a second lookup cannot lead elsewhere (DNS rebinding);
        # the Host header and TLS (SNI and the certificate check) still use the name.
        url = req.url.copy_with(host=await _checked_address(req.url))
        headers["Host"] = req.url.netloc.decode("ascii")
        extensions = {"sni_hostname": req.url.raw_host.decode("ascii")}
    request = client.build_request(req.method, url, headers=headers, content=req.content, extensions=extensions)
    return await client.send(request, stream=True)


async def _checked_address(url: httpx.URL) -> str:
    host = url.raw_host.decode("ascii")
    addresses = await _resolve(host, url.port or (443 if url.scheme == "https" else 80))
    for address in addresses:
        reason = refusal(address)
        if reason is not None:
            named = host if address == host else f"{host} ({address})"
            raise PermanentError(f"refusing to connect to {named}: it is {reason}; {_ALLOW_HINT}")
    return addresses[0]


async def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in _UNKNOWN_HOST:
            raise PermanentError(f"cannot resolve host {host!r}: {exc.strerror}") from None
        raise RetryableError(f"cannot resolve host {host!r} now: {exc.strerror}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise RetryableError(f"host {host!r} resolved to no address")
    return addresses


def _redirect(req: _Request, response: httpx.Response) -> _Request | None:
    location = response.headers.get("location")
    if response.status_code not in _REDIRECTS or location is None:
        return None
    try:
        target = _parse(str(req.url.join(location)))
    except (PermanentError, httpx.InvalidURL) as exc:
        raise PermanentError(f"{req.method} {_shown(req.url)} redirected to an unusable URL: {exc}") from None
    follow = replace(req, url=target)
    if response.status_code == 303 or (response.status_code in (301, 302) and req.method == "POST"):
        follow = replace(follow, method="GET", content=None, content_type=None)  # what browsers do
    if (target.scheme, target.raw_host, target.port) != (req.url.scheme, req.url.raw_host, req.url.port):
        follow = replace(follow, headers={})  # the caller's headers may be credentials for the first host only
    return follow


async def _result(req: _Request, response: httpx.Response, limit: int, raise_for_status: bool) -> dict[str, Any]:
    status, shown = response.status_code, f"{req.method} {_shown(req.url)}"
    if status in (408, 429) or status >= 500:
        delay = retry_after(response.headers.get("retry-after"))
        raise RetryableError(f"{shown}: HTTP {status} {response.reason_phrase}", next_retry_delay=delay)
    if 400 <= status < 500 and raise_for_status:
        # Scrubbed before it is cut short, so that no part of a header's value that the server echoed is left.
        head = _scrub(
            (await _read(response, 4096, shown, strict=False)).decode("utf-8", "replace"), req.headers.values()
        )
        snippet = " ".join(head.split())[:200]
        raise PermanentError(f"{shown}: HTTP {status} {response.reason_phrase}" + (f": {snippet}" if snippet else ""))
    body = await _read(response, limit, shown, strict=True)
    ctype = response.headers.get("content-type", "")
    text: str | None = None
    data: Any = None
    if ctype.split(";")[0].strip().lower().endswith(("/json", "+json")):
        try:
            data = jsonlib.loads(body)
        except ValueError:
            text = _decode(body, response)  # labelled JSON but is not: still worth seeing
    else:
        text = _decode(body, response)
    return {
        "url": str(req.url),
        "status": status,
        "headers": {k: response.headers[k] for k in _KEPT_HEADERS if k in response.headers},
        "text": text,
        "json": data,
        "bytes": len(body),
    }


async def _read(response: httpx.Response, limit: int, shown: str, *, strict: bool) -> bytes:
    """The body, decompressed, up to ``limit`` bytes: more is an error when ``strict``, else cut off."""
    declared = response.headers.get("content-length", "")
    # A compressed body's length says little about its decoded size, so only a plain one is judged up front.
    if strict and declared.isdigit() and int(declared) > limit and "content-encoding" not in response.headers:
        raise PermanentError(f"{shown}: the response is {declared} bytes, more than max_bytes={limit}")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            if strict:
                raise PermanentError(f"{shown}: the response is more than max_bytes={limit} bytes")
            break
    return b"".join(chunks)[:limit]


def _decode(body: bytes, response: httpx.Response) -> str:
    try:
        return body.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # an unknown charset
        return body.decode("utf-8", errors="replace")
