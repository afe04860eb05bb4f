"""What an attempt writes into its run's log while it runs: each model call, answered once.

A model's answer is committed to the log before the attempt goes on with it.
When an attempt is interrupted (a crash, a pause) and tried again, the new
attempt finds the answers already paid for and reuses them, in order, as long
as it asks the same questions; a failed attempt's answers are not reused, so a
retry asks afresh.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable

from .clock import Clock
from .events import Event, ModelCalled
from .models.base import Model, ModelRequest, ModelResponse
from .models.prices import cost
from .rules import Unit

Recorder = Callable[[Event], Awaitable[None]]


def request_digest(model: str, request: ModelRequest) -> str:
    text = json.dumps([model, request.to_json()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class Journal:
    """One attempt's durable record of model calls."""

    def __init__(self, unit: Unit, attempt: int, record: Recorder, clock: Clock) -> None:
        self.unit = unit
        self.attempt = attempt
        self._record = record
        self._clock = clock
        self._reusable = list(unit.calls)  # answers left by interrupted attempts
        self._index = 0
        self.reused = 0

    async def complete(self, model: Model, request: ModelRequest) -> ModelResponse:
        """``model.complete(request)``, unless this attempt's predecessor already got the answer."""
        index = self._index
        self._index += 1
        digest = request_digest(model.name, request)
        if index < len(self._reusable) and self._reusable[index].digest == digest:
            self.reused += 1
            return ModelResponse.from_json(self._reusable[index].response)
        del self._reusable[index:]  # the conversation went another way: nothing later fits
        response = await model.complete(request)
        await self._record(ModelCalled(
            at=self._clock.now(), step=self.unit.step, item=self.unit.item, attempt=self.attempt,
            index=index, digest=digest, model=model.name, request=request.to_json(),
            response=response.to_json(), input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens, cost=cost(model.name, response.usage),
        ))
        return response
