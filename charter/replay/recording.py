"""A run's log read for a replay: its attempts, what each was answered, the ledger, and people's decisions.

The log is folded with today's rules (as ``charter show`` does), so each
attempt is known by where it ran: its step, item, plan version and number. An
attempt cut short (a crash, a pause) is not a try of its own in a replay,
which is never interrupted: attempts are numbered without them, and the model
answers and tool results an interrupted attempt got count as its successor's,
as the journal reuses them. The same fold reads the replay's own log, so both
sides are compared by the same keys.

Imports events, errors and the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engine import rules
from ..errors import RunStateError
from ..events import (
    ApprovalRequested,
    BudgetChanged,
    EffectRecorded,
    Event,
    ModelCalled,
    PlanApproved,
    PlanRevised,
    ReplanRequested,
    RunCancelled,
    RunCreated,
    RunFailed,
    RunResumed,
    StepFailed,
    StepInterrupted,
    StepSkipped,
    StepsReset,
    StepStarted,
    StepSucceeded,
    ToolCalled,
)

#: (step, item, plan version, attempt counted without interruptions)
AttemptKey = tuple[str, int | None, int, int]


def pruned(value: Any) -> bool:
    """Whether a stored value was pruned from the store (only its hash and size are left)."""
    return isinstance(value, dict) and "$pruned" in value


@dataclass
class Attempt:
    """One try of a unit, as a log holds it."""

    key: AttemptKey
    started: StepStarted | ApprovalRequested
    index: int  # where it started in the log
    outcome: StepSucceeded | StepFailed | None = None
    ended: int | None = None  # where its outcome is in the log
    models: dict[int, ModelCalled] = field(default_factory=dict)  # by the call's index in the attempt
    tools: dict[int, ToolCalled] = field(default_factory=dict)

    @property
    def step(self) -> str:
        return self.key[0]

    @property
    def item(self) -> int | None:
        return self.key[1]

    @property
    def number(self) -> int:
        """The attempt's number as its log says it."""
        return self.started.attempt


@dataclass
class Recording:
    """What a log says happened, keyed for a replay."""

    run_id: str
    events: list[Event]
    state: rules.RunState  # the run as the whole log leaves it
    attempts: dict[AttemptKey, Attempt] = field(default_factory=dict)  # in the order they started
    effects: dict[str, Any] = field(default_factory=dict)  # the ledger: idempotency key -> result
    #: the tools the log shows as writes (an effect recorded): tool name -> its first effect
    written: dict[str, EffectRecorded] = field(default_factory=dict)
    #: the planner's model calls: [0] the first planning (if a planner made the plan), [n] the n-th replanning
    planning: dict[int, list[ModelCalled]] = field(default_factory=dict)
    planner_gave_up: dict[int, str] = field(default_factory=dict)  # replanning -> why the planner gave up
    revisions: list[PlanRevised] = field(default_factory=list)  # the planner's revised plans, in order
    plans: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # every version of the plan
    skipped: dict[str, str] = field(default_factory=dict)  # step -> why
    first_done: dict[str, int] = field(default_factory=dict)  # step -> where it first succeeded in the log
    first_started: dict[str, int] = field(default_factory=dict)  # step -> where a unit of it first started
    version_at: dict[str, int] = field(default_factory=dict)  # step -> the plan version it first started under
    prefix: int = 0  # how many events record the run up to its approval (the plan, planning, review, reuse)
    #: people's decisions after the approval, in order
    decisions: list[Event] = field(default_factory=list)

    @classmethod
    def read(cls, run_id: str, events: list[Event]) -> Recording:
        first = events[0]
        if not isinstance(first, RunCreated):
            raise RunStateError(f"run {run_id}: its log does not start with RunCreated")
        state = rules.RunState.from_created(run_id, first)
        rec = cls(run_id, events, state)
        rec.plans.append((1, first.plan))
        _Fold(rec).run()
        return rec

    @property
    def approved(self) -> bool:
        return self.prefix > 0

    def attempt_of(self, step: str, item: int | None, version: int, number: int) -> Attempt | None:
        return self.attempts.get((step, item, version, number))


class _Fold:
    """Folds a log into a :class:`Recording`, event by event, with today's rules."""

    def __init__(self, rec: Recording) -> None:
        self.rec = rec
        self.open: dict[tuple[str, int | None], Attempt] = {}
        # what interrupted attempts got, which their successor reuses: (models, tools)
        self.carried: dict[tuple[str, int | None], tuple[dict[int, ModelCalled], dict[int, ToolCalled]]] = {}
        self.cut: dict[int, tuple[rules.Unit, int]] = {}  # id(unit) -> (unit, attempts cut short)
        self.replans = 0

    def run(self) -> None:
        rec, state = self.rec, self.rec.state
        for i, ev in enumerate(rec.events[1:], 1):
            if rec.prefix == 0 and isinstance(ev, PlanApproved):
                rec.prefix = i + 1
            elif rec.prefix == i and isinstance(ev, StepSucceeded) and ev.reused_from is not None:
                rec.prefix = i + 1  # an output reused by a rerun, recorded with the approval
            rules.apply(state, ev)
            self._note(i, ev)
        state.last_seq = len(rec.events)

    def _note(self, i: int, ev: Event) -> None:
        rec, state = self.rec, self.rec.state
        if isinstance(ev, StepStarted | ApprovalRequested):
            unit = state.steps[ev.step].units[ev.item]
            cut = self.cut.get(id(unit), (unit, 0))[1]
            key = (ev.step, ev.item, state.plan_version, ev.attempt - cut)
            models, tools = self.carried.pop((ev.step, ev.item), ({}, {}))
            rec.attempts[key] = self.open[(ev.step, ev.item)] = Attempt(key, ev, i, models=dict(models),
                                                                        tools=dict(tools))
            rec.first_started.setdefault(ev.step, i)
            rec.version_at.setdefault(ev.step, state.plan_version)
        elif isinstance(ev, ModelCalled):
            if not ev.step:
                rec.planning.setdefault(self.replans, []).append(ev)
            elif (att := self.open.get((ev.step, ev.item))) is not None and att.number == ev.attempt:
                att.models[ev.index] = ev
        elif isinstance(ev, ToolCalled):
            if (att := self.open.get((ev.step, ev.item))) is not None and att.number == ev.attempt:
                att.tools[ev.index] = ev
        elif isinstance(ev, StepInterrupted):
            cut_short = self.open.pop((ev.step, ev.item), None)
            if cut_short is not None:
                del rec.attempts[cut_short.key]
                self.carried[(ev.step, ev.item)] = (cut_short.models, cut_short.tools)
                unit = state.steps[ev.step].units[ev.item]
                self.cut[id(unit)] = (unit, self.cut.get(id(unit), (unit, 0))[1] + 1)
        elif isinstance(ev, StepSucceeded | StepFailed):
            self._outcome(i, ev)
        elif isinstance(ev, EffectRecorded):
            rec.effects[ev.key] = ev.result
            rec.written.setdefault(ev.tool, ev)
        elif isinstance(ev, ReplanRequested):
            self.replans += 1
        elif isinstance(ev, PlanRevised):
            rec.plans.append((ev.version, ev.plan))
            if ev.by == "planner":
                rec.revisions.append(ev)
        elif isinstance(ev, RunFailed) and self.replans and "; no revised plan: " in ev.reason:
            rec.planner_gave_up[self.replans] = ev.reason.split("; no revised plan: ", 1)[1]
        elif isinstance(ev, StepSkipped):
            rec.skipped[ev.step] = ev.reason
        elif isinstance(ev, StepsReset | RunResumed | RunCancelled | BudgetChanged) and rec.prefix:
            rec.decisions.append(ev)

    def _outcome(self, i: int, ev: StepSucceeded | StepFailed) -> None:
        rec = self.rec
        if isinstance(ev, StepSucceeded) and ev.item is None:
            rec.first_done.setdefault(ev.step, i)
        att = self.open.get((ev.step, ev.item))
        if att is None or att.number != ev.attempt or ev.attempt == 0:
            return  # a decision of the rules (a gathered fan-out, a step that could not start), not an attempt's end
        del self.open[(ev.step, ev.item)]
        att.outcome, att.ended = ev, i
        self.carried.pop((ev.step, ev.item), None)
        if isinstance(att.started, ApprovalRequested) and rec.prefix:
            rec.decisions.append(ev)  # a person's decision (or the approval's deadline passing)
