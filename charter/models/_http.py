"""Turning provider SDK errors into Charter's retryable and permanent errors.

What decides is who can fix it. A server that answers "try later" (429, 503, a
timeout) is retried; a server that says the request itself is wrong is not,
whatever status it chose to say it with (llama.cpp's servers answer 500 to a
request they cannot parse); and a refused connection means nothing listens at
that address, which no retry will change.
"""

from __future__ import annotations

import email.utils
import errno
import re
import time
from typing import Any

from ..errors import PermanentError, RetryableError

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
# Answers that mean "later" by definition: whatever the body says, they are not about the request.
_LATER_STATUS = frozenset({408, 429, 503, 529})
_INVALID_KINDS = frozenset({"invalid_request_error", "invalid_request", "badrequesterror", "validation_error"})
_SAYS_INVALID = re.compile(
    r"invalid[ _]request|validation error|input should be|not supported|unsupported|"
    r"unknown (?:parameter|field|argument)|unrecognized (?:request )?(?:argument|parameter|field)|"
    r"extra (?:inputs|fields) (?:are )?not permitted|field required",
    re.IGNORECASE,
)


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def translate(exc: Exception, provider: str, url: str | None = None) -> Exception:
    """A provider SDK's exception as :class:`RetryableError` or :class:`PermanentError`.

    ``url`` is the base URL the model was given: errors that never reached a
    server name it, since a wrong URL is the usual cause.
    """
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    name = type(exc).__name__
    detail = _detail(exc)
    where = f"{provider} at {url}" if url else provider
    if status is not None:
        message = f"{provider} answered {status}: {detail}"
        if status in RETRYABLE_STATUS and (status in _LATER_STATUS or not says_request_invalid(exc)):
            return RetryableError(message, next_retry_delay=retry_after(getattr(response, "headers", None)))
        return PermanentError(message)
    if "Timeout" in name:
        return RetryableError(f"{where} did not answer in time ({name})")
    if "Connection" in name:
        if _refused(exc):
            return PermanentError(f"cannot reach {where}: connection refused (nothing listens there: "
                                  "is the server running, and is the URL right?)")
        return RetryableError(f"cannot reach {where}: {_root_cause(exc)}")
    # A body that is not what the API promises (malformed JSON, a proxy's error page) is
    # usually a passing fault of the server or of something in between.
    return RetryableError(f"{provider} sent an answer that cannot be read: {name}: {detail}")


def says_request_invalid(exc: Exception) -> bool:
    """Whether an error answer says the request itself is wrong (its type, or its words)."""
    body = getattr(exc, "body", None)
    err = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(err, dict):
        kinds = {str(err.get(k, "")).lower() for k in ("type", "code")}
        if kinds & _INVALID_KINDS:
            return True
    return bool(_SAYS_INVALID.search(_detail(exc)))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first (each exception once, should the chain loop)."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not seen for seen in chain):
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def _refused(exc: BaseException) -> bool:
    """Whether a connection error was a refusal: nothing listens at that address."""
    return any(isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED
               for e in _chain(exc))


def _root_cause(exc: BaseException) -> str:
    """The innermost cause's message: the SDKs' own ("Connection error.") says nothing of why."""
    root = _chain(exc)[-1]
    return str(root) or type(root).__name__


def _detail(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str) and err:
            return err[:500]  # {"error": "..."}: llama.cpp's older servers
    return str(getattr(exc, "message", None) or exc)[:500]
