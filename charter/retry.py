"""Retry policies: how often a step is tried, and how long to wait between tries."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class RetryPolicy:
    """When and how a failed attempt is tried again.

    Attributes:
        max_attempts: tries in all, the first included (1 means no retry).
        initial_interval: seconds before the second try.
        backoff: each further wait is the previous one times this.
        max_interval: no wait is longer than this many seconds.
        jitter: a wait varies by up to this fraction either way, so that many
            failing steps do not retry in lock step. The variation is derived
            from the step's idempotency key and attempt, so it is the same
            every time the rules are evaluated.
        retry_unknown_errors: whether an exception that is neither
            :class:`~charter.RetryableError` nor :class:`~charter.PermanentError`
            is retried (the default) or fails the step at once.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.2
    retry_unknown_errors: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_interval < 0 or self.max_interval < 0:
            raise ValueError("intervals must not be negative")
        if self.backoff < 1:
            raise ValueError("backoff must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def delay(self, attempt: int, seed: str) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        try:
            base = min(self.initial_interval * self.backoff ** (attempt - 1), self.max_interval)
        except OverflowError:  # thousands of attempts: the cap is the answer
            base = self.max_interval
        if self.jitter == 0 or base == 0:
            return base
        spread = random.Random(f"{seed}#{attempt}").uniform(-self.jitter, self.jitter)
        return min(base * (1 + spread), self.max_interval)

    def merged(self, overrides: dict[str, Any]) -> RetryPolicy:
        """This policy with the fields a plan step overrides."""
        return replace(self, **overrides)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "initial_interval": self.initial_interval,
            "backoff": self.backoff,
            "max_interval": self.max_interval,
            "jitter": self.jitter,
            "retry_unknown_errors": self.retry_unknown_errors,
        }


DEFAULT_RETRY = RetryPolicy()
