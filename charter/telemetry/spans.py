"""From committed events to spans and measurements, following the OpenTelemetry GenAI conventions.

:class:`SpanBuilder` is fed what a watcher is given (a run's snapshot and the
events of one commit) and returns finished spans and metric points as plain
data; :mod:`charter.telemetry.tracer` hands them to the OpenTelemetry SDK. It
never asks the engine or the store anything: the times are the events' (``at``;
a model call's ``latency``), an attempt runs from its ``StepStarted`` (or
``ApprovalRequested``) to its ``StepSucceeded``, ``StepFailed`` or
``StepInterrupted``, and the ids come from :mod:`charter.telemetry.context`,
so spans made by different processes join one trace. Each id is sent once: a
run that ends again after a reopening (a retry after it failed) sends that
end as a span of the reopening, under its root (the first end's).

What each span is, its name and attributes: docs/telemetry.md. Pure Python,
no OpenTelemetry import; it imports the events, the snapshot's type and the
workspace's redaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engine.watchers import RunSnapshot
from ..events import (
    ApprovalRequested,
    Event,
    ModelCalled,
    PlanRejected,
    PlanRevised,
    ReplanRequested,
    RunCancelled,
    RunCreated,
    RunFailed,
    RunSucceeded,
    StepFailed,
    StepInterrupted,
    StepStarted,
    StepSucceeded,
    ToolCalled,
)
from ..workspace.secrets import redact
from .context import RunTrace, run_trace, span_id

INTERNAL, CLIENT = "internal", "client"
#: the error.type of a run that failed (its steps' own errors are on their attempts' spans)
RUN_FAILED = "run_failed"
#: Charter's provider names where the conventions know the provider by another
PROVIDERS = {"mistral": "mistral_ai", "xai": "x_ai", "gemini": "gcp.gemini", "bedrock": "aws.bedrock"}
_FINISH = {"tool_calls": "tool_call", "tool_use": "tool_call", "end_turn": "stop", "max_tokens": "length",
           "stop_sequence": "stop"}


@dataclass
class SpanRecord:
    """A finished span, as data. ``parent_id`` None: the run's root (under the caller's span, if any)."""

    name: str
    trace: RunTrace
    span_id: int
    parent_id: int | None
    start: float
    end: float
    kind: str = INTERNAL
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the status description of a span that ended in an error


@dataclass
class Measure:
    """One point of a GenAI client metric: ``tokens`` (gen_ai.client.token.usage) or ``duration``."""

    metric: str
    value: float
    attributes: dict[str, Any]


@dataclass
class _Attempt:
    kind: str
    start: float | None
    key: str = ""
    args: Any = None
    last_at: float | None = None  # when its last model or tool call ended: the next call began then
    last_record: str = ""  # "model" or "tool"
    tool_ids: list[tuple[str, str]] = field(default_factory=list)  # (name, id) the model asked for
    model: str = ""
    response_model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class _Run:
    trace: RunTrace
    attempts: dict[tuple[str, int | None, int], _Attempt] = field(default_factory=dict)
    replan_at: float | None = None
    request: str | None = None


class SpanBuilder:
    """Keeps what it needs of each run between commits; returns what each commit finished.

    ``capture_content``: record prompts, answers, tool arguments and results (the
    conventions' opt-in attributes), always through secret redaction.
    ``default_model``: the model of steps that name none, to name a model call that failed.
    """

    def __init__(self, *, capture_content: bool = False, default_model: str | None = None) -> None:
        self.capture_content = capture_content
        self.default_model = default_model
        self._runs: dict[str, _Run] = {}

    def feed(self, snap: RunSnapshot, events: Sequence[Event]) -> tuple[list[SpanRecord], list[Measure]]:
        run = self._runs.get(snap.run_id)
        if run is None:
            run = self._runs[snap.run_id] = _Run(run_trace(snap.run_id, snap.trace))
        out = _Output(run, snap, self, events)
        out.planning(events)
        for ev in events:
            out.event(ev)
        if out.ended:
            del self._runs[snap.run_id]
        return out.spans, out.measures

    def content(self, value: Any) -> str:
        """``value`` as the JSON text of an opt-in attribute, secrets masked."""
        return redact(json.dumps(value, default=str, ensure_ascii=False))


class _Output:
    """What one commit of one run turns into."""

    def __init__(self, run: _Run, snap: RunSnapshot, builder: SpanBuilder, events: Sequence[Event]) -> None:
        self.run = run
        self.snap = snap
        self.builder = builder
        self.trace = run.trace
        self.spans: list[SpanRecord] = []
        self.measures: list[Measure] = []
        self.ended = False
        # the plan version each event was written under (a commit may revise the plan: the snapshot is after it)
        revised = next((ev.version for ev in events if isinstance(ev, PlanRevised)), None)
        self.version = snap.plan_version if revised is None else revised - 1
        # what runs after the n-th reopening hangs under a span of its own (a reopening is a commit of its own)
        self.reopening = snap.reopenings
        self.top = self.trace.root_id if not self.reopening else span_id(self.trace, "reopened", self.reopening)

    def base(self) -> dict[str, Any]:
        return {"charter.run.id": self.snap.run_id}

    def sid(self, *place: Any, version: int | None = None) -> int:
        """The id of the span at ``place``, under this plan version and reopening: a revised plan numbers a
        step's attempts afresh, and a plan's version may be asked for again after a reopening."""
        return span_id(self.trace, *place, f"v{self.version if version is None else version}", f"r{self.reopening}")

    # --- planning ---------------------------------------------------------------------------

    def planning(self, events: Sequence[Event]) -> None:
        """The planner's model calls of this commit (``step`` empty), under a ``plan`` span that ends
        when the plan is made (the run created, a revised plan) or the planner gives up."""
        calls = [ev for ev in events if isinstance(ev, ModelCalled) and not ev.step]
        end_ev = next((ev for ev in events if isinstance(ev, RunCreated)
                       or (isinstance(ev, PlanRevised) and ev.by == "planner")
                       or (isinstance(ev, RunFailed) and self.run.replan_at is not None)), None)
        for ev in events:
            if isinstance(ev, ReplanRequested):
                self.run.replan_at = ev.at
        if end_ev is None or (isinstance(end_ev, RunCreated) and not calls):
            return
        end = end_ev.at
        total = sum(c.latency or 0.0 for c in calls)
        # a replanning began when it was asked for; the first plan, its calls' time before the run was made
        replanned = not isinstance(end_ev, RunCreated) and self.run.replan_at is not None
        start = self.run.replan_at if replanned and self.run.replan_at is not None else end - total
        version = end_ev.version if isinstance(end_ev, PlanRevised) else (
            1 if isinstance(end_ev, RunCreated) else self.snap.plan_version + 1)
        pid = self.sid("plan", version=version)
        at = start  # the calls, back to back (the log keeps how long each took, not when it began)
        for call in calls:
            took = call.latency or 0.0
            self.chat(call, pid, at, at + took, version)
            at += took
        end = max(end, at)
        attrs = {**self.base(), "charter.plan.version": version}
        error = None
        if isinstance(end_ev, RunFailed):
            attrs["error.type"] = "no_revised_plan"
            error = end_ev.reason
        elif isinstance(end_ev, PlanRevised):
            attrs["charter.plan.needs_review"] = end_ev.needs_review
        self.spans.append(SpanRecord("plan", self.trace, pid, self.top, start, end, INTERNAL, attrs, error))
        if not isinstance(end_ev, RunCreated):
            self.run.replan_at = None

    # --- events -----------------------------------------------------------------------------------

    def event(self, ev: Event) -> None:
        if isinstance(ev, RunCreated):
            self.run.request = ev.request
        elif isinstance(ev, PlanRevised):
            self.version = ev.version
        elif isinstance(ev, StepStarted):
            self.run.attempts[(ev.step, ev.item, ev.attempt)] = _Attempt(self.kind(ev.step), ev.at, ev.key, ev.args)
        elif isinstance(ev, ApprovalRequested):
            self.run.attempts[(ev.step, ev.item, ev.attempt)] = _Attempt("approval", ev.at, args=ev.message)
        elif isinstance(ev, ModelCalled) and ev.step:
            a = self.attempt(ev.step, ev.item, ev.attempt)
            # not before its attempt began, nor before the call before it ended (a fake clock stands still)
            start = max(ev.at - (ev.latency or 0.0), a.start or 0.0, a.last_at or 0.0)
            self.chat(ev, self.attempt_id(ev.step, ev.item, ev.attempt), min(start, ev.at), ev.at)
            a.last_at, a.last_record = ev.at, "model"
            a.model, a.response_model = ev.model, str(ev.response.get("model") or "")
            a.input_tokens += ev.input_tokens
            a.output_tokens += ev.output_tokens
            a.tool_ids = [(str(c.get("name")), str(c.get("id"))) for c in ev.response.get("tool_calls") or ()]
        elif isinstance(ev, ToolCalled):
            self.tool_call(ev)
        elif isinstance(ev, StepSucceeded) and ev.attempt and ev.reused_from is None:
            self.end_attempt(ev, ev.step, ev.item, ev.attempt, "succeeded")
        elif isinstance(ev, StepFailed):
            self.end_attempt(ev, ev.step, ev.item, ev.attempt, "failed" if ev.retry_at is None else "retrying")
        elif isinstance(ev, StepInterrupted):
            self.end_attempt(ev, ev.step, ev.item, ev.attempt, "interrupted")
        elif isinstance(ev, RunSucceeded | RunFailed | RunCancelled | PlanRejected):
            self.root(ev)

    def kind(self, step: str) -> str:
        s = self.snap.plan.by_id.get(step)
        return s.kind if s is not None else "tool"

    def attempt(self, step: str, item: int | None, n: int) -> _Attempt:
        """An attempt this process saw start, or one that started elsewhere (its start then comes
        from the snapshot, for a plain step; unknown for an item)."""
        a = self.run.attempts.get((step, item, n))
        if a is None:
            shown = self.snap.steps.get(step)
            start = shown.attempt_started_at if shown is not None and item is None else None
            a = self.run.attempts[(step, item, n)] = _Attempt(self.kind(step), start)
        return a

    def attempt_id(self, step: str, item: int | None, n: int) -> int:
        return self.sid("attempt", step, "" if item is None else item, n)

    # --- spans --------------------------------------------------------------------------------

    def chat(self, ev: ModelCalled, parent: int, start: float, end: float, version: int | None = None) -> None:
        """A model call: ``chat {model}``, and its tokens and duration as metric points (``version``: of the
        plan a planner's call made)."""
        provider, model = split_model(ev.model)
        response_model = str(ev.response.get("model") or "") or model
        common = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
                  "gen_ai.response.model": response_model}
        attrs: dict[str, Any] = {**common, **self.base(),
                                 "gen_ai.usage.input_tokens": ev.input_tokens,
                                 "gen_ai.usage.output_tokens": ev.output_tokens,
                                 "gen_ai.output.type": "json" if ev.request.get("schema") is not None else "text"}
        finish = ev.response.get("finish_reason")
        if finish:
            attrs["gen_ai.response.finish_reasons"] = [_FINISH.get(finish, finish)]
        if "max_tokens" in ev.request:
            attrs["gen_ai.request.max_tokens"] = ev.request["max_tokens"]
        if ev.request.get("temperature") is not None:
            attrs["gen_ai.request.temperature"] = ev.request["temperature"]
        if ev.cost is not None:
            attrs["charter.cost.usd"] = ev.cost
        if self.builder.capture_content:
            attrs["gen_ai.input.messages"] = self.builder.content(input_messages(ev.request.get("messages") or []))
            attrs["gen_ai.output.messages"] = self.builder.content(output_messages(ev.response))
        sid = self.sid("model", ev.step, "" if ev.item is None else ev.item, ev.attempt, ev.index, version=version)
        self.spans.append(SpanRecord(f"chat {model}", self.trace, sid, parent, start, end, CLIENT, attrs))
        self.measures += [Measure("tokens", ev.input_tokens, {**common, "gen_ai.token.type": "input"}),
                          Measure("tokens", ev.output_tokens, {**common, "gen_ai.token.type": "output"}),
                          Measure("duration", max(0.0, end - start), common)]

    def failed_chat(self, a: _Attempt, ev: StepFailed, parent: int) -> None:
        """The model call an ``llm`` or ``agent`` attempt failed in (the log keeps only answers)."""
        spec = a.model or str(self.snap.plan.by_id[ev.step].args.get("model") or "") or self.builder.default_model
        if not spec:
            return
        provider, model = split_model(spec)
        start = a.last_at if a.last_at is not None else (a.start if a.start is not None else ev.at)
        error_type = str(ev.error.get("type") or "_OTHER")
        common = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model}
        attrs = {**common, **self.base(), "error.type": error_type}
        sid = self.sid("model", ev.step, "" if ev.item is None else ev.item, ev.attempt, "failed")
        self.spans.append(SpanRecord(f"chat {model}", self.trace, sid, parent, start, ev.at, CLIENT, attrs,
                                     str(ev.error.get("message") or error_type)))
        self.measures.append(Measure("duration", max(0.0, ev.at - start), {**common, "error.type": error_type}))

    def tool_call(self, ev: ToolCalled) -> None:
        """An agent's tool call: ``execute_tool {tool}``, from the model's answer that asked for it."""
        a = self.attempt(ev.step, ev.item, ev.attempt)
        start = a.last_at if a.last_at is not None else ev.at
        call_id = next((cid for name, cid in a.tool_ids if name == ev.tool or name == ev.tool.replace(".", "__")), "")
        if call_id:
            a.tool_ids.remove(next(t for t in a.tool_ids if t[1] == call_id))
        attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": ev.tool,
                                 "gen_ai.tool.type": "function", **self.base()}
        if call_id:
            attrs["gen_ai.tool.call.id"] = call_id
        if ev.error:
            attrs["error.type"] = ev.error.partition(":")[0] or "_OTHER"
        if self.builder.capture_content:
            attrs["gen_ai.tool.call.arguments"] = self.builder.content(ev.args)
            if ev.error is None:
                attrs["gen_ai.tool.call.result"] = self.builder.content(ev.output)
        sid = self.sid("tool", ev.step, "" if ev.item is None else ev.item, ev.attempt, ev.index)
        self.spans.append(SpanRecord(f"execute_tool {ev.tool}", self.trace, sid,
                                     self.attempt_id(ev.step, ev.item, ev.attempt), start, ev.at, INTERNAL, attrs,
                                     redact(ev.error) if ev.error else None))
        a.last_at, a.last_record = ev.at, "tool"

    def end_attempt(self, ev: StepSucceeded | StepFailed | StepInterrupted, step: str, item: int | None, n: int,
                    outcome: str) -> None:
        """An attempt ended: its span, named by what the step does."""
        a = self.attempt(step, item, n)
        self.run.attempts.pop((step, item, n), None)
        sid = self.attempt_id(step, item, n)
        plan_step = self.snap.plan.by_id.get(step)
        attrs: dict[str, Any] = {**self.base(), "charter.step.id": step, "charter.step.kind": a.kind,
                                 "charter.step.attempt": n, "charter.step.outcome": outcome}
        if item is not None:
            attrs["charter.step.item"] = item
        if a.key:
            attrs["charter.step.key"] = a.key
        if a.kind == "tool" and plan_step is not None:
            name = f"execute_tool {plan_step.tool}"
            attrs.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": plan_step.tool,
                          "gen_ai.tool.type": "function"})
            if a.key:
                attrs["gen_ai.tool.call.id"] = a.key  # the call, the same in every attempt (its idempotency key)
            if self.builder.capture_content:
                if a.args is not None:
                    attrs["gen_ai.tool.call.arguments"] = self.builder.content(a.args)
                if isinstance(ev, StepSucceeded):
                    attrs["gen_ai.tool.call.result"] = self.builder.content(ev.output)
        elif a.kind == "agent":
            name = f"invoke_agent {step}"
            attrs.update({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": step,
                          "gen_ai.usage.input_tokens": a.input_tokens, "gen_ai.usage.output_tokens": a.output_tokens})
            spec = a.model or str(plan_step.args.get("model") or "" if plan_step else "") or self.builder.default_model
            if spec:
                provider, model = split_model(spec)
                attrs.update({"gen_ai.provider.name": provider, "gen_ai.request.model": model})
            if a.response_model:
                attrs["gen_ai.response.model"] = a.response_model
        else:
            name = f"step {step}"
        error = None
        if isinstance(ev, StepFailed):
            attrs["error.type"] = str(ev.error.get("type") or "_OTHER")
            error = str(ev.error.get("message") or attrs["error.type"])
            if ev.retry_at is not None:
                attrs["charter.step.retry_at"] = ev.retry_at
            if a.kind in ("llm", "agent") and a.last_record != "model" and "did not finish within" not in error:
                self.failed_chat(a, ev, sid)
        elif isinstance(ev, StepInterrupted):
            attrs["charter.step.reason"] = ev.reason
        start = a.start
        if start is None:  # started in a process that is gone, and not shown in the snapshot
            attrs["charter.step.start_unknown"] = True
            start = ev.at
        self.spans.append(SpanRecord(name, self.trace, sid, self.top, start, ev.at, INTERNAL, attrs, error))

    def root(self, ev: RunSucceeded | RunFailed | RunCancelled | PlanRejected) -> None:
        """The run ended here: its root span, from when it was created; or, if it ended before and was
        reopened (a retry after it failed), the span of that reopening, from then, under the root."""
        self.ended = True
        goal = self.snap.plan.goal
        status = {RunSucceeded: "succeeded", RunFailed: "failed", RunCancelled: "cancelled",
                  PlanRejected: "rejected"}[type(ev)]
        attrs: dict[str, Any] = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": goal,
                                 **self.base(), "charter.run.status": status,
                                 "charter.plan.version": self.snap.plan_version}
        if self.reopening:
            attrs["charter.run.reopening"] = self.reopening
        error = None
        if isinstance(ev, RunFailed):
            attrs["error.type"] = RUN_FAILED
            error = ev.reason or RUN_FAILED
        if self.builder.capture_content:
            if self.run.request:
                attrs["gen_ai.input.messages"] = self.builder.content(
                    [{"role": "user", "parts": [{"type": "text", "content": self.run.request}]}])
            if isinstance(ev, RunSucceeded):
                attrs["gen_ai.output.messages"] = self.builder.content([{
                    "role": "assistant", "finish_reason": "stop",
                    "parts": [{"type": "text", "content": ev.output if isinstance(ev.output, str)
                               else json.dumps(ev.output, default=str, ensure_ascii=False)}]}])
        if self.reopening:
            start, parent = self.snap.reopened_at or ev.at, self.trace.root_id
        else:
            start, parent = self.snap.created_at or ev.at, None
        self.spans.append(SpanRecord(f"invoke_workflow {goal}", self.trace, self.top, parent,
                                     min(start, ev.at), ev.at, INTERNAL, attrs, error))


def split_model(spec: str) -> tuple[str, str]:
    """``provider:model?options`` as the conventions' provider name and the model's name."""
    head = spec.partition("?")[0]
    provider, sep, model = head.partition(":")
    if not sep:
        return "_OTHER", head
    return PROVIDERS.get(provider, provider), model


def input_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's messages in the conventions' shape (role, parts)."""
    out = []
    for m in messages:
        parts: list[dict[str, Any]] = []
        if m.get("role") == "tool":
            parts.append({"type": "tool_call_response", "id": m.get("tool_call_id"), "response": m.get("content")})
        elif m.get("content"):
            parts.append({"type": "text", "content": m["content"]})
        parts += [{"type": "tool_call", "id": c.get("id"), "name": c.get("name"), "arguments": c.get("arguments")}
                  for c in m.get("tool_calls") or ()]
        out.append({"role": m.get("role"), "parts": parts})
    return out


def output_messages(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A model's answer in the conventions' shape."""
    parts: list[dict[str, Any]] = [{"type": "text", "content": response["text"]}] if response.get("text") else []
    parts += [{"type": "tool_call", "id": c.get("id"), "name": c.get("name"), "arguments": c.get("arguments")}
              for c in response.get("tool_calls") or ()]
    finish = str(response.get("finish_reason") or "stop")
    return [{"role": "assistant", "parts": parts, "finish_reason": _FINISH.get(finish, finish)}]


__all__ = ["Measure", "SpanBuilder", "SpanRecord", "split_model"]
