"""The engine: the one writer of run state.

It hosts runs, asks the pure rules (:mod:`charter.rules`) what happens next,
starts ready steps within the concurrency limits, and writes every transition
to the store in one transaction per batch: when many steps finish together,
their events share a commit. Tools run as asyncio tasks; their results come
back to the loop, which is the only place that appends events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..clock import Clock, SystemClock
from ..errors import (
    CharterError,
    ConfigError,
    ErrorInfo,
    PermanentError,
    RunNotFoundError,
    RunStateError,
    StepTimeoutError,
    ToolArgumentError,
)
from ..events import (
    BudgetChanged,
    EffectRecorded,
    Event,
    ModelCalled,
    PlanApproved,
    PlanRejected,
    PlanRevised,
    RunCancelled,
    RunCreated,
    RunFailed,
    RunPaused,
    RunResumed,
    StepInterrupted,
    StepsReset,
    StepStarted,
    StepSucceeded,
    ToolCalled,
)
from ..models import Model, model_from_spec
from ..models.retrying import RetryingModel
from ..plan.inputs import declared_inputs
from ..plan.model import Plan, Step
from ..plan.needs import model_problems
from ..planning import replan
from ..planning.replan import Revision
from ..store.sql import SQLStore
from ..tools import Registry, Tool, ToolContext, jsonable, load_tools, running_threads
from ..workspace import Policy, Workspace, WorkspaceRegistry, activate
from ..workspace.secrets import masked
from . import rules
from .agent import run_agent
from .effects import ToolLimits, call_tool
from .journal import Journal, planner_events
from .leases import claimable, new_owner
from .llm import run_llm
from .rules import RUNNING, RunState, Unit

log = logging.getLogger("charter.engine")
Observer = Callable[[RunState, Sequence[Event]], None]
UnitKey = tuple[str, str, int | None]  # run, step, item


REPLAN = ("(replan)", None)  # the key of a run's replanning task among its attempts


def new_run_id() -> str:
    return secrets.token_hex(6)


@dataclass
class _Hosted:
    state: RunState
    registry: Registry
    tasks: dict[tuple[str, int | None], asyncio.Task[None]] = field(default_factory=dict)


@dataclass
class _Outcome:
    hosted: _Hosted
    unit: Unit
    attempt: int
    output: Any = None
    error: BaseException | None = None
    interrupted: bool = False


class Engine:
    """Runs plans durably against one store.

    Args:
        store: where the log and state live.
        clock: the time source (``charter.testing.FakeClock`` in tests).
        max_concurrency: attempts running at once across all hosted runs.
        lease_seconds: how long a claim on a run lasts without renewal; a run
            whose owner died on this machine is taken over at once, one whose
            owner is elsewhere once the lease has expired.
        poll_interval: how often control requests from other processes
            (``charter pause``, ``charter cancel``) are looked for.
        model: the model of ``llm`` steps that name none (default: ``$CHARTER_MODEL``).
    """

    def __init__(
        self,
        store: SQLStore,
        *,
        clock: Clock | None = None,
        max_concurrency: int = 100,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.2,
        model: Model | None = None,
        workspace: Workspace | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ConfigError("max_concurrency must be at least 1")
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.max_concurrency = max_concurrency
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.model = model
        self.workspace = workspace
        self._models: dict[str, Model] = {}
        self._records: list[tuple[_Hosted, Event, asyncio.Future[None]]] = []
        self._revisions: list[tuple[_Hosted, Revision | Exception | None]] = []
        self.owner = new_owner()
        self.observers: list[Observer] = []
        self._hosted: dict[str, _Hosted] = {}
        self._outcomes: list[_Outcome] = []
        self._wake: asyncio.Event | None = None
        self._running = 0
        self._limits = ToolLimits()
        self._per_step: Counter[tuple[str, str]] = Counter()
        self._stop_reason: str | None = None
        self._requests: dict[str, list[tuple[str, str]]] = {}
        self._requests_seen: set[int] = set()  # ids of stored requests taken into this process
        self._requests_done: list[int] = []  # ... to delete with the next commit

    # --- creating and adopting runs -------------------------------------------------

    def create(
        self,
        plan: Plan,
        registry: Registry,
        inputs: Mapping[str, Any] | None = None,
        *,
        approved_by: str | None = "plan file",
        parent_run: str | None = None,
        from_step: str | None = None,
        reuse: Mapping[str, Any] | None = None,
        request: str | None = None,
        planning: Sequence[ModelCalled] = (),
        budget: Mapping[str, float] | None = None,
        max_replans: int = 0,
    ) -> RunState:
        """Record a new run and host it.

        With ``approved_by=None`` the run waits for :meth:`approve` or :meth:`reject`.
        ``reuse`` maps step ids to outputs taken as done; ``request`` and ``planning``
        (the planner's model calls) record where a planned run came from.
        """
        values = declared_inputs(plan, inputs)
        now = self.clock.now()
        created = RunCreated(
            at=now, plan=plan.to_json(), inputs=values,
            tool_sources=list(registry.sources), parent_run=parent_run, from_step=from_step,
            request=request, budget=rules.check_budget(budget), max_replans=max_replans,
        )
        state = RunState.from_created(new_run_id(), created, plan)
        state.policies = rules.retry_policies(state.plan, registry)
        events: list[Event] = list(planning)
        if approved_by is not None:
            events.append(PlanApproved(at=now, by=approved_by))
        for sid, output in (reuse or {}).items():
            events.append(StepSucceeded(at=now, step=sid, output=output, reused_from=parent_run))
        with self.store.transaction():  # the run exists approved, or not at all
            self.store.create_run(state, created, self.owner, now + self.lease_seconds)
            self._commit_now(state, events)
        self._hosted[state.run_id] = _Hosted(state, registry)
        return state

    def adopt(self, run_id: str, registry: Registry | None = None, *, need_tools: bool = True) -> RunState:
        """Take charge of an existing run: claim it, rebuild its state from the log, host it.

        Attempts that were running when their process stopped are recorded as
        interrupted; they run again with the same idempotency key. Unless
        ``need_tools`` is false (to pause or cancel), every tool the rest of the
        run needs must load, or the run is left as it is.
        """
        if run_id in self._hosted:
            return self._hosted[run_id].state
        self._claim(run_id)
        try:
            state = rules.replay(run_id, self.store.events(run_id))
            if registry is None:
                if need_tools:
                    registry = load_tools(state.tool_sources) if state.tool_sources else Registry()
                else:
                    registry = Registry()
            if need_tools and not state.finished:
                _check_tools(state, registry)
                _check_models(state, self.model)
            state.policies = rules.retry_policies(state.plan, registry)
            now = self.clock.now()
            self._commit_now(state, [
                StepInterrupted(at=now, step=u.step, item=u.item, attempt=u.attempt,
                                reason="the process running it stopped")
                for u in state.running_units()
            ])
        except BaseException:
            self.store.release([run_id], self.owner)
            raise
        self._hosted[run_id] = _Hosted(state, registry)
        return state

    def adopt_orphans(self) -> tuple[list[RunState], list[CharterError]]:
        """Adopt every unfinished run whose owner is gone (dead here, or its lease expired).

        Returns the runs adopted and, for the others, why not (say, their tools no longer import).
        """
        adopted: list[RunState] = []
        problems: list[CharterError] = []
        now = self.clock.now()
        for run_id, owner, lease in self.store.unfinished_runs():
            if run_id in self._hosted or not claimable(owner, lease, now):
                continue
            try:
                adopted.append(self.adopt(run_id))
            except RunStateError:
                continue  # another process took it first
            except CharterError as exc:
                problems.append(CharterError(f"cannot continue run {run_id}: {exc}"))
        return adopted, problems

    def _claim(self, run_id: str) -> None:
        row = self.store.get_run(run_id)
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.store.location}")
        now = self.clock.now()
        if row.owner not in (None, self.owner) and not claimable(row.owner, row.lease_expires, now):
            raise RunStateError(
                f"run {run_id} is being run by another process ({row.owner}); "
                "use `charter pause` or `charter cancel` to ask it to stop"
            )
        if not self.store.claim(run_id, self.owner, now + self.lease_seconds, row.owner):
            raise RunStateError(f"run {run_id} was claimed by another process just now")

    def _commit_now(self, state: RunState, events: list[Event]) -> None:
        if not events:
            return
        for ev in events:
            rules.apply(state, ev)
        self.store.append([(state, events)], self.owner)
        self._notify(state, events)

    # --- control ----------------------------------------------------------------------

    def resume(
        self, run_id: str, by: str = "user", registry: Registry | None = None,
        budget: Mapping[str, float] | None = None,
    ) -> RunState:
        """Adopt a run and, if it was paused, resume it; ``budget`` replaces limits given before."""
        state = self.adopt(run_id, registry)
        events: list[Event] = []
        if budget:
            limits = {**state.budget, **rules.check_budget(budget)}
            events.append(BudgetChanged(at=self.clock.now(), budget=limits, by=by))
        if state.status == rules.PAUSED:
            events.append(RunResumed(at=self.clock.now(), by=by))
        if events and not state.finished:
            self._commit_now(state, events)
        elif state.finished:
            self._release(run_id)  # nothing to do: let go of it
        return state

    def approve(self, run_id: str, by: str = "user", registry: Registry | None = None, note: str = "") -> RunState:
        """Approve the plan of a run that waits for review; the run is then ready to go."""
        state = self._awaiting_review(run_id, registry)
        self._commit_now(state, [PlanApproved(at=self.clock.now(), by=by, note=note)])
        return state

    def reject(self, run_id: str, reason: str, by: str = "user") -> RunState:
        """Reject the plan of a run that waits for review: the run ends, nothing having run."""
        state = self._awaiting_review(run_id, None, need_tools=False)
        self._commit_now(state, [PlanRejected(at=self.clock.now(), by=by, reason=reason)])
        self._release(run_id)
        return state

    def revise(self, run_id: str, plan: Plan, by: str = "user", reason: str = "") -> RunState:
        """Replace the plan of a run that waits for review (an edit in review)."""
        state = self._awaiting_review(run_id, None)
        ev = PlanRevised(at=self.clock.now(), version=state.plan_version + 1, plan=plan.to_json(), by=by, reason=reason)
        self._commit_now(state, [ev])
        h = self._hosted[run_id]
        state.policies = rules.retry_policies(state.plan, h.registry)
        return state

    def _awaiting_review(self, run_id: str, registry: Registry | None, need_tools: bool = True) -> RunState:
        state = self.adopt(run_id, registry, need_tools=need_tools)
        if state.status != rules.CREATED:
            if run_id in self._hosted and not self._hosted[run_id].tasks and state.status != RUNNING:
                self._release(run_id)
            raise RunStateError(f"run {run_id} is {state.status}, not waiting for its plan to be reviewed")
        return state

    def retry(self, run_id: str, step_id: str, registry: Registry | None = None) -> RunState:
        """Make a failed step and the steps it blocked pending again, with a fresh retry budget."""
        state = self.adopt(run_id, registry)
        if step_id not in state.steps:
            raise RunStateError(f"run {run_id} has no step {step_id!r}")
        status = state.steps[step_id].status
        if state.status in (rules.CANCELLED, rules.REJECTED):
            self._release(run_id)
            raise RunStateError(f"run {run_id} was {state.status}: it does not run again (use `charter rerun`)")
        if status != rules.FAILED:
            raise RunStateError(f"step {step_id} is {status}; only a failed step can be retried")
        targets = rules.reset_targets(state, step_id)
        events: list[Event] = []
        if state.status == rules.PAUSED:
            events.append(RunResumed(at=self.clock.now(), by="retry"))
        events.append(StepsReset(at=self.clock.now(), steps=targets, reason=f"retry of {step_id} requested"))
        self._commit_now(state, events)
        return state

    def request_stop(self, run_id: str, action: str, reason: str = "") -> str:
        """Pause or cancel a run.

        Returns ``"done"`` if applied here, ``"requested"`` if the process running it was asked.
        """
        if action not in ("pause", "cancel"):
            raise ValueError(action)
        if run_id in self._hosted:
            self._requests.setdefault(run_id, []).append((action, reason))
            if self._wake is not None:
                self._wake.set()
            return "requested"
        row = self.store.get_run(run_id)
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.store.location}")
        if row.status in rules.RUN_DONE:
            raise RunStateError(f"run {run_id} has already ended ({row.status})")
        if action == "pause" and row.status == rules.PAUSED:
            raise RunStateError(f"run {run_id} is already paused")
        now = self.clock.now()
        if row.owner not in (None, self.owner) and not claimable(row.owner, row.lease_expires, now):
            self.store.add_request(run_id, action, reason, now)
            return "requested"
        state = self.adopt(run_id, need_tools=False)
        event = _stop_event(action, reason or f"{action} requested", now)
        self._commit_now(state, [event])
        self._release(run_id)
        return "done"

    def decide(self, run_id: str, step_id: str, approve: bool, by: str = "user", note: str = "",
               registry: Registry | None = None) -> str:
        """A person's decision on an approval step. ``"done"``: recorded here, and the run is
        hosted by this engine (with ``registry``, else the tools it recorded) to go on;
        ``"requested"``: the process running it was asked."""
        action = "approve" if approve else "reject"
        payload = json.dumps({"step": step_id, "by": by, "note": note})
        if run_id in self._hosted and self._wake is not None:
            self._requests.setdefault(run_id, []).append((action, payload))
            self._wake.set()
            return "requested"
        row = self.store.get_run(run_id)
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.store.location}")
        now = self.clock.now()
        if row.owner not in (None, self.owner) and not claimable(row.owner, row.lease_expires, now):
            self.store.add_request(run_id, action, payload, now)
            return "requested"
        state = self.adopt(run_id, registry)
        try:
            ev = rules.decision(state, step_id, approve, by, note, now)
        except (KeyError, ValueError) as exc:
            if not self._hosted[run_id].tasks:
                self._release(run_id)
            raise RunStateError(str(exc).strip("'\"")) from None
        self._commit_now(state, [ev])
        return "done"

    def stop_all(self, reason: str) -> None:
        """Pause every hosted run (for Ctrl-C). Safe to call from a signal handler."""
        self._stop_reason = reason
        if self._wake is not None:
            self._wake.set()

    def hosted(self) -> list[RunState]:
        return [h.state for h in self._hosted.values()]

    # --- the loop -------------------------------------------------------------------------

    async def run_until_settled(self) -> None:
        """Drive every hosted run until each has finished, paused or been cancelled."""
        self._wake = asyncio.Event()
        clock = self.clock
        next_poll = next_renew = clock.now()
        try:
            while self._hosted:
                now = clock.now()
                batch: dict[str, list[Event]] = {}
                recorded = self._take_records(batch)
                self._take_outcomes(now, batch)
                self._take_revisions(now, batch)
                if now >= next_poll:
                    next_poll = now + self.poll_interval
                    self._poll_requests()
                self._handle_stops(now, batch)
                again, wake_at = self._advance_all(now, batch)
                try:
                    self._commit(batch)
                except BaseException as exc:
                    for fut in recorded:
                        if not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                    raise
                for fut in recorded:
                    if not fut.done():
                        fut.set_result(None)
                self._settle()
                if now >= next_renew and self._hosted:
                    next_renew = now + self.lease_seconds / 3
                    self.store.renew(list(self._hosted), self.owner, now + self.lease_seconds)
                if not self._hosted:
                    break
                if again or self._outcomes or self._records or self._revisions or self._requests or self._stop_reason:
                    continue
                deadline = min(next_poll, next_renew, wake_at if wake_at is not None else next_poll)
                self._wake.clear()
                try:
                    await clock.wait_for(self._wake.wait(), max(0.0, deadline - clock.now()))
                except TimeoutError:
                    pass
        finally:
            await self._abandon()

    async def _replan(self, h: _Hosted) -> None:
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
        self._revisions.append((h, outcome))
        if self._wake is not None:
            self._wake.set()

    def _take_revisions(self, now: float, batch: dict[str, list[Event]]) -> None:
        revisions, self._revisions = self._revisions, []
        for h, outcome in revisions:
            h.tasks.pop(REPLAN, None)
            state = h.state
            if outcome is None or state.status != rules.REPLANNING:
                continue  # interrupted (a pause): asked again on resume
            events: list[Event]
            if isinstance(outcome, Exception):
                events = [RunFailed(at=now, reason=f"{state.reason}; no revised plan: {outcome}",
                                    failed_steps=[s for s, st in state.steps.items() if st.status == rules.FAILED])]
            else:
                events = list(planner_events(outcome.result.calls, now, outcome.result.latencies))
                events.append(PlanRevised(at=now, version=state.plan_version + 1, plan=outcome.plan.to_json(),
                                          by="planner", reason=state.reason, diff=outcome.diff,
                                          needs_review=outcome.needs_review))
            for ev in events:
                rules.apply(state, ev)
            state.policies = rules.retry_policies(state.plan, h.registry)
            batch.setdefault(state.run_id, []).extend(events)

    def _take_records(self, batch: dict[str, list[Event]]) -> list[asyncio.Future[None]]:
        """Events that attempts asked to write (model and tool calls, effects), for this batch."""
        records, self._records = self._records, []
        futures = []
        for h, ev, fut in records:
            assert isinstance(ev, ModelCalled | ToolCalled | EffectRecorded)
            unit = h.state.steps[ev.step].units.get(ev.item)
            stale = unit is None or unit.status != RUNNING or unit.attempt != ev.attempt
            # an effect happened whatever became of its attempt (timed out, paused): the ledger keeps it
            if stale and not isinstance(ev, EffectRecorded):
                fut.cancel()  # the attempt is over: nobody waits for this any more
                continue
            ev = masked(ev)
            rules.apply(h.state, ev)
            batch.setdefault(h.state.run_id, []).append(ev)
            futures.append(fut)
        return futures

    def _take_outcomes(self, now: float, batch: dict[str, list[Event]]) -> None:
        outcomes, self._outcomes = self._outcomes, []
        for o in outcomes:
            h, u = o.hosted, o.unit
            h.tasks.pop((u.step, u.item), None)
            tool = h.registry.get(h.state.plan.by_id[u.step].tool)
            self._running -= 1
            if tool is not None:
                self._limits.release(tool)
            self._per_step[(h.state.run_id, u.step)] -= 1
            if u.status != RUNNING or u.attempt != o.attempt:
                continue  # the attempt was already accounted for
            ev: Event
            if o.interrupted:
                ev = StepInterrupted(at=now, step=u.step, item=u.item, attempt=u.attempt,
                                     reason=h.state.reason or "interrupted")
            elif o.error is None:
                ev = rules.success(u, o.output, now)
            else:
                info, delay = rules.classify(o.error, h.state.policy(u.step))
                ev = rules.failure(h.state, u, info, now, delay)
            ev = masked(ev)
            rules.apply(h.state, ev)
            batch.setdefault(h.state.run_id, []).append(ev)

    def _poll_requests(self) -> None:
        if not self._hosted:
            return
        for rid, run_id, action, reason in self.store.pending_requests():
            if run_id in self._hosted and rid not in self._requests_seen:
                self._requests_seen.add(rid)
                self._requests_done.append(rid)  # deleted with the batch that answers it
                self._requests.setdefault(run_id, []).append((action, reason))

    def _handle_stops(self, now: float, batch: dict[str, list[Event]]) -> None:
        if self._stop_reason is not None:
            for run_id, h in self._hosted.items():
                if h.state.status == RUNNING:
                    self._requests.setdefault(run_id, []).append(("pause", self._stop_reason))
            self._stop_reason = None
        requests, self._requests = self._requests, {}
        for run_id, reqs in requests.items():
            hosted = self._hosted.get(run_id)
            if hosted is None:
                continue
            h = hosted
            for action, reason in reqs:
                if h.state.status in rules.RUN_DONE or (action == "pause" and h.state.status == rules.PAUSED):
                    continue
                if action in ("approve", "reject"):
                    ask = json.loads(reason)
                    try:
                        decided = rules.decision(h.state, ask["step"], action == "approve", ask["by"], ask["note"], now)
                    except (KeyError, ValueError):
                        continue  # decided already, or a step that does not wait: nothing to do
                    rules.apply(h.state, decided)
                    batch.setdefault(run_id, []).append(decided)
                    continue
                ev = _stop_event(action, reason or f"{action} requested", now)
                rules.apply(h.state, ev)
                batch.setdefault(run_id, []).append(ev)
                for task in h.tasks.values():
                    task.cancel()

    def _advance_all(self, now: float, batch: dict[str, list[Event]]) -> tuple[bool, float | None]:
        again = False
        wake_at: float | None = None
        for run_id, h in self._hosted.items():
            state = h.state
            if state.status == rules.REPLANNING and REPLAN not in h.tasks:
                h.tasks[REPLAN] = asyncio.ensure_future(self._replan(h))
            if state.status not in (RUNNING, rules.AWAITING):
                continue
            decision = rules.advance(state, now)
            if decision.events:
                batch.setdefault(run_id, []).extend(decision.events)
                again = True
            if decision.wake_at is not None and (wake_at is None or decision.wake_at < wake_at):
                wake_at = decision.wake_at
            for unit in decision.ready:
                if self._running >= self.max_concurrency:
                    break
                wait = self._wait_for_slot(h, unit, now)
                if wait is not None:
                    if wait != math.inf and (wake_at is None or wait < wake_at):
                        wake_at = wait
                    continue
                ev = rules.start(state, unit, now)
                rules.apply(state, ev)
                batch.setdefault(run_id, []).append(ev)
                if isinstance(ev, StepStarted):
                    self._launch(h, unit, ev)
                else:
                    again = True
        return again, wake_at

    def _wait_for_slot(self, h: _Hosted, unit: Unit, now: float) -> float | None:
        """``None`` if the unit may start now, else when to look again (``inf``: when an attempt ends)."""
        step = h.state.plan.by_id[unit.step]
        if step.concurrency is not None and self._per_step[(h.state.run_id, unit.step)] >= step.concurrency:
            return math.inf
        tool = h.registry.get(step.tool) if step.kind == "tool" else None
        return None if tool is None else self._limits.ready_at(tool, now)

    def _launch(self, h: _Hosted, unit: Unit, started: StepStarted) -> None:
        state = h.state
        step = state.plan.by_id[unit.step]
        tool = h.registry.get(step.tool)
        self._running += 1
        self._per_step[(state.run_id, unit.step)] += 1
        if tool is not None:
            self._limits.take(tool, started.at)
        ctx = ToolContext(state.run_id, unit.step, unit.item, started.attempt, started.key)
        timeout = step.timeout if step.timeout is not None else (tool.timeout if tool else None)
        coro = self._attempt(h, unit, step, tool, started.args, ctx, timeout)
        h.tasks[(unit.step, unit.item)] = asyncio.ensure_future(coro)

    async def _call(self, h: _Hosted, unit: Unit, step: Step, tool: Tool | None,
                    args: dict[str, Any], ctx: ToolContext) -> Any:
        """What one attempt does: call the tool, or ask the model."""
        async def record(ev: Event) -> None:
            await self._record(h, ev)

        if step.kind in ("llm", "agent"):
            journal = Journal(unit, ctx.attempt, record, self.clock)
            model = self.model_for(args.get("model"))
            if step.kind == "agent":
                async def perform(t: Tool, a: dict[str, Any], c: ToolContext) -> Any:
                    async with self._limits.slot(t, self.clock):
                        return await call_tool(t, a, c, h.state, self._policy(h), record, self.clock)

                return await run_agent(args, model, journal, h.registry, ctx, perform)
            return await run_llm(args, model, journal)
        if tool is None:
            raise PermanentError(f"tool {step.tool!r} is not among the loaded tools")
        output = await call_tool(tool, args, ctx, h.state, self._policy(h), record, self.clock)
        if step.check is not None and not output:
            raise PermanentError(f"assumption does not hold: {step.check} ({step.tool} returned {output!r})")
        return output

    def _workspace(self, h: _Hosted) -> Workspace | None:
        """The run's workspace: the one its tools were loaded with, else the engine's."""
        return h.registry.workspace if isinstance(h.registry, WorkspaceRegistry) else self.workspace

    def _policy(self, h: _Hosted) -> Policy | None:
        ws = self._workspace(h)
        return ws.config.policy if ws is not None else None

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

    async def _record(self, h: _Hosted, ev: Event) -> None:
        """Have the loop write ``ev`` (from inside an attempt); return once it is committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._records.append((h, ev, fut))
        if self._wake is not None:
            self._wake.set()
        await fut

    async def _attempt(
        self, h: _Hosted, unit: Unit, step: Step, tool: Tool | None,
        args: dict[str, Any], ctx: ToolContext, timeout: float | None,
    ) -> None:
        outcome = _Outcome(h, unit, ctx.attempt)
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
                    await self._outlast_threads(threads, outcome)
                else:  # the tool itself raised CancelledError: a failure like any other
                    outcome.error = RuntimeError(f"the tool raised CancelledError: {exc}")
            except ToolArgumentError as exc:
                outcome.error = PermanentError(str(exc))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                outcome.error = exc if isinstance(exc, Exception) else RuntimeError(f"{type(exc).__name__}: {exc}")
            finally:
                self._outcomes.append(outcome)
                if self._wake is not None:
                    self._wake.set()

    async def _outlast_threads(self, threads: list[asyncio.Future[Any]], outcome: _Outcome) -> None:
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

    def _commit(self, batch: dict[str, list[Event]]) -> None:
        if not batch and not self._requests_done:
            return
        pairs = [(self._hosted[r].state, evs) for r, evs in batch.items()]
        self.store.append(pairs, self.owner, self._requests_done)
        self._requests_done = []
        for state, evs in pairs:
            self._notify(state, evs)

    def _notify(self, state: RunState, events: Sequence[Event]) -> None:
        for observer in list(self.observers):
            try:
                observer(state, events)
            except Exception as exc:  # a watcher cannot stop a run (a closed pipe, a broken display)
                self.observers.remove(observer)
                log.warning("an observer of the engine failed and no longer gets events: %r", exc)

    def _settle(self) -> None:
        active = (RUNNING, rules.REPLANNING)
        for run_id in [r for r, h in self._hosted.items() if h.state.status not in active and not h.tasks]:
            self._release(run_id)

    def _release(self, run_id: str) -> None:
        self._hosted.pop(run_id, None)
        self.store.release([run_id], self.owner)

    async def _abandon(self) -> None:
        """On the way out (an error, or the loop's task cancelled): stop attempts, let go of runs.

        Attempts still running are left as they are in the log; whoever adopts
        the run next records them as interrupted and runs them again.
        """
        tasks = [t for h in self._hosted.values() for t in h.tasks.values()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._outcomes.clear()
        if self._hosted:
            try:
                self.store.release(list(self._hosted), self.owner)
            finally:
                self._hosted.clear()
        self._running = 0
        self._limits.clear()
        self._per_step.clear()


def _check_tools(state: RunState, registry: Registry) -> None:
    """Refuse to take on a run whose remaining steps need tools that are not loaded."""
    missing = []
    for step in state.plan.steps:
        if state.steps[step.id].status in rules.STEP_DONE:
            continue
        names = [step.tool] if step.kind == "tool" else list(step.args.get("tools", ())) if step.kind == "agent" else []
        missing += [n for n in names if n not in registry and n not in missing]
    if missing:
        where = ", ".join(state.tool_sources) or "code that recorded no tool source"
        raise ConfigError(f"run {state.run_id} needs tools that are not loaded: {', '.join(missing)} "
                          f"(its tools came from {where}; pass them with --tools)")


def _check_models(state: RunState, model: Model | None) -> None:
    """Refuse to take on a run whose remaining ``llm`` or ``agent`` steps would find no model."""
    remaining = [s.id for s in state.plan.steps if state.steps[s.id].status not in rules.STEP_DONE]
    problems = model_problems(state.plan, model, steps=remaining)
    if problems:
        raise ConfigError(f"run {state.run_id} cannot go on: " + "; ".join(str(p) for p in problems)
                          + " (pass --model, or set CHARTER_MODEL)")


def _stop_event(action: str, reason: str, now: float) -> Event:
    return RunPaused(at=now, reason=reason) if action == "pause" else RunCancelled(at=now, reason=reason)


__all__ = ["Engine", "ErrorInfo"]
