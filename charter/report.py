"""What happened in a run, for people and machines: built from its log alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .events import (
    Event,
    StepFailed,
    StepInterrupted,
    StepStarted,
    StepSucceeded,
)
from .rules import RunState, shown_status


@dataclass(frozen=True)
class Attempt:
    """One try of a step: when, how long, and how it ended."""

    number: int
    started_at: float
    ended_at: float | None
    outcome: str  # running | succeeded | failed | interrupted
    error: dict[str, Any] | None = None
    retry_at: float | None = None

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "started_at": self.started_at, "ended_at": self.ended_at,
                "duration": self.duration, "outcome": self.outcome, "error": self.error,
                "retry_at": self.retry_at}


@dataclass(frozen=True)
class StepReport:
    id: str
    title: str
    why: str
    tool: str
    status: str
    item: int | None = None
    args: dict[str, Any] | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    reason: str = ""
    reused_from: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    items: list[StepReport] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "title": self.title, "why": self.why, "tool": self.tool,
            "status": self.status, "item": self.item, "args": self.args, "output": self.output,
            "error": self.error, "reason": self.reason, "reused_from": self.reused_from,
            "started_at": self.started_at, "finished_at": self.finished_at, "duration": self.duration,
            "attempts": [a.to_json() for a in self.attempts],
        }
        if self.items:
            out["items"] = [i.to_json() for i in self.items]
        return out


@dataclass(frozen=True)
class RunReport:
    """A run's status, output and timeline. Returned by every call that runs something."""

    id: str
    goal: str
    status: str
    reason: str
    output: Any
    assumptions: list[str]
    inputs: dict[str, Any]
    created_at: float
    updated_at: float
    finished_at: float | None
    parent_run: str | None
    steps: list[StepReport]
    events: list[Event] = field(default_factory=list, repr=False)
    request: str | None = None
    plan_version: int = 1
    tokens: int = 0
    cost: float = 0.0
    budget: dict[str, float] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def step(self, step_id: str) -> StepReport:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def failed_steps(self) -> list[StepReport]:
        return [s for s in self.steps if s.status == "failed"]

    def to_json(self, *, events: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "goal": self.goal, "status": self.status, "reason": self.reason,
            "output": self.output, "assumptions": self.assumptions, "inputs": self.inputs,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "finished_at": self.finished_at, "parent_run": self.parent_run,
            "request": self.request, "plan_version": self.plan_version,
            "tokens": self.tokens, "cost": self.cost, "budget": self.budget,
            "steps": [s.to_json() for s in self.steps],
        }
        if events:
            out["events"] = [{"type": e.type, "at": e.at, **e.to_data()} for e in self.events]
        return out


def build_report(state: RunState, events: list[Event]) -> RunReport:
    """Combine the state derived from ``events`` with the attempt history they hold."""
    history: dict[tuple[str, int | None], list[Attempt]] = {}
    open_: dict[tuple[str, int | None], StepStarted] = {}
    for ev in events:
        if isinstance(ev, StepStarted):
            open_[(ev.step, ev.item)] = ev
        elif isinstance(ev, StepSucceeded | StepFailed | StepInterrupted):
            key = (ev.step, ev.item)
            started = open_.pop(key, None)
            if started is None:
                continue  # a decision of the rules, not the end of an attempt
            if isinstance(ev, StepSucceeded):
                attempt = Attempt(started.attempt, started.at, ev.at, "succeeded")
            elif isinstance(ev, StepFailed):
                attempt = Attempt(started.attempt, started.at, ev.at, "failed", ev.error, ev.retry_at)
            else:
                attempt = Attempt(started.attempt, started.at, ev.at, "interrupted", {"message": ev.reason})
            history.setdefault(key, []).append(attempt)
    for key, started in open_.items():
        history.setdefault(key, []).append(Attempt(started.attempt, started.at, None, "running"))

    steps = []
    for step in state.plan.steps:
        st = state.steps[step.id]
        unit = st.units.get(None)
        items = []
        if step.for_each is not None:
            for i, u in sorted((k, v) for k, v in st.units.items() if k is not None):
                items.append(StepReport(
                    id=step.id, title=step.title, why=step.why, tool=step.tool, status=u.status,
                    item=i, args=u.args, output=u.output, error=u.error,
                    attempts=history.get((step.id, i), []), started_at=u.started_at,
                    finished_at=u.finished_at,
                ))
        steps.append(StepReport(
            id=step.id, title=step.title, why=step.why, tool=step.tool,
            status=shown_status(st),
            args=unit.args if unit else (dict(step.args) if step.for_each is None else None),
            output=st.output if st.status == "succeeded" else None,
            error=st.error or (unit.error if unit else None), reason=st.reason,
            reused_from=st.reused_from, attempts=history.get((step.id, None), []), items=items,
            started_at=st.started_at, finished_at=st.finished_at,
        ))
    return RunReport(
        id=state.run_id, goal=state.plan.goal, status=state.status, reason=state.reason,
        output=state.output, assumptions=list(state.plan.assumptions), inputs=state.inputs,
        created_at=state.created_at, updated_at=state.updated_at, finished_at=state.finished_at,
        parent_run=state.parent_run, steps=steps, events=events, request=state.request,
        plan_version=state.plan_version, tokens=state.tokens, cost=state.cost, budget=dict(state.budget),
    )

