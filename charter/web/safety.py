"""The web server's guards: the token on every request, actions safe from other sites, no secret out.

- **The token.** Every request (the page, its assets, the API, the event stream) carries
  it: ``Authorization: Bearer TOKEN`` (API clients), or the ``charter_ui`` cookie, which
  a ``?token=TOKEN`` in the address sets (HttpOnly, SameSite=Strict) before redirecting
  to the same address without it, so that it leaves the address bar and the history.
- **Actions from this page only.** Actions are POSTs with a JSON body. One authenticated
  by the cookie must also carry the ``X-Charter-Action`` header, which a form on another
  site cannot send (and a script there could only after a CORS preflight, which this
  server never answers), and its ``Origin``, if any, must be this server.
- **No secret out.** Every JSON response and every streamed event passes through the
  workspace's redaction: every secret known to this process (those the workspace file
  names are registered when it loads) is masked, whatever wrote it into the log.

It may import the workspace's redaction, and nothing of the engine or the store.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..workspace.secrets import redact_data

COOKIE = "charter_ui"
ACTION_HEADER = "X-Charter-Action"


def dumps(value: Any) -> str:
    """JSON for the page or an API client, every known secret masked."""
    return json.dumps(redact_data(_plain(value)), ensure_ascii=False, default=str, allow_nan=False)


def _plain(value: Any) -> Any:
    """``value`` with numbers JSON cannot hold (inf, nan) as text, so that nothing fails to encode."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class SafeJSON(JSONResponse):
    """A JSON response with every known secret masked."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")


def error(status: int, message: str, **extra: Any) -> SafeJSON:
    """A clear error for the page and API clients: ``{"error": message}``, never a traceback."""
    return SafeJSON({"error": message, **extra}, status_code=status)


class TokenGuard:
    """Refuse every request without the token; refuse actions that another site could have sent.

    A plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``), so that a streamed
    response goes to the client as it is written, with the client's back-pressure.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    def _matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self._refusal(request)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        """The answer to a request that goes no further (a refusal, or the token's redirect), or None."""
        query_token = request.query_params.get("token")
        if query_token is not None and request.method == "GET" and self._matches(query_token):
            # The address keeps everything but the token; the cookie holds it from now on.
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + ("?" + urlencode(rest) if rest else "")
            redirect = RedirectResponse(target, status_code=303)
            redirect.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")
            return redirect
        auth = request.headers.get("authorization", "")
        by_bearer = auth.lower().startswith("bearer ") and self._matches(auth[7:].strip())
        by_cookie = self._matches(request.cookies.get(COOKIE))
        if not (by_bearer or by_cookie):
            return error(401, "this Charter UI needs its token: open the address `charter ui` printed "
                              "(it ends in ?token=...), or send `Authorization: Bearer TOKEN`")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            problem = _cross_site(request, by_bearer)
            if problem:
                return error(403, problem)
        return None


def _cross_site(request: Request, by_bearer: bool) -> str | None:
    """Why an action may come from another site, or None."""
    origin = request.headers.get("origin")
    if origin == "null":
        return "refused: an action from an opaque origin"
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        return f"refused: an action from another site ({origin})"
    if not by_bearer and request.headers.get(ACTION_HEADER) != "1":
        return f"refused: actions from the page carry the {ACTION_HEADER} header (a form on another site cannot)"
    return None
