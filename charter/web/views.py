"""What the page and the API show of runs: plain JSON built from the facade's reports and rows.

Every value a person may have to read whole (a step's output, a prompt) is cut at
:data:`LIMIT` characters of JSON, with the address of the API call that gives it whole.
Nothing here redacts: the server passes every response through the workspace's redaction
(:mod:`charter.web.safety`) on its way out.

It may import the facade, the report types and the events; never the engine or the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from ..app import Charter
from ..engine.report import Attempt, ModelCall, RunReport, StepReport
from ..events import (
    ApprovalRequested,
    Event,
    ModelCalled,
    PlanRevised,
    RunCreated,
    StepStarted,
    ToolCalled,
)
from ..store import EffectRow, RunRow

LIMIT = 2000  # characters of a value's JSON shown before "open whole"


class NotFound(LookupError):
    """What was asked for is not in the run (a step, an item, an event): the API answers 404."""

IN_FLIGHT = ("running", "replanning")


def shown_status(status: str, interrupted: bool) -> str:
    """The status a person sees: ``interrupted`` for a run in flight whose process is gone."""
    return "interrupted" if interrupted and status in IN_FLIGHT else status


def cut(value: Any, href: str) -> Any:
    """``value`` as it is if its JSON is short, else a preview of it and where to get it whole."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= LIMIT:
        return value
    return {"$truncated": True, "preview": text[:LIMIT], "size": len(text), "href": href}


def run_row(row: RunRow) -> dict[str, Any]:
    """One line of the runs list."""
    return {
        "id": row.id, "status": shown_status(row.status, row.interrupted), "stored_status": row.status,
        "interrupted": row.interrupted, "goal": row.goal, "request": row.request,
        "steps_done": row.steps_done, "steps_total": row.steps_total, "cost": row.cost, "tokens": row.tokens,
        "created_at": row.created_at, "updated_at": row.updated_at,
        "finished_at": row.finished_at, "reason": row.reason, "parent_run": row.parent_run,
    }


def _workers(events: Iterable[Event]) -> dict[tuple[str, int | None, int], str | None]:
    """Who ran each attempt, by (step, item, attempt): ``StepStarted.worker`` where the log has it."""
    return {(ev.step, ev.item, ev.attempt): ev.worker or None for ev in events if isinstance(ev, StepStarted)}


def plan_of(events: list[Event]) -> dict[str, Any]:
    """The latest version of the plan, as the log holds it."""
    plan: dict[str, Any] = {}
    for ev in events:
        if isinstance(ev, RunCreated | PlanRevised):
            plan = ev.plan
    return plan


def budget_use(report: RunReport, now: float) -> dict[str, dict[str, float | None]]:
    """Each limit of the run's budget beside what the run has used of it."""
    started = sum(len(s.attempts) + sum(len(i.attempts) for i in s.items) for s in report.steps)
    approved = next((v.approved_at for v in report.versions if v.approved_at is not None), None)
    end = report.finished_at or now
    used = {"tokens": float(report.tokens), "cost": report.cost_known, "steps": float(started),
            "seconds": None if approved is None else max(0.0, end - approved)}
    return {k: {"used": used.get(k), "limit": limit} for k, limit in report.budget.items()} | {
        k: {"used": v, "limit": None} for k, v in used.items() if k not in report.budget}


def run_detail(report: RunReport, steps_deps: dict[str, list[str]], now: float) -> dict[str, Any]:
    """A run as its page shows it: the goal, the plan as a graph, the versions, the waterfall, the budget."""
    base = f"/api/runs/{report.id}"
    workers = _workers(report.events)
    plan = plan_of(report.events)
    by_id = {s.get("id"): s for s in plan.get("steps", [])}
    nodes = []
    waterfall = []
    for s in report.steps:
        raw = by_id.get(s.id, {})
        nodes.append({"id": s.id, "title": s.title, "kind": s.kind, "tool": s.tool, "status": s.status,
                      "deps": steps_deps.get(s.id, []), "for_each": raw.get("for_each"),
                      "items_total": len(s.items) if s.items else None,
                      "items_done": sum(1 for i in s.items if i.status == "succeeded")})
        for unit in [s, *s.items]:
            for a in unit.attempts:
                waterfall.append({"step": s.id, "item": unit.item, "attempt": a.number, "start": a.started_at,
                                  "end": a.ended_at, "outcome": a.outcome,
                                  "worker": workers.get((s.id, unit.item, a.number))})
    waterfall.sort(key=lambda w: (w["start"], w["step"]))
    return {
        "id": report.id, "status": shown_status(report.status, report.interrupted), "stored_status": report.status,
        "interrupted": report.interrupted, "reason": report.reason, "goal": report.goal, "request": report.request,
        "assumptions": report.assumptions, "inputs": cut(report.inputs, f"{base}/value?field=inputs"),
        "output": cut(report.output, f"{base}/value?field=output"),
        "created_at": report.created_at, "updated_at": report.updated_at, "finished_at": report.finished_at,
        "parent_run": report.parent_run, "plan_version": report.plan_version, "tokens": report.tokens,
        "cost": report.cost, "cost_known": report.cost_known, "unpriced_models": report.unpriced_models,
        "budget": budget_use(report, now), "last_seq": len(report.events), "now": now,
        "steps": nodes, "waterfall": waterfall,
        "versions": [v.to_json() for v in report.versions],
        "plan": cut(plan, f"{base}/value?field=plan"),
        "model_calls": [_call_summary(c) for c in report.model_calls],
        "waiting_approvals": _waiting(report),
    }


def _waiting(report: RunReport) -> list[dict[str, Any]]:
    """The approval steps that wait for a person now, with what they ask."""
    asked = {ev.step: ev.message for ev in report.events if isinstance(ev, ApprovalRequested)}
    return [{"step": s.id, "message": asked.get(s.id, "")} for s in report.steps
            if s.kind == "approval" and s.status == "awaiting"]


def _call_summary(c: ModelCall) -> dict[str, Any]:
    return c.to_json()


def step_detail(report: RunReport, step: StepReport, deps: list[str], retry: dict[str, Any],
                effects: list[EffectRow]) -> dict[str, Any]:
    """A step as its panel shows it: arguments, output, attempts, model and tool calls, effects."""
    base = f"/api/runs/{report.id}"
    workers = _workers(report.events)

    def value(field: str, v: Any, item: int | None) -> Any:
        href = f"{base}/steps/{quote(step.id)}/value?field={field}" + ("" if item is None else f"&item={item}")
        return cut(v, href)

    def attempts(unit: StepReport) -> list[dict[str, Any]]:
        return [_attempt(a, workers.get((step.id, unit.item, a.number)), value) for a in unit.attempts]

    calls, tools = _calls(report, step.id, base)
    return {
        "run": report.id, "id": step.id, "title": step.title, "why": step.why, "kind": step.kind, "tool": step.tool,
        "status": step.status, "deps": deps, "retry": retry, "reason": step.reason, "reused_from": step.reused_from,
        "started_at": step.started_at, "finished_at": step.finished_at, "duration": step.duration,
        "args": value("args", step.args, None), "output": value("output", step.output, None),
        "error": value("error", step.error, None), "attempts": attempts(step),
        "items": [{"item": i.item, "status": i.status, "args": value("args", i.args, i.item),
                   "output": value("output", i.output, i.item), "error": value("error", i.error, i.item),
                   "attempts": attempts(i)} for i in step.items],
        "model_calls": calls, "tool_calls": tools,
        "effects": [{"seq": e.seq, "item": e.item, "tool": e.tool, "key": e.key, "target": e.target,
                     "result": cut(e.result, f"{base}/events/{e.seq}"), "at": e.at} for e in effects],
    }


def _attempt(a: Attempt, worker: str | None, value: Any) -> dict[str, Any]:
    return {**a.to_json(), "worker": worker, "error": value("error", a.error, None) if a.error else None}


def _calls(report: RunReport, step_id: str, base: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A step's model calls, and its agent's tool calls: those it made, and those it was refused
    (a call of a tool the plan did not allow runs nothing and is not logged as a call: it is
    found in the model's answer, and its refusal in the next request)."""
    calls: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    made: dict[tuple[int | None, int], list[ToolCalled]] = {}
    for ev in report.events:
        if isinstance(ev, ToolCalled) and ev.step == step_id:
            made.setdefault((ev.item, ev.attempt), []).append(ev)
    model_events = [(seq, ev) for seq, ev in enumerate(report.events, 1)
                    if isinstance(ev, ModelCalled) and ev.step == step_id]
    for n, (seq, ev) in enumerate(model_events):
        href = f"{base}/events/{seq}"
        calls.append({"seq": seq, "at": ev.at, "item": ev.item, "attempt": ev.attempt, "index": ev.index,
                      "model": ev.model, "input_tokens": ev.input_tokens, "output_tokens": ev.output_tokens,
                      "cost": ev.cost, "latency": ev.latency, "request": cut(ev.request, href),
                      "response": cut(ev.response, href)})
        following = model_events[n + 1][1] if n + 1 < len(model_events) else None
        answers = _tool_answers(following) if following and following.attempt == ev.attempt else {}
        logged = made.get((ev.item, ev.attempt), [])
        for call in ev.response.get("tool_calls") or []:
            if "$pruned" in call:  # a pruned chunk of a long list: its calls are listed from the log below
                continue
            name, args, cid = call.get("name"), call.get("arguments"), call.get("id")
            match = next((t for t in logged if t.tool == name and t.args == args), None)
            if match is not None:
                logged.remove(match)
                tools.append({"seq": report.events.index(match) + 1, "item": ev.item, "attempt": ev.attempt,
                              "tool": name, "args": cut(args, href), "refused": False,
                              "output": cut(match.output, f"{base}/events/{report.events.index(match) + 1}"),
                              "error": match.error})
            else:
                tools.append({"seq": None, "item": ev.item, "attempt": ev.attempt, "tool": name,
                              "args": cut(args, href), "refused": True, "output": None,
                              "error": answers.get(cid, "not called")})
    # Calls no answer asked for as the log has it: the answer was pruned (`charter prune`), yet the call ran.
    for logged in made.values():
        for t in logged:
            seq = report.events.index(t) + 1
            tools.append({"seq": seq, "item": t.item, "attempt": t.attempt, "tool": t.tool,
                          "args": cut(t.args, f"{base}/events/{seq}"), "refused": False,
                          "output": cut(t.output, f"{base}/events/{seq}"), "error": t.error})
    return calls, tools


def _tool_answers(ev: ModelCalled) -> dict[str, str]:
    """What the agent was told of each tool call, by call id: the errors, from the request after it."""
    out: dict[str, str] = {}
    for m in ev.request.get("messages") or []:
        if m.get("role") == "tool" and m.get("tool_call_id"):
            try:
                said = json.loads(m.get("content") or "{}")
            except ValueError:
                continue
            if isinstance(said, dict) and said.get("error"):
                out[m["tool_call_id"]] = str(said["error"])
    return out


async def step_of(charter: Charter, run_id: str, step_id: str) -> tuple[RunReport, StepReport, Any]:
    """A run's report, one of its steps, and the plan's step (its deps and retry policy)."""
    report = await charter.report(run_id)
    state = await charter.state(report.id)
    try:
        step = report.step(step_id)
    except KeyError:
        raise NotFound(f"run {report.id} has no step {step_id!r}") from None
    return report, step, state.plan.by_id.get(step_id)
