"""Retries for model calls made outside a step (the planner), on Charter's clock."""

from __future__ import annotations

from ..clock import Clock, SystemClock
from ..errors import RetryableError
from ..retry import RetryPolicy
from .base import Model, ModelRequest, ModelResponse

MODEL_RETRY = RetryPolicy(max_attempts=5, initial_interval=1.0, backoff=2.0, max_interval=60.0, jitter=0.2)


class RetryingModel:
    """Wraps a model: a :class:`RetryableError` (429, 5xx, a timeout) is retried with
    backoff, honouring the server's ``Retry-After``; anything else is raised."""

    def __init__(self, model: Model, *, policy: RetryPolicy = MODEL_RETRY, clock: Clock | None = None) -> None:
        self.inner = model
        self.name = model.name
        self.policy = policy
        self.clock: Clock = clock or SystemClock()
        self.attempts = 0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        failures = 0
        while True:
            self.attempts += 1
            try:
                return await self.inner.complete(request)
            except RetryableError as exc:
                failures += 1
                if failures >= self.policy.max_attempts:
                    raise
                delay = exc.next_retry_delay
                if delay is None:
                    delay = self.policy.delay(failures, f"{self.name}#{self.attempts}")
                await self.clock.sleep(min(delay, self.policy.max_interval * 10))
