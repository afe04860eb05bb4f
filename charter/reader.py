"""Reading runs from a store: find, list, report, follow and wait for them, never changing one.

:class:`RunReader` is the reading half of :class:`~charter.Charter` (which adds the
methods that act). Like the store, every method is async. Waiting (``watch``,
``wait``) wakes when the store changes: at once for a writer in this process, and
within a poll of the store's cheap change check for one in another.

It may import the engine's pure parts (the rules, the report, leases) and the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Hashable
from dataclasses import dataclass, replace

from .clock import Clock, SystemClock
from .engine import rules
from .engine.leases import claimable
from .engine.report import RunReport, build_report
from .engine.watchers import RunSnapshot, snapshot
from .errors import RunNotFoundError, StoreError
from .events import Event
from .store import EffectRow, RunRow, Store
from .store.records import StoreStats, WorkerRow
from .workspace.secrets import masked, redact, redact_data, redacting

#: The statuses of a run that no process is working on: it ended, paused, or waits for a
#: decision (its plan's review, or an approval step).
SETTLED = frozenset({rules.CREATED, rules.PAUSED, rules.AWAITING, *rules.RUN_DONE})
#: every status a run can have, as ``charter runs --status`` and the web page filter on them
#: (``interrupted``: in flight, but the process running it is gone)
STATUSES = (rules.CREATED, rules.RUNNING, rules.AWAITING, rules.REPLANNING, rules.PAUSED, rules.SUCCEEDED,
            rules.FAILED, rules.CANCELLED, rules.REJECTED, "interrupted")


@dataclass(frozen=True)
class RunUpdate:
    """What :meth:`Charter.watch` yields: a run's state just after one committed ``event``.

    ``state`` is the watcher's own, brought up to date in place as the run goes
    on: keep the events if you need the past. The last update of a run whose
    process is gone has ``interrupted`` set and no event.
    """

    state: rules.RunState
    event: Event | None
    interrupted: bool = False

    def snapshot(self) -> RunSnapshot:
        """The run as it is at this update, frozen (what the engine's watchers are given)."""
        return snapshot(self.state)


class RunReader:
    """Reads the runs of ``store``; ``clock`` tells which owners' leases have run out."""

    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock

    @property
    def location(self) -> str:
        """Where the store is, as a person names it (a path, or ``:memory:``)."""
        return str(self.store.location)

    # --- inspecting -----------------------------------------------------------------

    async def resolve(self, run_id: str) -> str:
        """A full run id from an id or a unique prefix of one."""
        try:
            run_id.encode("utf-8")
        except UnicodeEncodeError:
            raise RunNotFoundError(f"no run {run_id!r} in {self.store.location}") from None
        if await self.store.get_run(run_id) is not None:
            return run_id
        matches = await self.store.find_run_ids(run_id) if run_id else []
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunNotFoundError(f"no run {run_id!r} in {self.store.location}")
        raise RunNotFoundError(f"{run_id!r} matches several runs: {', '.join(matches)}")

    async def runs(self, limit: int = 50, *, status: Collection[str] | str | None = None, since: float | None = None,
                   text: str | None = None, before: str | None = None) -> list[RunRow]:
        """The latest runs, newest first, ``limit`` of them. Filters: ``status`` (one, or several),
        created at or after ``since`` (epoch seconds), ``text`` in the goal, the request or the id
        (any case). ``before``: a run id; the page of runs created before it.

        ``interrupted`` is a status here too: the runs in flight whose process is gone."""
        now = self._now()
        wanted = {status} if isinstance(status, str) else None if status is None else set(status)
        statuses = None if wanted is None else (
            wanted - {"interrupted"} | ({rules.RUNNING, rules.REPLANNING} if "interrupted" in wanted else set()))
        rows: list[RunRow] = []
        while len(rows) < limit:
            page = await self.store.list_runs(limit, statuses=statuses, since=since, text=text, before=before)
            marked = [_mark(r, now) for r in page]
            if wanted is not None:  # a run in flight whose process is gone is `interrupted`, not `running`
                marked = [r for r in marked if (("interrupted" in wanted) if r.interrupted else r.status in wanted)]
            rows.extend(marked)
            if len(page) < limit:
                break
            before = page[-1].id
        return rows[:limit]

    async def row(self, run_id: str) -> RunRow:
        """One run's line of the runs list (by id or a unique prefix): its status, counts, cost, and
        ``pruned_at`` (when ``charter prune`` dropped its payloads)."""
        run_id = await self.resolve(run_id)
        row = await self.store.get_run(run_id)
        if row is None:  # deleted since it was resolved
            raise RunNotFoundError(f"no run {run_id!r} in {self.store.location}")
        return _mark(row, self._now())

    async def interrupted(self) -> list[RunRow]:
        """The runs that stopped in the middle, oldest first: their log says they are running, but
        the process running them is gone (dead on this machine, or its lease expired).
        :meth:`resume` or :meth:`resume_all` continues them; nothing else does."""
        now = self._now()
        out = []
        for run_id, _, _ in await self.store.unfinished_runs():
            row = await self.store.get_run(run_id)
            if row is not None and (marked := _mark(row, now)).interrupted:
                out.append(marked)
        return out

    async def workers(self, *, all: bool = False) -> list[WorkerRow]:
        """The live workers (their heartbeat not expired), oldest first; ``all`` adds the silent ones."""
        now = self._now()
        return [w for w in await self.store.workers() if all or w.expires_at >= now]

    async def schema(self) -> tuple[int, int]:
        """The store's schema version, and the latest this Charter knows (migrations apply on open)."""
        return await self.store.schema_version()

    async def stats(self, biggest: int = 5) -> StoreStats:
        """What uses the store's space: runs, events, payloads (kept and pruned), the effect ledger,
        the ``biggest`` runs, and the database's size."""
        return await self.store.stats(biggest)

    async def _shown(self, run_id: str, after: int = 0) -> list[Event]:
        """A run's events to show, with every secret known in this process masked: one that the
        process which wrote them did not know (it never loaded the workspace that names it) is
        masked here. (Not :meth:`state`: what acts on a run reads its log as it is.)"""
        events = await self.store.events(run_id, after)
        return [masked(ev) for ev in events] if redacting() else events

    def _now(self) -> float:
        return (self.clock or SystemClock()).now()

    async def state(self, run_id: str) -> rules.RunState:
        """A run's state as the rules derive it from its log (a copy of its own: change it freely)."""
        run_id = await self.resolve(run_id)
        return rules.replay(run_id, await self.store.events(run_id))

    async def report(self, run_id: str) -> RunReport:
        """A run's status, output and timeline, from its log."""
        run_id = await self.resolve(run_id)
        events = await self._shown(run_id)
        report = build_report(rules.replay(run_id, events), events)
        return replace(report, interrupted=True) if await self._owner_gone(run_id, self._now()) else report

    async def watch(self, run_id: str, *, interval: float = 0.2) -> AsyncIterator[RunUpdate]:
        """Follow a run from its log, whichever process executes it: one update per committed
        event, those already there first, until the run settles (it ends, pauses, or waits for
        a decision) or is interrupted (no live process holds it; it goes on with ``resume``).

        Watching only reads: the run is never claimed or changed. It wakes when the store
        changes, and looks at least every ``interval`` seconds of this app's clock whether the
        run's owner is still alive.
        """
        run_id = await self.resolve(run_id)
        clock = self.clock or SystemClock()
        token = await self.store.change()
        events = await self._shown(run_id)
        state = rules.replay(run_id, events[:1])
        seen = 0
        while True:
            for ev in events:
                if seen:  # the first, RunCreated, made the state
                    rules.apply(state, ev)
                seen += 1
                state.last_seq = seen
                yield RunUpdate(state, ev)
            if state.status not in (rules.RUNNING, rules.REPLANNING):
                return
            token, events, gone = await self._more(run_id, seen, token, interval, clock, check_owner=True)
            if gone:
                yield RunUpdate(state, None, interrupted=True)
                return

    async def follow(self, run_id: str, *, after: int = 0, interval: float = 1.0) -> AsyncIterator[RunUpdate]:
        """Follow a run's log from the event after sequence number ``after`` (0: from the start), for as
        long as the caller keeps asking: unlike :meth:`watch`, it goes on when the run settles, since a
        paused or waiting run may go on later (the web page's live view is one user).

        ``update.state.last_seq`` is each event's sequence number. When no live process holds a run
        in flight any more, one update with ``interrupted`` set and no event says so (again only once
        it has moved on and stopped again). Only reads; wakes when the store changes, and looks at
        least every ``interval`` seconds whether the run's owner is still alive.
        """
        run_id = await self.resolve(run_id)
        clock = self.clock or SystemClock()
        token = await self.store.change()
        events = await self._shown(run_id)
        seen = min(max(1, after), len(events))  # an id from the future (another store, say): from the end
        state = rules.replay(run_id, events[:seen])
        if after <= 0:  # the first event, RunCreated, made the state: it is an update too
            yield RunUpdate(state, events[0])
        told_gone = False
        events = events[seen:]
        while True:
            for ev in events:
                rules.apply(state, ev)
                seen += 1
                state.last_seq = seen
                told_gone = False
                yield RunUpdate(state, ev)
            in_flight = state.status in (rules.RUNNING, rules.REPLANNING)
            token, events, gone = await self._more(run_id, seen, token, interval, clock,
                                                   check_owner=in_flight and not told_gone)
            if gone:
                told_gone = True
                yield RunUpdate(state, None, interrupted=True)

    async def _more(self, run_id: str, seen: int, token: Hashable, interval: float, clock: Clock, *,
                    check_owner: bool) -> tuple[Hashable, list[Event], bool]:
        """Wait for the store to change (at most ``interval``), then read the run's events after
        ``seen``: ``(token, events, gone)``. ``gone``: nothing new came, and (``check_owner``) no live
        process holds the run any more. A store that fails (restarting, say) gives nothing this time."""
        try:
            token = await self.store.wait_for_change(token, interval, clock)
            events = await self._shown(run_id, after=seen)
        except StoreError:  # look again soon, for as long as it takes
            await clock.sleep(min(1.0, interval * 5))
            return token, [], False
        if events or not check_owner or not await self._owner_gone(run_id, clock.now()):
            return token, events, False
        events = await self._shown(run_id, after=seen)  # it may have moved on just before its owner let go
        return token, events, not events

    async def _owner_gone(self, run_id: str, now: float) -> bool:
        """Whether no live process holds an unfinished run (its process died, or its lease ran out)."""
        row = await self.store.get_run(run_id)
        return row is not None and _mark(row, now).interrupted

    async def effects(self, run_id: str | None = None, limit: int = 1000) -> list[EffectRow]:
        """The effect ledger: every change write tools made, of one run or of all runs, oldest first."""
        rows = await self.store.effects(await self.resolve(run_id) if run_id else None, limit)
        if not redacting():
            return rows
        return [replace(r, target=redact_data(r.target), result=redact_data(r.result)) for r in rows]

    async def wait(self, run_id: str, *, until: Collection[str] = SETTLED, timeout: float | None = None,
                   interval: float = 0.2) -> RunRow:
        """Wait until a run, run by any process, has one of the statuses ``until`` (default:
        :data:`SETTLED`), or no live process holds it any more (it is interrupted: it would
        never get there), or ``timeout`` seconds of this app's clock have passed; returns the
        run as it is then.

        Only reads. It wakes when the store changes, and looks at least every ``interval``
        seconds whether the run's owner is still alive.
        """
        run_id = await self.resolve(run_id)
        clock = self.clock or SystemClock()
        deadline = None if timeout is None else clock.now() + timeout
        token = await self.store.change()
        while True:
            now = clock.now()
            wait = interval if deadline is None else max(0.0, min(interval, deadline - now))
            try:
                row = await self.store.get_run(run_id)
            except StoreError:  # the store restarting, say: look again soon (until the deadline)
                if deadline is not None and now >= deadline:
                    raise
                await clock.sleep(min(1.0, max(wait, 0.05)))
                continue
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r} in {self.store.location}")
            row = _mark(row, now)
            if row.status in until or row.interrupted or (deadline is not None and now >= deadline):
                return row
            try:
                token = await self.store.wait_for_change(token, wait, clock)
            except StoreError:
                await clock.sleep(min(1.0, max(wait, 0.05)))


def _mark(row: RunRow, now: float) -> RunRow:
    """``row``, marked interrupted if it is in flight and whoever ran it is gone (and with every
    known secret masked: what is read here is shown)."""
    gone = row.status in (rules.RUNNING, rules.REPLANNING) and claimable(row.owner, row.lease_expires, now)
    if redacting():
        row = replace(row, goal=redact(row.goal), reason=redact(row.reason), output=redact_data(row.output),
                      request=None if row.request is None else redact(row.request))
    return replace(row, interrupted=True) if gone else row
