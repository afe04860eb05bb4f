"""What happened in a run, for people and machines: built from its log alone."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..events import (
    Event,
    ModelCalled,
    PlanApproved,
    PlanRejected,
    PlanRevised,
    RunCreated,
    StepFailed,
    StepInterrupted,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from ..plan.diff import plan_diff
from ..store.payloads import PRUNED
from .rules import RunState, shown_status

PREVIEW = 200  # characters of a prompt or an answer kept in a report: enough to recognise it


def pruned_note(value: Any) -> str | None:
    """A value ``charter prune`` dropped, said in words (``(pruned: 5,449 bytes)``); ``None`` for any other."""
    if isinstance(value, dict) and set(value) == {PRUNED, "size"}:
        return f"(pruned: {value['size']:,} bytes)"
    return None


def _text(value: Any) -> str:
    """A prompt's or an answer's text as shown."""
    return pruned_note(value) or str(value or "")


def preview(text: str, limit: int = PREVIEW) -> str:
    """``text`` on one line, cut at ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True)
class ModelCall:
    """One model call of a run: who asked (a step's attempt, or the planner: ``step`` empty),
    the model, tokens, cost (None: no known price), latency, and the start of the prompt and answer.
    The whole request and answer are in the run's log (``charter show --events``)."""

    at: float
    step: str
    item: int | None
    attempt: int
    model: str
    input_tokens: int
    output_tokens: int
    cost: float | None
    latency: float | None
    prompt: str
    answer: str

    @classmethod
    def from_event(cls, ev: ModelCalled) -> ModelCall:
        messages = ev.request.get("messages") or []
        last = messages[-1] if messages and isinstance(messages, list) else {}
        prompt = _text(last.get("content") if isinstance(last, dict) and not pruned_note(last) else last)
        if isinstance(last, dict) and last.get("role") == "tool":
            prompt = "tool result: " + prompt
        prompt = pruned_note(ev.request) or prompt
        answer = pruned_note(ev.response) or _text(ev.response.get("text"))
        calls = ev.response.get("tool_calls") or []
        if calls:
            asked = ", ".join(f"{c.get('name')}({json.dumps(c.get('arguments'), default=str)})" for c in calls)
            answer = (answer + " · " if answer else "") + "calls " + asked
        return cls(at=ev.at, step=ev.step, item=ev.item, attempt=ev.attempt, model=ev.model,
                   input_tokens=ev.input_tokens, output_tokens=ev.output_tokens, cost=ev.cost,
                   latency=ev.latency, prompt=preview(prompt), answer=preview(answer))

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "step": self.step or None, "item": self.item, "attempt": self.attempt,
                "model": self.model, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cost": self.cost, "latency": self.latency, "prompt": self.prompt, "answer": self.answer}


@dataclass(frozen=True)
class Attempt:
    """One try of a step: when, how long, how it ended, and the model calls it made."""

    number: int
    started_at: float
    ended_at: float | None
    outcome: str  # running | succeeded | failed | interrupted
    error: dict[str, Any] | None = None
    retry_at: float | None = None
    model_calls: list[ModelCall] = field(default_factory=list)
    plan_version: int = 1  # the version of the plan the attempt ran under
    key: str = ""  # its idempotency key

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "started_at": self.started_at, "ended_at": self.ended_at,
                "duration": self.duration, "outcome": self.outcome, "error": self.error,
                "retry_at": self.retry_at, "plan_version": self.plan_version, "key": self.key}


@dataclass(frozen=True)
class PlanVersion:
    """One version of a run's plan: who made it and why, who approved it, and how its steps ended."""

    number: int
    at: float
    by: str  # who made it: the planner, a person editing it in review, or "" (a plan file or code)
    reason: str
    diff: str  # from the version before; "" for the first
    approved_by: str | None = None
    approved_at: float | None = None
    approval_note: str = ""
    rejected_by: str | None = None
    rejected_reason: str = ""
    # steps that failed or were skipped under this version: {"step", "status", "detail"}
    ended: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "at": self.at, "by": self.by, "reason": self.reason, "diff": self.diff,
                "approved_by": self.approved_by, "approved_at": self.approved_at, "approval_note": self.approval_note,
                "rejected_by": self.rejected_by, "rejected_reason": self.rejected_reason, "ended": self.ended}


def plan_versions(events: list[Event]) -> list[PlanVersion]:
    """Every version of the plan, from the log."""
    versions: list[dict[str, Any]] = []
    plan: dict[str, Any] = {}
    for ev in events:
        if isinstance(ev, RunCreated):
            plan = ev.plan
            versions.append({"number": 1, "at": ev.at, "by": "planner" if ev.request else "", "reason": "",
                             "diff": "", "ended": {}})
        elif not versions:
            continue
        elif isinstance(ev, PlanRevised):
            diff = ev.diff or plan_diff(plan, ev.plan, versions[-1]["number"])
            plan = ev.plan
            versions.append({"number": ev.version, "at": ev.at, "by": ev.by, "reason": ev.reason,
                             "diff": diff, "ended": {}})
        elif isinstance(ev, PlanApproved):
            versions[-1].update(approved_by=ev.by, approved_at=ev.at, approval_note=ev.note)
        elif isinstance(ev, PlanRejected):
            versions[-1].update(rejected_by=ev.by, rejected_reason=ev.reason)
        elif isinstance(ev, StepFailed) and ev.retry_at is None and ev.item is None:
            message = (ev.error or {}).get("message", "")
            versions[-1]["ended"][ev.step] = {"step": ev.step, "status": "failed", "detail": message}
        elif isinstance(ev, StepSkipped):
            versions[-1]["ended"][ev.step] = {"step": ev.step, "status": "skipped", "detail": ev.reason}
        elif isinstance(ev, StepSucceeded) and ev.item is None:
            versions[-1]["ended"].pop(ev.step, None)  # retried with success after all
    return [PlanVersion(**{**v, "ended": list(v["ended"].values())}) for v in versions]


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
    kind: str = "tool"  # tool | llm | agent | approval

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "title": self.title, "why": self.why, "kind": self.kind, "tool": self.tool,
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
    cost: float | None = 0.0  # dollars; None when a model call has no known price (see cost_known)
    budget: dict[str, float] = field(default_factory=dict)
    cost_known: float = 0.0  # dollars of the calls whose price is known
    unpriced_models: list[str] = field(default_factory=list)  # models called that have no known price
    model_calls: list[ModelCall] = field(default_factory=list)  # every model call, the planner's too, in order
    versions: list[PlanVersion] = field(default_factory=list)  # every version of the plan, the first first
    #: ``status`` is ``running`` (or ``replanning``) but the process running it is gone:
    #: it stopped in the middle and waits for ``charter resume``
    interrupted: bool = False

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
            "tokens": self.tokens, "cost": self.cost, "cost_known": self.cost_known,
            "unpriced_models": self.unpriced_models, "budget": self.budget,
            "interrupted": self.interrupted,
            "steps": [s.to_json() for s in self.steps],
            "model_calls": [c.to_json() for c in self.model_calls],
            "versions": [v.to_json() for v in self.versions],
        }
        if events:
            out["events"] = [{"type": e.type, "at": e.at, **e.to_data()} for e in self.events]
        return out


def build_report(state: RunState, events: list[Event]) -> RunReport:
    """Combine the state derived from ``events`` with the attempt history they hold."""
    calls = [ModelCall.from_event(ev) for ev in events if isinstance(ev, ModelCalled)]
    by_attempt: dict[tuple[str, int | None, int], list[ModelCall]] = {}
    for c in calls:
        by_attempt.setdefault((c.step, c.item, c.attempt), []).append(c)

    def made(started: StepStarted) -> list[ModelCall]:
        return by_attempt.get((started.step, started.item, started.attempt), [])

    history: dict[tuple[str, int | None], list[Attempt]] = {}
    open_: dict[tuple[str, int | None], tuple[StepStarted, int]] = {}  # with the plan version it runs under
    version = 1

    def attempt(opened: tuple[StepStarted, int], ended_at: float | None, outcome: str,
                error: dict[str, Any] | None = None, retry_at: float | None = None) -> Attempt:
        started, under = opened
        return Attempt(started.attempt, started.at, ended_at, outcome, error, retry_at, model_calls=made(started),
                       plan_version=under, key=started.key)

    for ev in events:
        if isinstance(ev, PlanRevised):
            version = ev.version
        elif isinstance(ev, StepStarted):
            open_[(ev.step, ev.item)] = (ev, version)
        elif isinstance(ev, StepSucceeded | StepFailed | StepInterrupted):
            key = (ev.step, ev.item)
            opened = open_.pop(key, None)
            if opened is None:
                continue  # a decision of the rules, not the end of an attempt
            if isinstance(ev, StepSucceeded):
                ended = attempt(opened, ev.at, "succeeded")
            elif isinstance(ev, StepFailed):
                ended = attempt(opened, ev.at, "failed", ev.error, ev.retry_at)
            else:
                ended = attempt(opened, ev.at, "interrupted", {"message": ev.reason})
            history.setdefault(key, []).append(ended)
    for key, opened in open_.items():
        history.setdefault(key, []).append(attempt(opened, None, "running"))

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
            started_at=st.started_at, finished_at=st.finished_at, kind=step.kind,
        ))
    return RunReport(
        id=state.run_id, goal=state.plan.goal, status=state.status, reason=state.reason,
        output=state.output, assumptions=list(state.plan.assumptions), inputs=state.inputs,
        created_at=state.created_at, updated_at=state.updated_at, finished_at=state.finished_at,
        parent_run=state.parent_run, steps=steps, events=events, request=state.request,
        plan_version=state.plan_version, tokens=state.tokens, budget=dict(state.budget),
        **_costs(calls), model_calls=calls, versions=plan_versions(events),
    )


def _costs(calls: list[ModelCall]) -> dict[str, Any]:
    """A run's cost: unknown (None) as soon as one call has no known price, never a made-up total;
    the known part and the models without a price are kept beside it."""
    known = sum(c.cost for c in calls if c.cost is not None)
    unpriced = sorted({c.model for c in calls if c.cost is None})
    return {"cost": None if unpriced else known, "cost_known": known, "unpriced_models": unpriced}

