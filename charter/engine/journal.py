"""What an attempt writes into its run's log while it runs: each model call and each agent tool call.

An answer (or a tool's result) is committed to the log before the attempt goes
on with it. When an attempt is interrupted (a crash, a pause) and tried again,
the new attempt finds what was already paid for or done and reuses it, in
order, as long as it asks the same things; a failed attempt's record is not
reused, so a retry asks afresh.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..clock import Clock
from ..events import Event, ModelCalled, PlanRevised, RunFailed, ToolCalled
from ..models.base import Model, ModelRequest, ModelResponse
from ..models.prices import cost
from . import rules
from .rules import RunState, Unit

Recorder = Callable[[Event], Awaitable[None]]

#: While a model answers inside an attempt: (step, item, attempt, index) of the call, as its
#: ``ModelCalled`` will say. A replay's model reads it to answer with the recorded call of that place.
call_site: contextvars.ContextVar[tuple[str, int | None, int, int] | None] = contextvars.ContextVar(
    "charter_model_call_site", default=None)


def request_digest(model: str, request: ModelRequest) -> str:
    return _digest([model, request.to_json()])


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def planner_events(calls: Sequence[tuple[ModelRequest, ModelResponse]], now: float,
                   latencies: Sequence[float] = ()) -> list[ModelCalled]:
    """The planner's model calls, as events of the run they planned (``step`` is empty).
    ``latencies``: the seconds each call took, in the same order (a PlanningResult's)."""
    return [
        ModelCalled(at=now, index=i, digest=request_digest(resp.model, req), model=resp.model,
                    request=req.to_json(), response=resp.to_json(), input_tokens=resp.usage.input_tokens,
                    output_tokens=resp.usage.output_tokens, cost=cost(resp.model, resp.usage),
                    latency=latencies[i] if i < len(latencies) else None)
        for i, (req, resp) in enumerate(calls)
    ]


class Journal:
    """One attempt's durable record of model calls and agent tool calls."""

    def __init__(self, unit: Unit, attempt: int, record: Recorder, clock: Clock) -> None:
        self.unit = unit
        self.attempt = attempt
        self._record = record
        self._clock = clock
        # what interrupted attempts left, by kind, in order
        self._models = [c for c in unit.calls if isinstance(c, ModelCalled)]
        self._tools = [c for c in unit.calls if isinstance(c, ToolCalled)]
        self._model_index = 0
        self._tool_index = 0
        self.reused = 0

    async def complete(self, model: Model, request: ModelRequest) -> ModelResponse:
        """``model.complete(request)``, unless an interrupted attempt already got this answer."""
        index = self._model_index
        self._model_index += 1
        digest = request_digest(model.name, request)
        if index < len(self._models) and self._models[index].digest == digest:
            self.reused += 1
            return ModelResponse.from_json(self._models[index].response)
        del self._models[index:]  # the conversation went another way: nothing later fits
        started = time.perf_counter()  # latency is measured, not scheduled: real time, also under a fake clock
        site = call_site.set((self.unit.step, self.unit.item, self.attempt, index))
        try:
            response = await model.complete(request)
        finally:
            call_site.reset(site)
        latency = time.perf_counter() - started
        await self._record(ModelCalled(
            at=self._clock.now(), step=self.unit.step, item=self.unit.item, attempt=self.attempt,
            index=index, digest=digest, model=model.name, request=request.to_json(),
            response=response.to_json(), input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens, cost=cost(model.name, response.usage), latency=latency,
        ))
        return response

    async def tool(
        self, name: str, args: dict[str, Any], call: Callable[[str], Awaitable[Any]]
    ) -> tuple[Any, str | None]:
        """``call(key)`` for a tool, unless an interrupted attempt already did it. Returns (output, error).

        ``key`` is the idempotency key of this call: the step's key, the call's place in the
        conversation and what it asks, so the same call in a retried attempt (or a revised plan
        that kept the step) gets the same key, and a different call a new one.
        """
        index = self._tool_index
        self._tool_index += 1
        digest = _digest([name, args])
        if index < len(self._tools) and self._tools[index].digest == digest:
            self.reused += 1
            done = self._tools[index]
            return done.output, done.error
        del self._tools[index:]
        base = self.unit.key  # set by the attempt's StepStarted
        assert base is not None, "a tool call outside a started attempt"
        output: Any = None
        error: str | None = None
        try:
            output = await call(f"{base}/call{index}-{digest[:8]}")
        except Exception as exc:  # the agent sees the failure and may adapt
            error = f"{type(exc).__name__}: {exc}"
        await self._record(ToolCalled(
            at=self._clock.now(), step=self.unit.step, item=self.unit.item, attempt=self.attempt,
            index=index, digest=digest, tool=name, args=args, output=output, error=error,
        ))
        return output, error


def revision_events(state: RunState, outcome: Any, now: float) -> list[Event]:
    """What a finished replanning writes: the planner's model calls and the revised plan, or
    (``outcome`` an exception: the planner gave up) the run's failure."""
    if isinstance(outcome, Exception):
        return [RunFailed(at=now, reason=f"{state.reason}; no revised plan: {outcome}",
                          failed_steps=[s for s, st in state.steps.items() if st.status == rules.FAILED])]
    events: list[Event] = list(planner_events(outcome.result.calls, now, outcome.result.latencies))
    events.append(PlanRevised(at=now, version=state.plan_version + 1, plan=outcome.plan.to_json(), by="planner",
                              reason=state.reason, diff=outcome.diff, needs_review=outcome.needs_review))
    return events
