"""Retries for model calls made outside a step (the planner), on Charter's clock.

Retrying is never silent: each wait is announced (to a callback, else to the
``charter.models`` logger) with the error and how long until the next try, and
the error that ends the retries says how many tries it took and how long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..clock import Clock, SystemClock
from ..errors import RetryableError
from ..retry import RetryPolicy
from .base import Model, ModelRequest, ModelResponse

MODEL_RETRY = RetryPolicy(max_attempts=5, initial_interval=1.0, backoff=2.0, max_interval=60.0, jitter=0.2)
log = logging.getLogger("charter.models")


@dataclass(frozen=True)
class Retrying:
    """A model call failed and will be tried again in ``delay`` seconds."""

    model: str
    error: RetryableError
    attempt: int  # the try that failed, 1-based
    max_attempts: int
    delay: float

    def __str__(self) -> str:
        return (f"{self.model}: {self.error}; retrying in {self.delay:.1f}s "
                f"(try {self.attempt + 1} of {self.max_attempts})")


class RetryingModel:
    """Wraps a model: a :class:`RetryableError` (429, 5xx, a timeout) is retried with
    backoff, honouring the server's ``Retry-After``; anything else is raised.

    ``on_retry`` is told of each wait before it starts (default: a warning on the
    ``charter.models`` logger).
    """

    def __init__(self, model: Model, *, policy: RetryPolicy = MODEL_RETRY, clock: Clock | None = None,
                 on_retry: Callable[[Retrying], None] | None = None) -> None:
        self.inner = model
        self.name = model.name
        self.policy = policy
        self.clock: Clock = clock or SystemClock()
        self.on_retry = on_retry or (lambda notice: log.warning("%s", notice))
        self.attempts = 0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        failures = 0
        started = self.clock.now()
        while True:
            self.attempts += 1
            try:
                return await self.inner.complete(request)
            except RetryableError as exc:
                failures += 1
                if failures >= self.policy.max_attempts:
                    if failures == 1:
                        raise
                    took = self.clock.now() - started
                    raise RetryableError(f"{exc} (gave up after {failures} tries in {took:.1f}s)",
                                         next_retry_delay=exc.next_retry_delay) from exc
                delay = exc.next_retry_delay
                if delay is None:
                    delay = self.policy.delay(failures, f"{self.name}#{self.attempts}")
                delay = min(delay, self.policy.max_interval * 10)
                self.on_retry(Retrying(self.name, exc, failures, self.policy.max_attempts, delay))
                await self.clock.sleep(delay)
