"""The engine: the one writer of run state.

It hosts runs, asks the pure rules (:mod:`charter.engine.rules`) what happens
next, starts ready steps within the limits (:mod:`charter.engine.attempts`),
and writes every transition to the store in one transaction per batch: when
many steps finish together, their events share a commit. Only the loop appends
events; attempts, control requests and replanning report to it.

Each turn of the loop looks only at the runs something happened to (an
outcome, a request, their own new events) or whose due time came (a retry, an
approval's deadline, a rate limit): its cost grows with the work, not with how
many runs are hosted.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Hashable, Mapping
from typing import Any

from ..clock import Clock, SystemClock
from ..errors import CharterError, ConfigError, RunNotFoundError, RunStateError
from ..events import (
    EffectRecorded,
    Event,
    ModelCalled,
    StepInterrupted,
    StepStarted,
    ToolCalled,
)
from ..models import Model
from ..plan.model import Plan
from ..store.base import Store
from ..store.records import FLEET
from ..tools import Registry
from ..workspace import Workspace
from ..workspace.secrets import masked
from . import control, fleet, rules
from .attempts import Attempts
from .control import Request
from .hosting import Hosting
from .inbox import AGAIN, Asked, Reply, Turns, answer, fail
from .journal import revision_events
from .leases import claimable, new_owner
from .rules import RUNNING, RunState
from .watchers import Feed, Watcher

ACTIVE = (RUNNING, rules.AWAITING, rules.REPLANNING)


class Engine:
    """Runs plans durably against one store.

    Args:
        store: where the log and state live.
        clock: the time source (``charter.testing.FakeClock`` in tests).
        max_concurrency: attempts running at once across all hosted runs.
        lease_seconds: how long a claim on a run lasts without renewal; a run
            whose owner died on this machine is taken over at once, one whose
            owner is elsewhere once the lease has expired.
        poll_interval: how often the store is asked whether another process left
            a control request (``charter pause``, ``charter approve``): one cheap
            look at whether anything changed, a read only when it did.
        model: the model of ``llm`` steps that name none (default: ``$CHARTER_MODEL``).
    """

    def __init__(
        self,
        store: Store,
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
        self.poll_interval = poll_interval
        self.owner = new_owner()
        self.attempts = Attempts(self.clock, max_concurrency, model, workspace, self._wake_up)
        self.hosting = Hosting(store, self.clock, self.owner, lease_seconds)
        self._hosted = self.hosting.runs
        # runs to look at on the next turn, in the order something happened to them: runs created
        # together go together, and their rows and events stay on a few pages of the store
        self._dirty: dict[str, None] = {}
        self._due: list[tuple[float, str]] = []  # (when, run): a heap of runs to look at again
        # runs with ready work that waits for a free place, in the order they began to wait: as
        # places free up, only as many are looked at again as there are places
        self._starved: dict[str, None] = {}
        self._wake: asyncio.Event | None = None
        self._inbox: dict[str, list[Asked]] = {}  # requests for hosted runs, for the loop to carry out
        self._answered: list[int] = []  # stored requests carried out: deleted with the next commit
        self._taken: set[int] = set()  # ... and taken into this process already
        self._stop_reason: str | None = None
        # runs adopted by a direct control request whose events are not committed yet: the
        # loop (running beside it, as `charter ui` does) leaves them alone until then
        self._held: set[str] = set()
        self._turns = Turns()  # direct control requests: one at a time per run

    @property
    def model(self) -> Model | None:
        return self.attempts.model

    @model.setter
    def model(self, model: Model | None) -> None:
        self.attempts.model = model
        self.attempts._models.clear()

    def watch(self, watcher: Watcher) -> Feed:
        """Give ``watcher`` a frozen snapshot and the events of each commit, on a thread of its own."""
        return self.hosting.watch(watcher)

    # --- creating and adopting runs -------------------------------------------------

    async def create(self, plan: Plan, registry: Registry, inputs: Mapping[str, Any] | None = None,
                     **options: Any) -> str:
        """Record a new run and host it; returns its id. The options are those of :meth:`Hosting.create`:
        ``approved_by`` (``None``: the run waits for review), ``parent_run``, ``from_step``, ``reuse``,
        ``request``, ``planning``, ``budget``, ``max_replans``."""
        h = await self.hosting.create(plan, registry, inputs, **options)
        self._look_at(h.state.run_id)
        return h.state.run_id

    async def submit(self, plan: Plan, registry: Registry, inputs: Mapping[str, Any] | None = None,
                     **options: Any) -> str:
        """Record a new run for the fleet's workers to run (options as :meth:`create`); returns its id."""
        h = await self.hosting.create(plan, registry, inputs, fleet=True, **options)
        return h.state.run_id

    async def adopt(self, run_id: str, registry: Registry | None = None, *, need_tools: bool = True) -> RunState:
        """Take charge of an existing run (see :meth:`Hosting.adopt`)."""
        h = await self.hosting.adopt(run_id, registry, self.model, need_tools=need_tools)
        self._look_at(run_id)
        return h.state

    async def adopt_orphans(self) -> tuple[list[str], list[CharterError]]:
        """Adopt every unfinished run whose owner is gone (dead here, or its lease expired).

        Returns the ids of the runs adopted and, for the others, why not (say, their tools no longer import).
        """
        adopted, problems = await self.hosting.adopt_orphans(self.model)
        for run_id in adopted:
            self._look_at(run_id)
        return adopted, problems

    def _look_at(self, run_id: str) -> None:
        self._dirty[run_id] = None
        self._wake_up()

    # --- control ----------------------------------------------------------------------

    async def control(self, run_id: str, request: control.Request, registry: Registry | None = None) -> str:
        """Carry out a control request: ``"done"`` when applied here (a run that goes on stays
        hosted, with ``registry`` or else the tools it recorded, until the loop runs it);
        ``"requested"`` when another live process that runs it was asked. A run this one's loop
        drives is handed to the loop, and this returns once the loop has committed the request.
        """
        while True:
            if self._loop_has(run_id):
                reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
                self._inbox.setdefault(run_id, []).append(Asked(request, reply))
                self._wake_up()
                if await reply != AGAIN:
                    return "done"
                continue  # the loop let go of the run before it took the request: look again
            async with self._turns.turn(run_id):
                if self._loop_has(run_id):
                    continue  # the loop took the run up while this waited its turn: ask it
                return await self._control_here(run_id, request, registry)

    def _loop_has(self, run_id: str) -> bool:
        """Whether this engine's loop is running and drives the run (no direct request holds it)."""
        return self._wake is not None and run_id in self._hosted and run_id not in self._held

    async def _control_here(self, run_id: str, request: Request, registry: Registry | None) -> str:
        hosted_here = run_id in self._hosted
        if not hosted_here:
            row = await self.store.get_run(run_id)
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r} in {self.store.location}")
            control.check_row(row, request)
            now = self.clock.now()
            if row.owner == FLEET:  # no host: applied here at once, and the workers take it from there
                state, events = await fleet.apply_request(self.store, run_id, request, now)
                self.hosting.tell_watchers(state, events)  # committed: traces see a cancelled run end
                return "done"
            if row.owner not in (None, self.owner) and not claimable(row.owner, row.lease_expires, now):
                if control.takes_over(request):
                    raise RunStateError(
                        f"run {run_id} is being run by another process ({row.owner}); "
                        "use `charter pause` or `charter cancel` to ask it to stop"
                    )
                await self.store.add_request(control.to_row(run_id, request, now))
                return "requested"
        h = await self.hosting.adopt(run_id, registry, self.model, need_tools=control.needs_tools(request))
        state = h.state
        self._held.add(run_id)
        try:
            try:
                events = control.events_for(state, request, self.clock.now())
                await self.hosting.commit_one(state, events)
            except BaseException:
                if not hosted_here and not h.busy():
                    await self._release(run_id)  # adopted for this request only
                raise
            if isinstance(request, control.RevisePlan):
                state.policies = rules.retry_policies(state.plan, h.registry)
            if state.status not in ACTIVE and not h.busy():
                await self._release(run_id)  # nothing left to run here (paused, ended, or in review)
        finally:
            self._held.discard(run_id)
            if run_id in self._hosted:
                self._dirty[run_id] = None
            self._wake_up()  # the loop may have requests for it waiting, or nothing left to host
        return "done"

    def stop_all(self, reason: str) -> None:
        """Pause every hosted run (for Ctrl-C). Safe to call from a signal handler."""
        self._stop_reason = reason
        self._wake_up()

    def hosted(self) -> list[str]:
        """The ids of the runs this engine holds."""
        return list(self._hosted)

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # --- the loop -------------------------------------------------------------------------

    async def run_until_settled(self) -> None:
        """Drive every hosted run until each has finished, paused or been cancelled."""
        self._wake = asyncio.Event()
        clock = self.clock
        next_poll = next_renew = clock.now()
        seen: Hashable = None
        try:
            while self._hosted:
                now = clock.now()
                while self._due and self._due[0][0] <= now:
                    self._dirty[heapq.heappop(self._due)[1]] = None
                batch: dict[str, list[Event]] = {}
                recorded = self._take_records(batch)
                self._take_outcomes(now, batch)
                self._take_revisions(now, batch)
                if now >= next_poll:
                    next_poll = now + self.poll_interval
                    token = await self.store.change()
                    if token != seen:
                        seen = token
                        await self._take_stored_requests()
                replies = self._take_requests(now, batch)
                looked = set(self._dirty)
                try:
                    self._advance(now, batch)
                    await self._commit(batch)
                except BaseException as exc:
                    fail([*recorded, *(f for f, _ in replies)], exc)
                    raise
                self.attempts.go()
                answer([*((f, None) for f in recorded), *replies])
                await self._settle(looked | set(batch))
                if now >= next_renew and self._hosted:
                    next_renew = now + self.hosting.lease_seconds / 3
                    await self.hosting.renew()
                if not self._hosted:
                    break
                waiting = self._inbox and self._inbox.keys() - self._held  # held runs' requests wait
                if self._dirty or self.attempts.pending() or self._stop_reason or waiting:
                    continue
                deadline = min(next_poll, next_renew, self._due[0][0] if self._due else math.inf)
                self._wake.clear()
                try:
                    await clock.wait_for(self._wake.wait(), max(0.0, deadline - clock.now()))
                except TimeoutError:
                    pass
        finally:
            self._wake = None
            try:
                await self._abandon()
            finally:  # the runs are let go of first: callers waiting for the loop carry their requests out
                left, self._inbox = self._inbox, {}
                for asked in (a for waiting in left.values() for a in waiting):
                    self._let_go(asked)

    def _take_records(self, batch: dict[str, list[Event]]) -> list[asyncio.Future[None]]:
        """Events that attempts asked to write (model and tool calls, effects), for this batch."""
        records, self.attempts.records = self.attempts.records, []
        futures = []
        for h, ev, fut in records:
            assert isinstance(ev, ModelCalled | ToolCalled | EffectRecorded)
            unit = h.state.steps[ev.step].units.get(ev.item)
            stale = unit is None or unit.status != RUNNING or unit.attempt != ev.attempt
            # an effect happened whatever became of its attempt (timed out, paused): the ledger keeps it
            if stale and not isinstance(ev, EffectRecorded):
                fut.cancel()  # the attempt is over: nobody waits for this any more
                continue
            self._add(h.state, masked(ev), batch)
            futures.append(fut)
        return futures

    def _take_outcomes(self, now: float, batch: dict[str, list[Event]]) -> None:
        outcomes, self.attempts.outcomes = self.attempts.outcomes, []
        for o in outcomes:
            self.attempts.ended(o)
            h, u = o.hosted, o.unit
            self._dirty[h.state.run_id] = None
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
            self._add(h.state, masked(ev), batch)

    def _take_revisions(self, now: float, batch: dict[str, list[Event]]) -> None:
        revisions, self.attempts.revisions = self.attempts.revisions, []
        for h, outcome in revisions:
            h.replanning = None
            state = h.state
            self._dirty[state.run_id] = None
            if outcome is None or state.status != rules.REPLANNING:
                continue  # interrupted (a pause): asked again on resume
            for ev in revision_events(state, outcome, now):
                self._add(state, ev, batch)
            state.policies = rules.retry_policies(state.plan, h.registry)

    async def _take_stored_requests(self) -> None:
        """Requests other processes left for runs hosted here."""
        if not self._hosted:
            return
        for row in await self.store.pending_requests(list(self._hosted)):
            if row.id in self._taken:
                continue
            self._taken.add(row.id)
            request = control.from_row(row)
            if request is None:
                self._answered.append(row.id)  # not understood here: dropped
            else:
                self._inbox.setdefault(row.run_id, []).append(Asked(request, row=row.id))

    def _take_requests(self, now: float, batch: dict[str, list[Event]]) -> list[Reply]:
        """Carry out the requests for hosted runs into ``batch``; returns the replies to give
        (``"done"`` or the error) once the batch is committed."""
        if self._stop_reason is not None:
            for run_id, running in self._hosted.items():
                self._dirty[run_id] = None  # what is not running is let go of this turn (held runs after)
                if running.state.status in (RUNNING, rules.REPLANNING):
                    self._inbox.setdefault(run_id, []).append(Asked(control.Pause(self._stop_reason)))
            self._stop_reason = None
        replies: list[Reply] = []
        inbox, self._inbox = self._inbox, {}
        for run_id, waiting in inbox.items():
            if run_id in self._held:  # a direct request is being carried out: these wait for it
                self._inbox.setdefault(run_id, []).extend(waiting)
                continue
            h = self._hosted.get(run_id)
            if h is None:  # let go of since they were asked: whoever holds the run next carries them out
                for asked in waiting:
                    self._let_go(asked)
                continue
            self._dirty[run_id] = None
            for asked in waiting:
                if asked.row is not None:
                    self._answered.append(asked.row)  # deleted with the batch that carries it out
                try:
                    events = control.events_for(h.state, asked.request, now)
                except Exception as exc:  # done already, or no longer possible (or a bug: the loop goes on)
                    if asked.reply is not None:  # the caller hears why
                        replies.append((asked.reply, exc))
                    continue
                for ev in events:
                    self._add(h.state, ev, batch)
                if control.stops(asked.request):
                    h.stop()
                if isinstance(asked.request, control.RevisePlan):
                    h.state.policies = rules.retry_policies(h.state.plan, h.registry)
                if asked.reply is not None:
                    replies.append((asked.reply, "done"))
        return replies

    def _let_go(self, asked: Asked) -> None:
        """A request for a run no longer hosted here: its caller carries it out itself; a stored
        one is left in the store for whoever adopts the run."""
        if asked.reply is not None and not asked.reply.done():
            asked.reply.set_result(AGAIN)
        if asked.row is not None:
            self._taken.discard(asked.row)

    def _advance(self, now: float, batch: dict[str, list[Event]]) -> None:
        """Ask the rules what is next for each run that needs a look; start what may start."""
        attempts = self.attempts
        free = attempts.max_concurrency - attempts.running
        while free > 0 and self._starved:  # places were given back: the runs that waited longest may go
            run_id = next(iter(self._starved))
            del self._starved[run_id]
            self._dirty[run_id] = None
            free -= 1
        dirty, self._dirty = self._dirty, {}
        for run_id in dirty:
            h = self._hosted.get(run_id)
            if h is None or run_id in self._held:  # held: looked at once its request is committed
                continue
            state = h.state
            if state.status == rules.REPLANNING and h.replanning is None:
                attempts.replan(h)
            if state.status not in (RUNNING, rules.AWAITING):
                continue
            decision = rules.advance(state, now)
            if decision.events:
                batch.setdefault(run_id, []).extend(decision.events)
                self._dirty[run_id] = None  # what the rules just did may lead to more: look again
            if decision.wake_at is not None:
                heapq.heappush(self._due, (decision.wake_at, run_id))
            for unit in decision.ready:
                if attempts.full():
                    self._starved[run_id] = None
                    break
                wait = attempts.blocked(h, unit, now)
                if wait is not None:
                    if wait == math.inf:
                        self._starved[run_id] = None
                    else:
                        heapq.heappush(self._due, (wait, run_id))
                    continue
                ev = rules.start(state, unit, now, self.owner)
                rules.apply(state, ev)
                batch.setdefault(run_id, []).append(ev)
                if isinstance(ev, StepStarted):
                    attempts.launch(h, unit, ev)  # the run is looked at again when the attempt ends
                else:  # it could not start (its arguments did not resolve): the rules decide what follows
                    self._dirty[run_id] = None

    def _add(self, state: RunState, ev: Event, batch: dict[str, list[Event]]) -> None:
        rules.apply(state, ev)
        batch.setdefault(state.run_id, []).append(ev)
        self._dirty[state.run_id] = None

    async def _commit(self, batch: dict[str, list[Event]]) -> None:
        answered, self._answered = self._answered, []
        await self.hosting.commit(batch, answered)

    async def _settle(self, looked: set[str]) -> None:
        """Let go of the runs that have nothing left to do here (finished, paused, awaiting review)."""
        done = [r for r in looked - self._held if (hosted := self._hosted.get(r)) is not None
                and hosted.state.status not in (RUNNING, rules.REPLANNING) and not hosted.busy()]
        if done:
            await self._release(*done)

    async def _release(self, *run_ids: str) -> None:
        for run_id in run_ids:
            self._starved.pop(run_id, None)
        await self.hosting.release(*run_ids)

    async def _abandon(self) -> None:
        """On the way out (an error, or the loop's task cancelled): stop attempts, let go of runs.

        Attempts still running are left as they are in the log; whoever adopts
        the run next records them as interrupted and runs them again.
        """
        await self.attempts.stop_all(list(self._hosted.values()))
        self._dirty.clear()
        self._due.clear()
        self._starved.clear()
        free = [r for r in self._hosted if r not in self._held]  # a held run is its request's to let go of
        if free:
            await self.hosting.release(*free)


__all__ = ["Engine"]
