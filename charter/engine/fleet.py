"""Runs any worker may run: how one write to a fleet run is decided.

A run submitted to the fleet (its owner is ``FLEET``) has no host. Whoever
writes to it (a worker with an outcome or a claim, a timer that came due, a
person's control request through the facade) does the same, in one
transaction: lock the run's row, catch up on the events others wrote since it
last looked, add its own, ask the rules what follows, start what it may start
itself, and leave the rest as the run's queue (:class:`~charter.store.records.Queue`):
the ready units any worker may take, the units running and on which worker,
and when to look at the run again. Every decision is made under the run's
lock, so the rules decide what becomes ready exactly once, however many
workers finish steps of the run at the same moment.

A worker's claim on a unit lasts while its heartbeat is fresh. The writer that
finds a unit whose worker went silent records it as interrupted; it runs again
(same idempotency key), and the silent worker's late outcome is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RunStateError
from ..events import EffectRecorded, Event, StepFailed, StepInterrupted, StepStarted, StepSucceeded
from ..store.base import Store
from ..store.records import FLEET, Queue, RequestRow, RunLock, RunWrite, Task, ToolSlot
from ..tools import Registry, Tool
from ..workspace.secrets import masked
from . import control, rules
from .attempts import Hosted, Outcome
from .rules import RUNNING, RunState, Unit

log = logging.getLogger("charter.fleet")

#: the ``step`` of a task that is no unit: replanning the rest of a run, run by one worker
REPLAN = "*replan"


@dataclass
class Inputs:
    """What one write brings to a run besides catching up."""

    outcomes: Sequence[Outcome] = ()
    records: Sequence[Event] = ()  # model and tool calls, effects, from attempts in flight here
    requests: bool = False  # apply the control requests stored for the run
    extra: Sequence[Event] = ()  # events decided by the caller (a control request applied here)
    #: the units this writer runs now, if it is a worker: a unit the store says it runs and it
    #: does not (a commit whose outcome was unknown started it, say) is run again
    here: Collection[tuple[str, int | None]] | None = None
    #: whether units of workers that look silent are taken over (a writer that was itself cut
    #: off from the store lately cannot tell a silent worker from its own outage)
    take_over: bool = True
    #: the events of the run committed since this writer last read it (caught up under the lock)
    landed: Sequence[Event] = ()
    replanned: bool = False  # this writer's replanning ended (whatever came of it)
    revised: Sequence[Event] = ()  # ... and the events it led to (checked by the caller)


@dataclass
class Written:
    """What a write did: the events, the units this writer must now run, what was refused."""

    events: list[Event] = field(default_factory=list)
    started: list[tuple[Unit, StepStarted]] = field(default_factory=list)
    replan: bool = False  # this writer took the run's replanning
    refused: list[str] = field(default_factory=list)  # late outcomes and records, said why
    kept: list[Event] = field(default_factory=list)  # the records written
    stops: bool = False  # the run stopped (paused, cancelled, ended): interrupt what runs here


async def catch_up(store: Store, h: Hosted | None, run_id: str, last_seq: int,
                   tail: list[Event] | None = None) -> RunState:
    """The run's state as of ``last_seq``: a cached one brought forward, or a fresh replay (into
    ``tail`` go the events read, for a writer that must not write one of them again)."""
    state = h.state if h is not None else None
    if state is None or state.last_seq > last_seq:
        events = await store.events(run_id)
        state = rules.replay(run_id, events)
    else:
        events = await store.events(run_id, after=state.last_seq) if state.last_seq < last_seq else []
        for ev in events:
            rules.apply(state, ev)
        state.last_seq = last_seq
    if tail is not None:
        tail.extend(events)
    return state


def task_for(state: RunState, unit: Unit, now: float, owner: str | None = None, attempt: int = 0) -> Task:
    step = state.plan.by_id[unit.step]
    return Task(step=unit.step, item=unit.item, due_at=now, owner=owner, attempt=attempt,
                tool=step.tool or "" if step.kind == "tool" else "")


async def apply_request(store: Store, run_id: str, request: control.Request,
                        now: float) -> tuple[RunState, list[Event]]:
    """Carry out a person's control request on a fleet run, at once, as one write: workers
    running its units learn of it from the store (a pause or a cancel interrupts them).
    Returns the run as the write left it and the events it wrote (for watchers, once committed)."""
    async with store.transaction():
        lock = await store.lock_run(run_id, now)
        if lock is None:
            raise RunStateError(f"run {run_id} is not a fleet run")
        state = await catch_up(store, None, run_id, lock.last_seq)
        events = control.events_for(state, request, now)  # RunStateError: it cannot apply
        state.policies = rules.retry_policies(state.plan, Registry())
        done = await FleetWriter(store, "control").write(Hosted(state, Registry()), lock, now, Inputs(extra=events))
    return state, done.events


def first_queue(state: RunState, now: float) -> tuple[list[Event], Queue]:
    """A run submitted to the fleet: what follows from its first events, and its first queue
    (the ready units for any worker; a timer due now if something needs a writer's look, such
    as an approval to ask for)."""
    decision = rules.advance(state, now)
    tasks = [task_for(state, u, now) for u in decision.ready if state.plan.by_id[u.step].kind != "approval"]
    if len(tasks) < len(decision.ready) or state.status == rules.REPLANNING:
        tasks.append(Task("", None, now))
    elif decision.wake_at is not None:
        tasks.append(Task("", None, decision.wake_at))
    return decision.events, Queue(tasks)


class FleetWriter:
    """Decides and writes one transaction of a fleet run (see the module's docstring).

    ``can_start(h, unit)`` says whether this writer runs ``unit`` itself (and counts it as taken:
    a writer may write many runs in one transaction); a writer with no place for work (the
    facade applying a request) starts nothing and leaves it queued.
    """

    def __init__(self, store: Store, owner: str,
                 can_start: Callable[[Hosted, Unit], bool] | None = None,
                 can_replan: Callable[[Hosted], bool] = lambda h: False) -> None:
        self.store = store
        self.owner = owner
        self.can_start = can_start
        self.can_replan = can_replan
        self._slots: dict[str, ToolSlot] = {}  # the limited tools locked for the write under way

    async def write(self, h: Hosted, lock: RunLock, now: float, inputs: Inputs) -> Written:
        """Inside the transaction that holds ``lock``: decide and write. ``h.state`` is caught up."""
        state = h.state
        done = Written()

        def add(ev: Event) -> None:
            rules.apply(state, ev)
            done.events.append(ev)

        tasks = {t.key: t for t in lock.tasks}
        for t in lock.tasks:  # the units of workers gone silent run again
            if not t.step or t.owner is None or (t.step == REPLAN and t.owner == self.owner):
                continue
            if t.owner == self.owner:
                if inputs.here is None or t.key in inputs.here:
                    continue
                reason = "its worker lost track of it (a commit whose outcome was unknown)"
            elif t.live or not inputs.take_over:
                continue
            else:
                reason = f"its worker ({t.owner}) stopped answering"
            u = _unit(state, t.step, t.item)
            if u is not None and u.status == RUNNING and u.attempt == t.attempt:
                log.warning("run %s: %s runs again: %s", state.run_id, _name(u), reason)
                add(StepInterrupted(at=now, step=u.step, item=u.item, attempt=u.attempt, reason=reason))
            del tasks[t.key]
        landed = inputs.landed
        for rec in inputs.records:
            if masked(rec) in landed:  # written by a commit whose outcome this writer did not learn
                done.kept.append(rec)
            elif isinstance(rec, EffectRecorded) or self._holds(state, tasks, rec.step, rec.item, rec.attempt):  # type: ignore[attr-defined]
                add(masked(rec))
                done.kept.append(rec)
        # outcomes this writer wrote in a commit whose outcome it did not learn (only the worker
        # running an attempt records its success or failure; others record it interrupted)
        ended = {(ev.step, ev.item, ev.attempt) for ev in landed if isinstance(ev, StepSucceeded | StepFailed)}
        for o in inputs.outcomes:
            u = o.unit
            if (u.step, u.item, o.attempt) in ended:
                continue
            if not self._holds(state, tasks, u.step, u.item, o.attempt):
                why = (f"run {state.run_id}: the outcome of {_name(u)} attempt {o.attempt} came too late "
                       "(another worker took the unit over); not written")
                log.warning(why)
                done.refused.append(why)
                continue
            cur = _unit(state, u.step, u.item)
            assert cur is not None
            tasks.pop((u.step, u.item), None)
            ev: Event
            if o.interrupted:
                ev = StepInterrupted(at=now, step=u.step, item=u.item, attempt=o.attempt,
                                     reason=state.reason or "interrupted")
            elif o.error is None:
                ev = rules.success(cur, o.output, now)
            else:
                info, delay = rules.classify(o.error, state.policy(u.step))
                ev = rules.failure(state, cur, info, now, delay)
            add(masked(ev))
        for ev in inputs.extra:
            add(ev)
        answered: list[int] = []
        if inputs.requests:
            for row in await self.store.pending_requests([state.run_id]):
                answered.append(row.id)
                for ev in _request_events(state, row, now):
                    add(ev)
        if inputs.replanned:
            tasks.pop((REPLAN, None), None)
        if inputs.revised:
            for ev in inputs.revised:
                add(ev)
            state.policies = rules.retry_policies(state.plan, h.registry)

        self._slots = {}
        if self.can_start is not None:  # a writer that may start units: the fleet's tool limits hold
            tools = {s.tool for s in state.remaining_steps() if s.kind == "tool" and limited(h.registry.get(s.tool))}
            if tools:
                self._slots = await self.store.lock_tools(sorted(tools), now)
        queued, wake = self._advance(h, now, done, add)
        if state.status == rules.REPLANNING:
            held = tasks.get((REPLAN, None))
            if held is not None and held.owner is None:  # waiting for a worker that can replan
                del tasks[(REPLAN, None)]
                held = None
            if held is None and self.can_replan(h):
                done.replan = True
                tasks[(REPLAN, None)] = Task(REPLAN, None, now, owner=self.owner)
            elif held is None:
                queued.append(Task(REPLAN, None, now))
        else:
            tasks.pop((REPLAN, None), None)
        done.stops = state.status not in (RUNNING, rules.AWAITING, rules.REPLANNING)
        keep = [t for t in tasks.values() if t.step == REPLAN or _running(state, t)]
        for u, ev in done.started:
            keep.append(task_for(state, u, now, self.owner, ev.attempt))
        if wake is not None:
            keep.append(Task("", None, wake))
        write = RunWrite(state.run_id, state.last_seq, done.events, rules.run_record(state),
                         queue=Queue([*keep, *queued], run_no=lock.no, had=lock.tasks))
        await self.store.save_tools(self._slots)
        await self.store.append([write], FLEET, answered)
        state.last_seq = write.last_seq
        return done

    def _holds(self, state: RunState, tasks: dict[tuple[str, int | None], Task],
               step: str, item: int | None, attempt: int) -> bool:
        """Whether this writer still holds the unit at that attempt (its claim did not lapse)."""
        t = tasks.get((step, item))
        u = _unit(state, step, item)
        return (t is not None and t.owner == self.owner and t.attempt == attempt
                and u is not None and u.status == RUNNING and u.attempt == attempt)

    def _advance(self, h: Hosted, now: float, done: Written,
                 add: Callable[[Event], None]) -> tuple[list[Task], float | None]:
        """Ask the rules what follows; start what this writer may; queue the rest."""
        state = h.state
        while True:
            decision = rules.advance(state, now)
            done.events.extend(decision.events)
            queued: list[Task] = []
            again = False
            for unit in decision.ready:
                step = state.plan.by_id[unit.step]
                if step.concurrency is not None and _running_of(state, unit.step) >= step.concurrency:
                    continue  # looked at again when one of them ends
                if step.kind != "approval":
                    tool = h.registry.get(step.tool) if step.kind == "tool" else None
                    later = self._limit(tool, now)
                    if later is not None or self.can_start is None or not self.can_start(h, unit):
                        queued.append(task_for(state, unit, later or now))
                        continue
                    self._take(tool, now)
                ev = rules.start(state, unit, now, self.owner)
                add(ev)
                if isinstance(ev, StepStarted):
                    done.started.append((unit, ev))
                else:
                    again = True  # an approval asked, or arguments that did not resolve
            if not again:
                return queued, decision.wake_at


    def _limit(self, tool: Tool | None, now: float) -> float | None:
        """``None`` if the fleet's limits let a call of ``tool`` start now, else when to look again."""
        slot = self._slots.get(tool.name) if tool is not None else None
        if tool is None or slot is None:
            return None
        if tool.concurrency is not None and slot.running >= tool.concurrency:
            return now + BLOCKED_POLL  # a unit of another run may end: nothing tells this run
        if tool.rate is not None and slot.next_at > now:
            return slot.next_at
        return None

    def _take(self, tool: Tool | None, now: float) -> None:
        slot = self._slots.get(tool.name) if tool is not None else None
        if tool is None or slot is None:
            return
        slot.running += 1
        if tool.rate is not None:
            slot.next_at = max(now, slot.next_at) + 1.0 / tool.rate
            slot.changed = True


#: how soon a unit held back by a tool's fleet-wide concurrency is looked at again
BLOCKED_POLL = 0.2


def limited(tool: Tool | None) -> bool:
    """Whether ``tool`` has limits that hold across the fleet (its concurrency, its rate)."""
    return tool is not None and (tool.concurrency is not None or tool.rate is not None)


def _request_events(state: RunState, row: RequestRow, now: float) -> list[Event]:
    request = control.from_row(row)
    if request is None:
        return []
    try:
        return control.events_for(state, request, now)
    except Exception as exc:  # done already, or no longer possible: nothing to do
        log.info("run %s: request %s not applied: %s", state.run_id, row.kind, exc)
        return []


def _unit(state: RunState, step: str, item: int | None) -> Unit | None:
    st = state.steps.get(step)
    return None if st is None else st.units.get(item)


def _running(state: RunState, t: Task) -> bool:
    u = _unit(state, t.step, t.item)
    return u is not None and u.status == RUNNING and t.owner is not None


def _running_of(state: RunState, step: str) -> int:
    return sum(1 for u in state.steps[step].units.values() if u.status == RUNNING)


def _name(u: Unit) -> str:
    return u.step if u.item is None else f"{u.step}[{u.item}]"


def registry_of(sources: Sequence[str], cache: dict[tuple[str, ...], Registry], load: Callable[..., Any]) -> Registry:
    key = tuple(sources)
    if key not in cache:
        cache[key] = load(list(sources)) if sources else Registry()
    return cache[key]


__all__ = ["REPLAN", "FleetWriter", "Inputs", "Written", "apply_request", "catch_up", "first_queue", "task_for"]
