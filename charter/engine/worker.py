"""A worker: runs the steps of fleet runs, any step of any run, beside other workers.

Workers share nothing but the store. Each turn a worker writes what its
attempts reported (outcomes, model and tool calls, effects), takes due work if
it has room (ready units, timers, units of workers gone silent), and beats its
heartbeat; between turns it waits for its attempts, for the store to change
(PostgreSQL's ``LISTEN/NOTIFY``), or for the next due time. Every write to a run
is one transaction decided by :class:`~charter.engine.fleet.FleetWriter`.

A worker that cannot reach the store keeps what its attempts reported and
writes it once the store is back; one that was cut off past its lease finds its
units taken over and its late outcomes refused, and goes on with other work.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..clock import Clock, SystemClock
from ..errors import CharterError, ConfigError, StoreError
from ..events import Event
from ..models import Model
from ..store.base import Store
from ..store.records import DueTask, WorkerRow
from ..tools import Registry, load_tools
from ..workspace import Workspace
from . import rules
from .attempts import Attempts, Hosted, Outcome
from .fleet import REPLAN, FleetWriter, Inputs, Written, catch_up
from .fleet import limited as _has_limits
from .journal import revision_events
from .leases import new_owner
from .rules import Unit
from .watchers import Feed, Snapshots, Watcher

log = logging.getLogger("charter.worker")



@dataclass
class _Reports:
    """What a run's attempts here reported and is not written yet."""

    outcomes: list[Outcome] = field(default_factory=list)
    records: list[tuple[Event, asyncio.Future[None]]] = field(default_factory=list)
    revision: Any = None  # a Revision, an Exception, or None (interrupted)
    revised: bool = False


class Worker:
    """Executes steps of fleet runs until asked to stop.

    Args:
        store: the shared store (PostgreSQL for workers on several machines).
        concurrency: attempts running at once in this worker.
        lease_seconds: how long this worker's claims last without a heartbeat (it beats
            every third of it); past it, other workers take its units over.
        grace_seconds: on :meth:`stop`, how long attempts in flight may take to finish
            before they are interrupted (and left for other workers).
        model: the model of ``llm`` and ``agent`` steps that name none, and of replanning.
    """

    def __init__(self, store: Store, *, clock: Clock | None = None, concurrency: int = 10,
                 lease_seconds: float = 15.0, grace_seconds: float = 30.0, model: Model | None = None,
                 workspace: Workspace | None = None,
                 load: Callable[[list[str]], Registry] = load_tools) -> None:
        if concurrency < 1:
            raise ConfigError("a worker's concurrency must be at least 1")
        if lease_seconds <= 0:
            raise ConfigError("a worker's lease must be longer than 0 seconds")
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.id = new_owner()
        self.lease_seconds = lease_seconds
        self.grace_seconds = grace_seconds
        self.attempts = Attempts(self.clock, concurrency, model, workspace, self._wake_up)
        self.runs: dict[str, Hosted] = {}  # fleet runs with work in flight here, as last read
        self.lacking: dict[str, str] = {}  # run id -> why this worker leaves its steps to others
        self.refused: list[str] = []  # late outcomes the store refused (logged too)
        self.feeds: list[Feed] = []  # watchers of what this worker commits (traces)
        self.started_at = self.clock.now()
        self._load = load
        self._registries: dict[tuple[str, ...], Registry] = {}
        self._reports: dict[str, _Reports] = {}
        self._writer = FleetWriter(store, self.id, self._can_start, self._can_replan)
        self._wake = asyncio.Event()
        self._changed = True
        self._stop_at: float | None = None
        self._beaten = -math.inf
        self._alive_until = -math.inf  # the expiry of the last heartbeat the store took
        self._due = 0.0  # when the queue has something due next, as last asked (inf: ask again)
        # since when this worker has reached the store without a failure: it takes over the units of
        # workers that look silent only after a whole lease of that, so that an outage of the store
        # itself (when nobody could beat) does not look like every other worker went silent
        self._reachable_since = math.inf  # set by the first heartbeat
        self._taking = 0  # units the transaction under way took, to launch once it commits
        # runs of a claim whose commit's outcome is unknown (the store went away as it committed):
        # if it landed, the queue holds units for this worker that it does not run, and that no
        # other worker takes while this one beats; the next claim writes these runs again, which
        # finds such units and runs them again (see FleetWriter.write)
        self._unsure: dict[str, dict[str, Any]] = {}
        self._snapshots = Snapshots()

    # --- what this worker may take --------------------------------------------------------

    def _can_start(self, h: Hosted, unit: Unit) -> bool:
        # what a transaction takes is launched after its commit, and it may write many runs: the
        # transaction's count is kept here (``_taking``)
        if self._stop_at is not None or self.attempts.running + self._taking >= self.attempts.max_concurrency:
            return False
        step = h.state.plan.by_id[unit.step]
        if step.kind == "tool":
            tool = h.registry.get(step.tool)
            if tool is None or self.attempts.limits.ready_at(tool, self.clock.now()) is not None:
                return False
        self._taking += 1
        return True

    def _can_replan(self, h: Hosted) -> bool:
        return self._stop_at is None and (self.attempts.model is not None or bool(os.environ.get("CHARTER_MODEL")))

    # --- the loop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking work; let attempts in flight finish within the grace period, then leave.
        Safe to call from a signal handler's callback on the loop."""
        if self._stop_at is None:
            self._stop_at = self.clock.now() + self.grace_seconds
            self._wake_up()

    def stop_now(self) -> None:
        """Stop at once: attempts in flight are interrupted and left for other workers."""
        self._stop_at = self.clock.now()
        self._wake_up()

    def _wake_up(self) -> None:
        self._wake.set()

    def watch(self, watcher: Watcher) -> Feed:
        """Give ``watcher`` a frozen snapshot and the events of each commit this worker makes, on a
        thread of its own (as :meth:`Engine.watch <charter.engine.core.Engine.watch>` does)."""
        feed = Feed(watcher)
        self.feeds.append(feed)
        return feed

    async def run(self) -> None:
        """Work until :meth:`stop` is called and everything taken here is written."""
        self._wake = asyncio.Event()
        watcher = asyncio.ensure_future(self._watch_store())
        try:
            await self._beat(self.clock.now())  # alive in the store before it claims anything
            running = 0
            while True:
                # cleared before the turn looks at anything: what wakes it during the turn is kept
                self._wake.clear()
                now = self.clock.now()
                self._collect()
                await self._write_reports()
                changed, self._changed = self._changed, False
                if changed:
                    await self._look_at_runs()
                freed = self.attempts.running < running
                running = self.attempts.running
                # claims only under a fresh heartbeat, and when there may be something new to take
                if self._stop_at is None and now < self._alive_until and (
                        changed or freed or now >= self._due or self._unsure):
                    self._due = math.inf  # until the next sleep asks the store when the next comes due
                    await self._claim(now)
                if now - self._beaten >= self.lease_seconds / 3:
                    await self._beat(now)
                    self._due = min(self._due, now)  # look for the units of workers gone silent
                if self._stop_at is not None:
                    if now >= self._stop_at:
                        for h in self.runs.values():
                            h.stop()  # past the grace period: interrupted, and left for others
                    if not self.runs and not self._reports and not self.attempts.pending():
                        break
                if self.attempts.pending() or self._changed:
                    continue
                await self._sleep(now)
        finally:
            watcher.cancel()
            await self.attempts.stop_all(list(self.runs.values()))
            try:
                await self.store.drop_worker(self.id)
            except StoreError as exc:
                log.warning("worker %s: could not leave the list of workers: %s", self.id, exc)

    async def _sleep(self, now: float) -> None:
        deadline = self._beaten + self.lease_seconds / 3
        if self._stop_at is not None:
            deadline = min(deadline, self._stop_at)
        if self._reports or self._unsure:
            deadline = min(deadline, now + 0.5)  # the store was unreachable: try again soon
        elif self._stop_at is None and self.attempts.running < self.attempts.max_concurrency:
            if self._due == math.inf:
                try:
                    due = await self.store.next_due()
                except StoreError:
                    due = None
                # due now but not taken (held back, or for tools not here): looked at again soon, not at once
                self._due = math.inf if due is None else max(due, now + 0.05)
            deadline = min(deadline, self._due)
        # a silent worker's units come due when its lease lapses: looked for at every heartbeat
        try:
            await self.clock.wait_for(self._wake.wait(), max(0.0, deadline - self.clock.now()))
        except TimeoutError:
            pass

    async def _watch_store(self) -> None:
        """Wake the loop when anyone writes to the store."""
        seen = None
        while True:
            try:
                now_seen = await self.store.wait_for_change(seen, 5.0, self.clock)
            except StoreError:
                await asyncio.sleep(0.5)
                continue
            if now_seen != seen:
                seen = now_seen
                self._changed = True
                self._wake_up()

    async def _beat(self, now: float) -> None:
        row = WorkerRow(
            id=self.id, host=socket.gethostname(), pid=os.getpid(), started_at=self.started_at,
            heartbeat_at=now, expires_at=now + self.lease_seconds, concurrency=self.attempts.max_concurrency,
            running=self.attempts.running, runs=sorted(self.runs), lacking=dict(self.lacking),
            stopping=self._stop_at is not None,
        )
        try:
            await self.store.beat(row)
            # beats that came late (the loop waited on a store that was away) start the count again
            if self._reachable_since == math.inf or now - self._beaten > 2 * self.lease_seconds / 3:
                self._reachable_since = now
            self._beaten, self._alive_until = now, row.expires_at
        except StoreError as exc:
            self._reachable_since = math.inf
            log.warning("worker %s: no heartbeat: %s", self.id, exc)
            self._beaten = now - self.lease_seconds / 3 + 0.5  # try again in half a second

    # --- writing what attempts reported ---------------------------------------------------------

    def _collect(self) -> None:
        a = self.attempts
        for o in a.outcomes:
            a.ended(o)
            self._reports.setdefault(o.hosted.state.run_id, _Reports()).outcomes.append(o)
        for h, ev, fut in a.records:
            self._reports.setdefault(h.state.run_id, _Reports()).records.append((ev, fut))
        for h, revision in a.revisions:
            h.replanning = None
            r = self._reports.setdefault(h.state.run_id, _Reports())
            r.revision, r.revised = revision, True
        a.outcomes, a.records, a.revisions = [], [], []

    async def _write_reports(self) -> None:
        """Write what attempts reported: the runs whose writes lock no tool's row in one transaction
        (one commit for many runs: their rows are locked in order of their ids), the others alone."""
        for run_id in [r for r in self._reports if r not in self.runs]:
            del self._reports[run_id]
        together = sorted(r for r in self._reports if not self._limited(self.runs[r]))
        batches = [together] if together else []
        batches += [[r] for r in sorted(self._reports) if r not in together]
        for batch in batches:
            done = await self._transact([(r, Inputs(outcomes=self._reports[r].outcomes,
                                                    records=[e for e, _ in self._reports[r].records]),
                                          {"revision": self._reports[r]}) for r in batch])
            for run_id, written in done.items():  # none if the store was unreachable: kept for the next turn
                r = self._reports.pop(run_id)
                kept = {id(e) for e in written.kept}
                for ev, fut in r.records:
                    if not fut.done():
                        if id(ev) in kept:
                            fut.set_result(None)
                        else:
                            fut.cancel()  # the attempt lost its unit: nobody waits for this any more
                self.refused.extend(written.refused)

    def _limited(self, h: Hosted) -> bool:
        """Whether a write to the run locks tools' rows (fleet-wide limits)."""
        return any(s.kind == "tool" and _has_limits(h.registry.get(s.tool)) for s in h.state.remaining_steps())

    async def _look_at_runs(self) -> None:
        """Stop what a pause or a cancel (written by someone else) stopped: one read, whatever runs here."""
        if not self.runs:
            return
        try:
            stopped = await self.store.stopped_runs(self.id)
        except StoreError:
            return
        for run_id in stopped:
            h = self.runs.get(run_id)
            if h is not None:
                log.info("worker %s: run %s no longer goes on; its attempts here stop", self.id, run_id)
                h.stop()

    # --- taking work ------------------------------------------------------------------------------

    async def _claim(self, now: float) -> None:
        free = max(0, self.attempts.max_concurrency - self.attempts.running)
        try:
            due = await self.store.due_tasks(now, limit=4 * free + 8)
        except StoreError as exc:
            log.warning("worker %s: cannot read the queue: %s", self.id, exc)
            return
        unsure, self._unsure = self._unsure, {}
        runs: dict[str, DueTask] = {}
        useful: set[str] = set()
        for t in due:
            if t.run_id in self.lacking or t.run_id in unsure:
                continue
            runs.setdefault(t.run_id, t)
            if t.step in ("", REPLAN) or t.owner is not None or free > 0:  # a unit ready to run needs room
                useful.add(t.run_id)
        together: list[tuple[str, Inputs, dict[str, Any]]] = []
        alone: list[tuple[str, Inputs, dict[str, Any]]] = []
        for run_id, t in runs.items():
            registry = await self._registry(run_id, t.tool_sources) if run_id in useful else None
            if registry is not None:
                # a run a host let go of while it waited is the fleet's once its timer came due
                write = (run_id, Inputs(), {"registry": registry, "hand_over": not t.fleet})
                # runs whose tools have fleet-wide limits lock those tools' rows: one transaction each,
                # so that no two transactions lock tools in different orders
                (alone if any(_has_limits(tool) for tool in registry) else together).append(write)
        # each alone, waiting for the run's lock if another writer holds it: it must be looked at
        alone += [(r, Inputs(), {**options, "wait": True}) for r, options in unsure.items()]
        # one transaction for the others: runs another writer holds are skipped, so it waits for none
        for batch in ([together] if together else []) + [[w] for w in alone]:
            await self._transact(batch, claim=True)

    async def _registry(self, run_id: str, sources: list[str]) -> Registry | None:
        """The tools of runs that recorded ``sources``, loaded once, outside any transaction (MCP
        servers start); ``None`` if they do not load here."""
        key = tuple(sources)
        registry = self._registries.get(key)
        try:
            if registry is None:
                registry = self._registries[key] = self._load(list(key))
            if registry.unstarted:
                await registry.start()
        except CharterError as exc:
            self._lack(run_id, f"its tools do not load here: {exc}")
            return None
        return registry

    def _lack(self, run_id: str, why: str) -> None:
        if run_id not in self.lacking:
            log.warning("worker %s leaves the steps of run %s to other workers: %s", self.id, run_id, why)
            self.lacking[run_id] = why
            self._beaten = -math.inf  # say so in the next heartbeat

    async def _transact(self, writes: list[tuple[str, Inputs, dict[str, Any]]], *,
                        claim: bool = False) -> dict[str, Written]:
        """One transaction over several runs (``(run, inputs, options of _decide)``, in order): then
        start what this worker took. Nothing if the store failed (what was read is read again)."""
        decided: dict[str, tuple[Hosted, Written]] = {}
        self._taking = 0
        try:
            async with self.store.transaction():
                now = self.clock.now()
                for run_id, inputs, options in writes:
                    got = await self._decide(run_id, inputs, now, claim=claim, **options)
                    if got is not None:
                        decided[run_id] = got
        except StoreError as exc:
            self._reachable_since = math.inf  # until the next heartbeat lands
            if claim:
                self._unsure.update((run_id, options) for run_id, _, options in writes)
            for run_id, _, _ in writes:
                h = self.runs.get(run_id)
                if h is not None:
                    h.state.last_seq = 1 << 62  # what was applied did not land: read it all again next time
            log.warning("worker %s: %s", self.id, exc)
            return {}
        for h, written in decided.values():
            if self.feeds and written.events:
                snap, evs = self._snapshots.after(h.state, written.events), tuple(written.events)
                for feed in self.feeds:
                    feed.put(snap, evs)
            for unit, ev in written.started:
                self.attempts.launch(h, unit, ev)
            if written.replan:
                self.attempts.replan(h)
        self.attempts.go()  # the attempts begin now that their starts are committed
        for run_id, (h, written) in decided.items():
            if written.stops:
                h.stop()
            if h.busy():
                self.runs[run_id] = h
            else:
                self.runs.pop(run_id, None)
                self._snapshots.forget(run_id)
        return {run_id: written for run_id, (_, written) in decided.items()}

    async def _decide(self, run_id: str, inputs: Inputs, now: float, *, claim: bool = False,
                      revision: _Reports | None = None, registry: Registry | None = None,
                      hand_over: bool = False, wait: bool = False) -> tuple[Hosted, Written] | None:
        """Inside a transaction: lock a run, catch up, write ``inputs``, start what this worker takes."""
        h = self.runs.get(run_id)
        if h is None and registry is None:
            return None
        if hand_over and await self.store.hand_over(run_id):
            log.info("worker %s takes over run %s: its approval's deadline came", self.id, run_id)
        lock = await self.store.lock_run(run_id, now, skip_locked=claim and not wait)
        if lock is None:
            return None
        if h is None:  # a run new here: its log is read under the lock, not before
            assert registry is not None
            h = Hosted(await catch_up(self.store, None, run_id, lock.last_seq), registry)  # nothing written here yet
            missing = sorted({s.tool for s in h.state.remaining_steps() if s.kind == "tool" and s.tool not in registry})
            if missing:
                self._lack(run_id, f"tools not loaded here: {', '.join(missing)}")
                return None
            h.state.policies = rules.retry_policies(h.state.plan, registry)
        else:
            landed: list[Event] = []
            h.state = await catch_up(self.store, h, run_id, lock.last_seq, landed)
            inputs.landed = landed
        inputs.here = {*h.tasks, *((o.unit.step, o.unit.item) for o in inputs.outcomes)}
        inputs.take_over = (now - self._reachable_since >= self.lease_seconds
                            and now - self._beaten < 2 * self.lease_seconds / 3)
        if revision is not None and revision.revised:
            inputs.replanned = True
            inputs.revised = self._revised(h, lock.tasks, revision.revision, now)
        return h, await self._writer.write(h, lock, now, inputs)

    def _revised(self, h: Hosted, tasks: list[Any], outcome: Any, now: float) -> list[Event]:
        """A replanning's events, if this worker still holds the run's replanning."""
        state = h.state
        held = any(t.step == REPLAN and t.owner == self.id for t in tasks)
        if outcome is None or not held or state.status != rules.REPLANNING:
            return []
        return revision_events(state, outcome, now)


__all__ = ["Worker"]
