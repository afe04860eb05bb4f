"""Calling tools safely: the effect ledger, the policy check, and per-tool limits.

Every successful call of a ``write`` tool is recorded as an
:class:`EffectRecorded` event, committed as soon as the tool returns and before
the step's result. An attempt that comes again with the same idempotency key
(the process died before the step's result was committed, or the step is
retried) finds the entry and reuses its result instead of acting twice. The
window left, between the world changing and the entry's commit, is what a
tool's own check covers (the same content already in the file, a commit with
the key's trailer already in the history, the same Message-ID).

A run approved by a policy rather than a person has each write checked
against that policy again when it runs, with its real arguments: a target
that comes from an earlier step's output cannot slip past it.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..clock import Clock
from ..errors import PermanentError
from ..events import EffectRecorded, Event
from ..tools import Tool, ToolContext, jsonable
from ..workspace import Policy
from .rules import RunState

Recorder = Callable[[Event], Awaitable[None]]
POLICY_PREFIX = "policy"
_MISSING = object()


async def call_tool(
    tool: Tool, args: dict[str, Any], ctx: ToolContext, state: RunState, policy: Policy | None,
    record: Recorder, clock: Clock,
) -> Any:
    """Call ``tool``; a write is checked against the ledger (and the policy) first and recorded after."""
    if tool.effect != "write":
        return await tool.invoke(args, ctx)
    done = state.effects.get(ctx.idempotency_key, _MISSING)
    if done is not _MISSING:
        return done  # it happened already: the ledger has what it returned
    by = state.approved_by or ""
    if by.startswith(POLICY_PREFIX) and (policy is None or not policy.allows(tool, args)):
        targets = ", ".join(str(t) for t in tool.targets_of(args)) or "no target"
        raise PermanentError(
            f"{tool.name} ({targets}) is not allowed by the workspace policy, and this run was approved "
            "by the policy, not by a person: nothing was done"
        )
    output = await tool.invoke(args, ctx)
    await record(EffectRecorded(
        at=clock.now(), step=ctx.step_id, item=ctx.item, attempt=ctx.attempt, key=ctx.idempotency_key,
        tool=tool.name, target=jsonable(tool.name, tool.targets_of(args)), result=output,
    ))
    return output


class ToolLimits:
    """Per-tool concurrency and rate, shared by every step and agent call of one engine."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self._next_start: dict[str, float] = {}

    def ready_at(self, tool: Tool, now: float) -> float | None:
        """``None`` if a call of ``tool`` may start now, else when to look again (``inf``: when one ends)."""
        if tool.concurrency is not None and self.running[tool.name] >= tool.concurrency:
            return math.inf
        if tool.rate is not None:
            at = self._next_start.get(tool.name, now)
            if at > now:
                return at
        return None

    def take(self, tool: Tool, now: float) -> None:
        self.running[tool.name] += 1
        if tool.rate is not None:
            self._next_start[tool.name] = max(now, self._next_start.get(tool.name, now)) + 1.0 / tool.rate

    def release(self, tool: Tool) -> None:
        self.running[tool.name] -= 1

    @contextlib.asynccontextmanager
    async def slot(self, tool: Tool, clock: Clock) -> AsyncIterator[None]:
        """Wait until a call of ``tool`` may start and hold its place while it runs (for an agent's calls)."""
        while (at := self.ready_at(tool, clock.now())) is not None:
            await clock.sleep(min(at - clock.now(), 0.05))
        self.take(tool, clock.now())
        try:
            yield
        finally:
            self.release(tool)

    def clear(self) -> None:
        self.running.clear()
