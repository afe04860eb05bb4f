"""Work in flight: attempts of steps and replanning, run as asyncio tasks.

An attempt calls its tool or asks its model; what it reports (its outcome, the
calls and effects it records on the way, a revised plan) goes to inboxes that
the engine's loop empties, because only the loop appends events. The limits on
how many attempts run at once (in all, per step, per tool) are kept here.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..clock import Clock
from ..errors import ConfigError, PermanentError, StepTimeoutError, ToolArgumentError
from ..events import Event, StepStarted
from ..models import Model, model_from_spec
from ..models.retrying import RetryingModel
from ..plan.model import Step
from ..planning import replan
from ..planning.replan import Revision
from ..tools import Registry, Tool, ToolContext, jsonable, running_threads
from ..workspace import Policy, Workspace, WorkspaceRegistry, activate
from .agent import run_agent
from .effects import ToolLimits, call_tool
from .journal import Journal
from .llm import run_llm
from .rules import RunState, Unit


@dataclass
class Hosted:
    """A run this engine has claimed: its state (the rules'), its tools, and its work in flight."""

    state: RunState
    registry: Registry
    tasks: dict[tuple[str, int | None], asyncio.Task[None]] = field(default_factory=dict)
    replanning: asyncio.Task[None] | None = None
    stored_status: str = ""  # the status the store has: a batch that leaves it so need not write it

    def busy(self) -> bool:
        return bool(self.tasks) or self.replanning is not None

    def stop(self) -> None:
        """Interrupt everything in flight (a pause, a cancel)."""
        for task in self.tasks.values():
            task.cancel()
        if self.replanning is not None:
            self.replanning.cancel()


@dataclass
class Outcome:
    hosted: Hosted
    unit: Unit
    attempt: int
    output: Any = None
    error: BaseException | None = None
    interrupted: bool = False


class Attempts:
    """Starts attempts and replanning, and collects what they report for the loop."""

    def __init__(self, clock: Clock, max_concurrency: int, model: Model | None, workspace: Workspace | None,
                 wake: Callable[[], None]) -> None:
        self.clock = clock
        self.max_concurrency = max_concurrency
        self.model = model
        self.workspace = workspace
        self._wake = wake
        self._models: dict[str, Model] = {}
        self.running = 0
        self.limits = ToolLimits()
        self.per_step: Counter[tuple[str, str]] = Counter()
        self.outcomes: list[Outcome] = []
        self.records: list[tuple[Hosted, Event, asyncio.Future[None]]] = []
        self.revisions: list[tuple[Hosted, Revision | Exception | None]] = []
        self.starting: list[tuple[Any, ...]] = []  # launched this turn, begun once their start is committed

    def pending(self) -> bool:
        """Whether anything waits for the loop."""
        return bool(self.outcomes or self.records or self.revisions)

    def full(self) -> bool:
        return self.running >= self.max_concurrency

    def blocked(self, h: Hosted, unit: Unit, now: float) -> float | None:
        """``None`` if the unit may start now, else when to look again (``inf``: when an attempt ends)."""
        step = h.state.plan.by_id[unit.step]
        if step.concurrency is not None and self.per_step[(h.state.run_id, unit.step)] >= step.concurrency:
            return math.inf
        tool = h.registry.get(step.tool) if step.kind == "tool" else None
        return None if tool is None else self.limits.ready_at(tool, now)

    def launch(self, h: Hosted, unit: Unit, started: StepStarted) -> None:
        state = h.state
        step = state.plan.by_id[unit.step]
        tool = h.registry.get(step.tool)
        self.running += 1
        self.per_step[(state.run_id, unit.step)] += 1
        if tool is not None:
            self.limits.take(tool, started.at)
        ctx = ToolContext(state.run_id, unit.step, unit.item, started.attempt, started.key)
        timeout = step.timeout if step.timeout is not None else (tool.timeout if tool else None)
        self.starting.append((h, unit, step, tool, started.args, ctx, timeout))

    def go(self) -> None:
        """Begin the attempts launched this turn, now that their ``StepStarted`` is committed:
        with a store whose commit suspends (PostgreSQL), a tool must not run before its start is
        recorded."""
        starting, self.starting = self.starting, []
        for h, unit, step, tool, args, ctx, timeout in starting:
            coro = self._attempt(h, unit, step, tool, args, ctx, timeout)
            h.tasks[(unit.step, unit.item)] = asyncio.ensure_future(coro)

    def ended(self, o: Outcome) -> None:
        """Give back the places an attempt held."""
        h, u = o.hosted, o.unit
        h.tasks.pop((u.step, u.item), None)
        tool = h.registry.get(h.state.plan.by_id[u.step].tool)
        self.running -= 1
        if tool is not None:
            self.limits.release(tool)
        self.per_step[(h.state.run_id, u.step)] -= 1

    def model_for(self, spec: str | None) -> Model:
        """The model a step names, else the engine's, else ``$CHARTER_MODEL``."""
        key = spec or ""
        if key not in self._models:
            if not spec and self.model is not None:
                self._models[key] = self.model
            else:
                try:
                    self._models[key] = model_from_spec(spec)
                except ConfigError as exc:
                    raise PermanentError(str(exc)) from None
        return self._models[key]

    def _workspace(self, h: Hosted) -> Workspace | None:
        """The run's workspace: the one its tools were loaded with, else the engine's."""
        return h.registry.workspace if isinstance(h.registry, WorkspaceRegistry) else self.workspace

    def _policy(self, h: Hosted) -> Policy | None:
        ws = self._workspace(h)
        return ws.config.policy if ws is not None else None

    async def _call(self, h: Hosted, unit: Unit, step: Step, tool: Tool | None,
                    args: dict[str, Any], ctx: ToolContext) -> Any:
        """What one attempt does: call the tool, or ask the model."""
        async def record(ev: Event) -> None:
            await self._record(h, ev)

        if step.kind in ("llm", "agent"):
            journal = Journal(unit, ctx.attempt, record, self.clock)
            model = self.model_for(args.get("model"))
            if step.kind == "agent":
                async def perform(t: Tool, a: dict[str, Any], c: ToolContext) -> Any:
                    async with self.limits.slot(t, self.clock):
                        return await call_tool(t, a, c, h.state, self._policy(h), record, self.clock)

                return await run_agent(args, model, journal, h.registry, ctx, perform)
            return await run_llm(args, model, journal)
        if tool is None:
            raise PermanentError(f"tool {step.tool!r} is not among the loaded tools")
        output = await call_tool(tool, args, ctx, h.state, self._policy(h), record, self.clock)
        if step.check is not None and not output:
            raise PermanentError(f"assumption does not hold: {step.check} ({step.tool} returned {output!r})")
        return output

    async def _record(self, h: Hosted, ev: Event) -> None:
        """Have the loop write ``ev`` (from inside an attempt); return once it is committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.records.append((h, ev, fut))
        self._wake()
        await fut

    async def _attempt(
        self, h: Hosted, unit: Unit, step: Step, tool: Tool | None,
        args: dict[str, Any], ctx: ToolContext, timeout: float | None,
    ) -> None:
        outcome = Outcome(h, unit, ctx.attempt)
        threads: list[asyncio.Future[Any]] = []
        running_threads.set(threads)
        ws = self._workspace(h)
        if ws is not None:
            activate(ws)  # this attempt's task only: tools read their settings from it
        with self.clock.in_flight():  # a fake clock does not skip time while an attempt works
            try:
                try:
                    outcome.output = await self.clock.wait_for(self._call(h, unit, step, tool, args, ctx), timeout)
                except TimeoutError as exc:
                    if timeout is None:
                        raise
                    pending = [t for t in threads if not t.done()]
                    if pending:  # a thread cannot be stopped: the next attempt must not overlap it
                        await asyncio.wait(pending)
                    message = f"attempt took longer than the step's timeout of {timeout:g}s"
                    raise StepTimeoutError(message) from exc
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # the engine stopped it (pause, cancel, exit)
                    outcome.interrupted = True
                    await _outlast_threads(threads, outcome)
                else:  # the tool itself raised CancelledError: a failure like any other
                    outcome.error = RuntimeError(f"the tool raised CancelledError: {exc}")
            except ToolArgumentError as exc:
                outcome.error = PermanentError(str(exc))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                outcome.error = exc if isinstance(exc, Exception) else RuntimeError(f"{type(exc).__name__}: {exc}")
            finally:
                self.outcomes.append(outcome)
                self._wake()

    def replan(self, h: Hosted) -> None:
        """Ask the planner for a revised plan of what is left of a run (the run is ``replanning``)."""
        h.replanning = asyncio.ensure_future(self._replan(h))

    async def _replan(self, h: Hosted) -> None:
        outcome: Revision | Exception | None
        try:
            # a transient error (a 503, a timeout) is retried as in first-time planning, on the engine's clock
            model = RetryingModel(self.model_for(None), clock=self.clock)
            with self.clock.in_flight():
                outcome = await replan.revise(h.state, h.registry, model)
        except asyncio.CancelledError:
            outcome = None
        except Exception as exc:  # the planner gave up, or no model: the run fails with the reason
            outcome = exc
        self.revisions.append((h, outcome))
        self._wake()

    async def stop_all(self, hosted: list[Hosted]) -> None:
        """Interrupt every attempt and wait for them (on the way out)."""
        tasks: list[asyncio.Task[None]] = [t for h in hosted for t in h.tasks.values()]
        tasks += [h.replanning for h in hosted if h.replanning is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.outcomes.clear()
        self.revisions.clear()
        self.starting.clear()
        self.running = 0
        self.limits.clear()
        self.per_step.clear()


async def _outlast_threads(threads: list[asyncio.Future[Any]], outcome: Outcome) -> None:
    """After an interruption, wait for a sync tool's thread: the run stays ours until it ends.

    Otherwise another process could start the next attempt while this one
    still runs, and a check of the idempotency key would race. If the thread
    finishes its work, that is the attempt's outcome.
    """
    pending = [t for t in threads if not t.done()]
    if pending:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            return  # leaving at once (a second Ctrl-C): the attempt stays 'running' in the log
    for t in threads:
        if t.cancelled():
            return
        if t.exception() is not None:
            outcome.interrupted = False
            outcome.error = t.exception()
        else:
            outcome.interrupted = False
            try:
                outcome.output = jsonable(outcome.unit.step, t.result())
            except PermanentError as exc:
                outcome.output, outcome.error = None, exc
