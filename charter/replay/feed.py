"""What a replay's engine is answered with: the log's model answers and tool results, never the world.

:class:`Feed` gives the replay's engine a model (every model, whatever a step
names) that answers each call with the recorded answer of the same place (step,
item, plan version, attempt, index of the call; the planner's calls by
replanning and index), and a registry in which every tool is a stand-in: a
tool of the same name, schema, effect and limits whose function returns the
recorded result of that place. A write tool's function is never kept, so no
flag can reach it (a write by today's code, or by the log: a tool it recorded
an effect of); with ``live_reads`` a read tool is left as it is, and called
for real. On the way it notes what differs: a model request whose digest is
not the recorded one, an agent's tool call that is not the recorded one, a
place the log holds no result for.

Imports the engine's journal (the call site of a model call and its digest),
models, tools and errors.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import threading
from collections.abc import Callable
from typing import Any

from .. import errors
from ..engine.journal import call_site, request_digest
from ..engine.report import preview
from ..engine.rules import RunState
from ..errors import PermanentError, RetryableError
from ..events import ModelCalled, StepFailed, StepSucceeded
from ..models.base import Model, ModelRequest, ModelResponse
from ..tools import Registry, Tool, ToolContext
from ..workspace import secrets
from .recording import Attempt, Recording, pruned
from .report import Divergence

_CONTEXT = "_charter_replay_context"  # where a stand-in is given its ToolContext: no tool has such an argument
_AGENT_CALL = re.compile(r"/call(\d+)-([0-9a-f]{8})$")  # an agent's tool call key: RUN/STEP/callN-DIGEST


class Unrecorded(PermanentError):
    """The replay needs a result its log does not hold: this branch of the run goes no further."""


class Feed:
    """Answers a replay's model and tool calls from a :class:`Recording`, and notes what differs."""

    def __init__(self, rec: Recording, *, live_reads: bool) -> None:
        self.rec = rec
        self.live_reads = live_reads
        self.notes: list[Divergence] = []
        self.model_answers = 0
        self.tool_results = 0
        self.writes_withheld = 0
        self.live_calls = 0  # read tools called for real (with live_reads): tool steps' and agents' calls
        self._lock = threading.Lock()
        self.live: set[str] = set()  # the tools left as they are (read tools, with live_reads)
        self.current: Callable[[], RunState] = lambda: rec.state  # the replay's state now (set by the runner)
        self._planner_calls: dict[int, int] = {}
        self.default_model = _default_model(rec)

    # --- models ---------------------------------------------------------------------

    def model(self, spec: str | None = None) -> Model:
        """The model of steps naming ``spec`` (``None``: the run's default model), answering from the log."""
        return _Answering(self, spec or self.default_model)

    async def answer(self, name: str, request: ModelRequest) -> ModelResponse:
        site = call_site.get()
        if site is None:
            return self._planner(request)
        step, item, number, index = site
        att = self.rec.attempt_of(step, item, self.current().plan_version, number)
        call = att.models.get(index) if att is not None else None
        if att is None or call is None:
            if att is not None and isinstance(att.outcome, StepFailed):
                raise rebuilt(att.outcome.error)  # the call failed then (a 429, a timeout): it fails now
            raise self._unrecorded(step, item, att, f"model call {index + 1} has no recorded answer")
        differs = _request_differs(call, name, request, step, item, att.number)
        if differs is not None:
            self.notes.append(differs)
        if pruned(call.response):
            raise self._unrecorded(step, item, att, f"the answer to model call {index + 1} was pruned")
        self.model_answers += 1
        return ModelResponse.from_json(call.response)

    def _planner(self, request: ModelRequest) -> ModelResponse:
        """The planner revising the plan: the n-th call of the replay's k-th replanning gets the log's."""
        group = self.current().replans
        n = self._planner_calls.get(group, 0)
        self._planner_calls[group] = n + 1
        calls = self.rec.planning.get(group, [])
        if n >= len(calls):
            gave_up = self.rec.planner_gave_up.get(group)
            if gave_up is not None:
                raise PermanentError(gave_up)
            self.notes.append(Divergence("unrecorded", f"the planner's call {n + 1} of replanning {group} has no "
                                         "recorded answer: the replay goes no further"))
            raise Unrecorded("the log holds no answer for this planner call")
        call = calls[n]
        # the planner's calls are recorded by the answer's model name
        differs = _request_differs(call, call.model, request, None, None, None)
        if differs is not None:
            self.notes.append(differs)
        self.model_answers += 1
        return ModelResponse.from_json(call.response)

    # --- tools ------------------------------------------------------------------------

    def registry(self, base: Registry) -> Registry:
        """``base``'s tools as stand-ins (its read tools as they are, with ``live_reads``). Its MCP
        servers must be started already: their tools are listed, never called."""
        out = Registry(sources=base.sources)
        for t in base:
            if self.live_reads and not self.write(t):
                self.live.add(t.name)
                out.add(self._counted(t))
            else:
                out.add(self._stand_in(t))
        return out

    def write(self, t: Tool) -> bool:
        """Whether ``t`` is a write here: today's code says so, or the log does (an effect it recorded),
        so a tool whose ``effect="write"`` was dropped since is still never called."""
        return t.effect == "write" or t.name in self.rec.written

    def _counted(self, t: Tool) -> Tool:
        """``t`` as it is, counting its calls for real (a tool step's, an agent's) in ``live_calls``."""
        feed, fn = self, t.fn
        if t.is_async:
            async def call(*args: Any, **kwargs: Any) -> Any:
                feed._called()
                return await fn(*args, **kwargs)
        else:
            def call(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                feed._called()
                return fn(*args, **kwargs)
        return dataclasses.replace(t, fn=functools.wraps(fn)(call))

    def _called(self) -> None:
        with self._lock:  # a sync tool runs in a thread of its own, beside others
            self.live_calls += 1

    def _stand_in(self, t: Tool) -> Tool:
        feed = self
        write = self.write(t)

        async def recorded(**kwargs: Any) -> Any:
            ctx: ToolContext = kwargs.pop(_CONTEXT)
            return feed.tool_result(t.name, write, ctx, kwargs)

        # Only the name, the schema, the effect and the limits are kept: the function is the log's.
        return dataclasses.replace(t, fn=recorded, is_async=True, context_param=_CONTEXT)

    def tool_result(self, tool: str, write: bool, ctx: ToolContext, args: dict[str, Any]) -> Any:
        state = self.current()
        att = self.rec.attempt_of(ctx.step_id, ctx.item, state.plan_version, ctx.attempt)
        step = state.plan.by_id[ctx.step_id]
        key = ctx.idempotency_key
        if step.kind == "agent":
            m = _AGENT_CALL.search(key)
            index = int(m.group(1)) if m else -1
            call = att.tools.get(index) if att is not None else None
            if call is None:
                return self._from_ledger(ctx, att, write, f"the agent's tool call {index + 1} ({tool}) has no "
                                                         "recorded result")
            if call.tool != tool or (m is not None and not call.digest.startswith(m.group(2))
                                     and not _same_masked(call.args, args)):
                self.notes.append(Divergence(
                    "tool_call", f"the agent's tool call {index + 1} differs from the recorded one",
                    ctx.step_id, ctx.item, call.attempt,
                    recorded={"tool": call.tool, "args": call.args}, replayed={"tool": tool}))
            self._fed(write)
            if call.error is not None:
                raise _from_message(call.error)
            return call.output
        if att is None or att.outcome is None:
            return self._from_ledger(ctx, att, write, "the log holds no result for this attempt")
        if isinstance(att.outcome, StepSucceeded):
            if pruned(att.outcome.output):
                raise self._unrecorded(ctx.step_id, ctx.item, att, "its recorded result was pruned")
            self._fed(write)
            return att.outcome.output
        self._fed(write)
        raise rebuilt(att.outcome.error)

    def _from_ledger(self, ctx: ToolContext, att: Attempt | None, write: bool, why: str) -> Any:
        """A write with no recorded outcome whose effect the ledger holds (its process died after the
        effect) gets the ledger's result; anything else cannot go on."""
        if write and ctx.idempotency_key in self.rec.effects:
            self._fed(write)
            return self.rec.effects[ctx.idempotency_key]
        raise self._unrecorded(ctx.step_id, ctx.item, att, why)

    def _fed(self, write: bool) -> None:
        self.tool_results += 1
        self.writes_withheld += write

    def _unrecorded(self, step: str, item: int | None, att: Attempt | None, why: str) -> Unrecorded:
        self.notes.append(Divergence("unrecorded", f"{why}: the replay cannot go further on this branch",
                                     step, item, att.number if att is not None else None))
        return Unrecorded(f"replay: {why}")


class _Answering:
    """A model that answers from the log, under the name the step would use today."""

    def __init__(self, feed: Feed, name: str) -> None:
        self.feed = feed
        self.name = name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return await self.feed.answer(self.name, request)


def _default_model(rec: Recording) -> str:
    """The model that answered the steps naming none when the run was recorded."""
    for att in rec.attempts.values():
        step = rec.state.plan.by_id.get(att.step)
        if step is not None and not step.args.get("model"):
            for call in att.models.values():
                return call.model
    return "replay:log"


def _request_differs(call: ModelCalled, name: str, request: ModelRequest, step: str | None, item: int | None,
                     attempt: int | None) -> Divergence | None:
    """Which message (or setting) of today's request to model ``name`` differs from the recorded
    ``call``, shown briefly; ``None``: it does not.

    The recorded digest was taken on the request as sent, secrets and all; the log (and so what
    a replay is fed: a tool's result an agent passes on) holds them masked. So once a secret is
    known the two requests are compared masked, and the digest decides only when none is (or the
    recorded request was pruned). Two sides that print the same are no divergence."""
    today = request_digest(name, request)
    if today == call.digest:
        return None
    was, now = call.request, request.to_json()
    if secrets.redacting() and not pruned(was):
        was, now = secrets.redact_data(was), secrets.redact_data(now)
        if name == call.model and _canonical(was) == _canonical(now):
            return None
    recorded: Any = None
    replayed: Any = None
    old, new = was.get("messages") or [], now.get("messages") or []
    for i in range(max(len(old), len(new))):
        a = old[i] if i < len(old) else None
        b = new[i] if i < len(new) else None
        if a != b:
            recorded, replayed = _around_change(a, b)
            break
    else:
        changed = sorted(k for k in set(was) | set(now) if k != "messages" and was.get(k) != now.get(k))
        recorded, replayed = {k: was.get(k) for k in changed}, {k: now.get(k) for k in changed}
        if name != call.model:  # the digest is taken on the model's name too
            recorded, replayed = {"model": call.model, **recorded}, {"model": name, **replayed}
    if _canonical(recorded) == _canonical(replayed):
        return None
    who = "the planner's" if step is None else f"model call {call.index + 1}:"
    return Divergence("model_request", f"{who} request differs from the recorded one "
                      f"(digest {call.digest[:12]} recorded, {today[:12]} today)", step, item, attempt,
                      recorded=recorded, replayed=replayed)


def _same_masked(recorded: Any, today: Any) -> bool:
    """Whether an agent's tool call asks what the recorded one did, once a known secret is masked in
    both (its key's digest was taken on the arguments as the model gave them, secrets and all)."""
    return secrets.redacting() and _canonical(secrets.redact_data(recorded)) == _canonical(
        secrets.redact_data(today))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _around_change(a: Any, b: Any) -> tuple[str | None, str | None]:
    """Two messages shown briefly from a little before where they first differ."""
    x = json.dumps(a, default=str) if a is not None else None
    y = json.dumps(b, default=str) if b is not None else None
    start = 0
    if x is not None and y is not None:
        same = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
        start = max(0, same - 60)

    def cut(text: str | None) -> str | None:
        return None if text is None else ("…" if start else "") + preview(text[start:])

    return cut(x), cut(y)


def rebuilt(error: dict[str, Any] | None) -> Exception:
    """The recorded error of an attempt, raised again for today's rules to classify: Charter's own
    errors as themselves, any other as an exception of the same name (retried as today's policy says)."""
    error = error or {}
    name, message = str(error.get("type") or "Exception"), str(error.get("message") or "")
    known = getattr(errors, name, None)
    if isinstance(known, type) and issubclass(known, RetryableError | PermanentError):
        return known(message)
    return _named(name)(message)


def _from_message(text: str) -> Exception:
    """An agent's failed tool call, recorded as ``Type: message``."""
    name, sep, message = text.partition(": ")
    return rebuilt({"type": name, "message": message} if sep else {"type": "Exception", "message": text})


def _named(name: str) -> type[Exception]:
    safe = re.sub(r"\W", "_", name) or "Exception"
    if safe[0].isdigit():
        safe = "_" + safe
    return type(safe, (Exception,), {})
