"""Secrets: values read from the environment that must never be written down.

A :class:`Secret` names an environment variable. Its value is read only when a
tool needs it (:meth:`Secret.reveal`), and from then on every text Charter
stores or prints passes through :func:`redact`: events, step rows, ``charter
show``, error messages. Redaction is by value, so a secret that a library puts
into an exception message (a webhook URL in an HTTP error, say) is caught too.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any

from ..errors import PermanentError
from ..events import Event

MASK = "***"
# Shorter values would mask ordinary words; such a "secret" is not one worth the damage.
_MIN_LENGTH = 6

_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


class Secret:
    """A value from the environment variable ``name``, revealed only to the code that uses it."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def reveal(self) -> str:
        """The value (registered for redaction first), or a :class:`PermanentError` naming the variable."""
        value = os.environ.get(self.name)
        if not value:
            raise PermanentError(f"the secret ${self.name} is not set in the environment")
        register(value)
        return value

    def __repr__(self) -> str:
        return f"Secret(${self.name})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("Secret", self.name))


def register(value: str) -> None:
    """Mask ``value`` wherever Charter writes text from now on."""
    global _pattern
    if len(value) < _MIN_LENGTH or value in _known:
        return
    with _lock:
        _known.add(value)
        _known.add(json.dumps(value)[1:-1])  # as it appears inside stored JSON (quotes, backslashes, non-ASCII)
        # longest first, so a secret that contains another is masked whole
        _pattern = re.compile("|".join(re.escape(v) for v in sorted(_known, key=len, reverse=True)))


def register_named(text: str) -> None:
    """Register, for redaction, the value of every ``${env:NAME}`` that ``text`` names and the
    environment sets (unset ones are left for :meth:`Secret.reveal` to report when needed)."""
    for match in ENV_REF.finditer(text):
        value = os.environ.get(match.group(1))
        if value:
            register(value)


def redacting() -> bool:
    """Whether any secret was read yet (until then, redaction is skipped entirely)."""
    return _pattern is not None


def redact(text: str) -> str:
    """``text`` with every known secret replaced by ``***``."""
    pattern = _pattern
    if pattern is None:
        return text
    return pattern.sub(MASK, text)


def redact_data(value: Any) -> Any:
    """JSON-like data with every known secret masked in its strings (keys too)."""
    if _pattern is None:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value


def masked(ev: Event) -> Event:
    """``ev`` with every known secret masked, before anything (state, observers, the store) sees it."""
    if _pattern is None:
        return ev
    data = ev.to_data()
    clean = redact_data(data)
    return ev if clean == data else type(ev)(at=ev.at, **clean)


def expand(text: str, where: str) -> str:
    """``text`` with ``${env:NAME}`` references replaced by their values (registered as secrets)."""

    def value(m: re.Match[str]) -> str:
        try:
            return Secret(m.group(1)).reveal()
        except PermanentError as exc:
            raise PermanentError(f"{where}: {exc}") from None

    return ENV_REF.sub(value, text)
