"""Turning provider SDK errors into Charter's retryable and permanent errors."""

from __future__ import annotations

import email.utils
import time
from typing import Any

from ..errors import PermanentError, RetryableError

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


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


def translate(exc: Exception, provider: str) -> Exception:
    """A provider SDK's exception as :class:`RetryableError` or :class:`PermanentError`."""
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    name = type(exc).__name__
    detail = _detail(exc)
    if status is not None:
        message = f"{provider} answered {status}: {detail}"
        if status in RETRYABLE_STATUS:
            return RetryableError(message, next_retry_delay=retry_after(getattr(response, "headers", None)))
        return PermanentError(message)
    if "Timeout" in name:
        return RetryableError(f"{provider} did not answer in time ({name})")
    if "Connection" in name:
        return RetryableError(f"cannot reach {provider}: {detail}")
    # A body that is not what the API promises (malformed JSON, a proxy's error page) is
    # usually a passing fault of the server or of something in between.
    return RetryableError(f"{provider} sent an answer that cannot be read: {name}: {detail}")


def _detail(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(getattr(exc, "message", None) or exc)[:500]
