"""The runs an engine holds: claiming and adopting them, and writing their transitions.

A run is hosted from the moment this engine created it or claimed it until it
lets go of it. Every write to the store goes through here, fenced by the run's
last sequence number and this engine's claim; each commit is then handed to
the watchers as a frozen snapshot.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from ..clock import Clock
from ..errors import CharterError, ConfigError, RunNotFoundError, RunStateError
from ..events import Event, ModelCalled, PlanApproved, RunCreated, StepInterrupted, StepSucceeded
from ..models import Model
from ..plan.inputs import declared_inputs
from ..plan.model import Plan
from ..plan.needs import model_problems
from ..store.base import Store
from ..store.records import FLEET, RunWrite
from ..tools import Registry, load_tools
from . import rules
from .attempts import Hosted
from .fleet import first_queue
from .leases import claimable
from .rules import RunState
from .watchers import Feed, Snapshots, Watcher


def new_run_id() -> str:
    return secrets.token_hex(6)


class Hosting:
    """The runs one engine (``owner``) holds in one store, and every write to them."""

    def __init__(self, store: Store, clock: Clock, owner: str, lease_seconds: float) -> None:
        self.store = store
        self.clock = clock
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.runs: dict[str, Hosted] = {}
        self.feeds: list[Feed] = []
        self.snapshots = Snapshots()

    def watch(self, watcher: Watcher) -> Feed:
        """Give ``watcher`` a frozen snapshot and the events of each commit, on a thread of its own."""
        feed = Feed(watcher)
        self.feeds.append(feed)
        return feed

    def unwatch(self, feed: Feed) -> None:
        if feed in self.feeds:
            self.feeds.remove(feed)
        feed.close()

    async def create(
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
        fleet: bool = False,
        trace: Mapping[str, str] | None = None,
    ) -> Hosted:
        """Record a new run and host it.

        With ``approved_by=None`` the run waits for its plan to be approved or rejected.
        ``reuse`` maps step ids to outputs taken as done; ``request`` and ``planning``
        (the planner's model calls) record where a planned run came from; ``trace``, its place in a
        distributed trace (see ``RunCreated.trace``). With ``fleet``
        the run is submitted to the workers instead: it is recorded with its first queue,
        and not hosted here.
        """
        values = declared_inputs(plan, inputs)
        now = self.clock.now()
        created = RunCreated(
            at=now, plan=plan.to_json(), inputs=values,
            tool_sources=list(registry.sources), parent_run=parent_run, from_step=from_step,
            request=request, budget=rules.check_budget(budget), max_replans=max_replans, trace=dict(trace or {}),
        )
        state = RunState.from_created(new_run_id(), created, plan)
        state.policies = rules.retry_policies(state.plan, registry)
        events: list[Event] = [created, *planning]
        if approved_by is not None:
            events.append(PlanApproved(at=now, by=approved_by))
        for sid, output in (reuse or {}).items():
            events.append(StepSucceeded(at=now, step=sid, output=output, reused_from=parent_run))
        for ev in events[1:]:
            rules.apply(state, ev)
        if fleet:
            more, queue = first_queue(state, now)
            events += more
            first = RunWrite(state.run_id, 0, events, rules.run_record(state), queue=queue)
            await self.store.create_run(rules.new_run(state), first, FLEET, None)
            state.last_seq = first.last_seq
            self.tell_watchers(state, events)
            return Hosted(state, registry, stored_status=state.status)
        first = RunWrite(state.run_id, 0, events, rules.run_record(state))
        # the run exists approved, or not at all
        await self.store.create_run(rules.new_run(state), first, self.owner, now + self.lease_seconds)
        state.last_seq = first.last_seq
        h = self.runs[state.run_id] = Hosted(state, registry, stored_status=state.status)
        self.tell_watchers(state, events)
        return h

    async def adopt(self, run_id: str, registry: Registry | None, model: Model | None, *,
                    need_tools: bool = True) -> Hosted:
        """Take charge of an existing run: claim it, rebuild its state from the log, host it.

        Attempts that were running when their process stopped are recorded as
        interrupted; they run again with the same idempotency key. Unless
        ``need_tools`` is false (to pause or cancel), every tool the rest of the
        run needs must load, or the run is left as it is.
        """
        if run_id in self.runs:
            return self.runs[run_id]
        await self._claim(run_id)
        try:
            state = rules.replay(run_id, await self.store.events(run_id))
            if registry is None:
                load = need_tools and bool(state.tool_sources)
                registry = load_tools(state.tool_sources) if load else Registry()
            if need_tools and not state.finished:
                if registry.unstarted:  # the MCP servers of what is left start while the loop goes on
                    await registry.start([n for s in state.remaining_steps() for n in s.tool_names()])
                _check_tools(state, registry)
                _check_models(state, model)
            state.policies = rules.retry_policies(state.plan, registry)
            now = self.clock.now()
            await self.commit_one(state, [
                StepInterrupted(at=now, step=u.step, item=u.item, attempt=u.attempt,
                                reason="the process running it stopped")
                for u in state.running_units()
            ])
        except BaseException:
            await self.store.release([run_id], self.owner)
            raise
        h = self.runs[run_id] = Hosted(state, registry)
        return h

    async def adopt_orphans(self, model: Model | None) -> tuple[list[str], list[CharterError]]:
        """Adopt every unfinished run whose owner is gone (dead here, or its lease expired).

        Returns the ids of the runs adopted and, for the others, why not (say, their tools no longer import).
        """
        adopted: list[str] = []
        problems: list[CharterError] = []
        now = self.clock.now()
        for run_id, owner, lease in await self.store.unfinished_runs():
            if run_id in self.runs or not claimable(owner, lease, now):
                continue
            try:
                await self.adopt(run_id, None, model)
                adopted.append(run_id)
            except RunStateError:
                continue  # another process took it first
            except CharterError as exc:
                problems.append(CharterError(f"cannot continue run {run_id}: {exc}"))
        return adopted, problems

    async def _claim(self, run_id: str) -> None:
        row = await self.store.get_run(run_id)
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.store.location}")
        if row.pruned_at is not None:
            raise RunStateError(pruned(run_id))
        now = self.clock.now()
        if row.owner not in (None, self.owner) and not claimable(row.owner, row.lease_expires, now):
            raise RunStateError(
                f"run {run_id} is being run by another process ({row.owner}); "
                "use `charter pause` or `charter cancel` to ask it to stop"
            )
        if not await self.store.claim(run_id, self.owner, now + self.lease_seconds, row.owner):
            raise RunStateError(f"run {run_id} was claimed by another process just now")

    async def commit(self, batch: dict[str, list[Event]], answered: Sequence[int] = ()) -> None:
        """Write a turn's events of every run in one transaction, with the control requests they carried out."""
        if not batch and not answered:
            return
        hosts = [self.runs[r] for r in batch]
        writes = [RunWrite(h.state.run_id, h.state.last_seq, evs, rules.run_record(h.state),
                           status_changed=h.state.status != h.stored_status)
                  for h, evs in zip(hosts, batch.values(), strict=True)]
        await self.store.append(writes, self.owner, answered)
        for h, w in zip(hosts, writes, strict=True):
            h.state.last_seq, h.stored_status = w.last_seq, h.state.status
            self.tell_watchers(h.state, w.events)

    async def commit_one(self, state: RunState, events: list[Event]) -> None:
        if not events:
            return
        for ev in events:
            rules.apply(state, ev)
        write = RunWrite(state.run_id, state.last_seq, events, rules.run_record(state))
        await self.store.append([write], self.owner)
        state.last_seq = write.last_seq
        self.tell_watchers(state, events)

    def tell_watchers(self, state: RunState, events: Sequence[Event]) -> None:
        if not self.feeds:
            return
        snap, evs = self.snapshots.after(state, events), tuple(events)
        for feed in self.feeds:
            feed.put(snap, evs)

    async def renew(self) -> None:
        if self.runs:
            await self.store.renew(list(self.runs), self.owner, self.clock.now() + self.lease_seconds)

    async def release(self, *run_ids: str) -> None:
        timers = {}
        for run_id in run_ids:
            h = self.runs.pop(run_id, None)
            self.snapshots.forget(run_id)
            # a run let go of while it waits for a person: the store keeps its deadline, for any worker
            if h is not None and h.state.status == rules.AWAITING:
                deadline = rules.next_deadline(h.state)
                if deadline is not None:
                    timers[run_id] = deadline
        await self.store.release(run_ids, self.owner, timers)


def _check_tools(state: RunState, registry: Registry) -> None:
    """Refuse to take on a run whose remaining steps need tools that are not loaded."""
    missing: list[str] = []
    for step in state.remaining_steps():
        missing += [n for n in step.tool_names() if n not in registry and n not in missing]
    if missing:
        where = ", ".join(state.tool_sources) or "code that recorded no tool source"
        raise ConfigError(f"run {state.run_id} needs tools that are not loaded: {', '.join(missing)} "
                          f"(its tools came from {where}; pass them with --tools)")


def _check_models(state: RunState, model: Model | None) -> None:
    """Refuse to take on a run whose remaining ``llm`` or ``agent`` steps would find no model."""
    problems = model_problems(state.plan, model, steps=[s.id for s in state.remaining_steps()])
    if problems:
        raise ConfigError(f"run {state.run_id} cannot go on: " + "; ".join(str(p) for p in problems)
                          + " (pass --model, or set CHARTER_MODEL)")


def pruned(run_id: str) -> str:
    """Why a pruned run cannot go on."""
    return (f"run {run_id} was pruned (`charter prune`): the outputs and model calls it would need are gone, "
            "so it cannot go on; run its plan again instead")
