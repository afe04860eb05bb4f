"""The planner: a request, the tool catalog and the policy go in; a validated plan comes out.

The model is asked for a plan as JSON. What comes back is checked exactly like
a plan file. When it is not usable (not JSON, an unknown tool, a cycle, bad
arguments), the problems go back to the model, a bounded number of times; then
planning fails with an error that shows every answer's problems and the last
answer. It never crashes on what a model says.

A repair sends the request, the last answer and its problems, not every answer
so far: the conversation stays the same size however many repairs it takes, so
it fits a small model's context as well on the third repair as on the first.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import CharterError, PlanError
from ..models.base import Message, Model, ModelRequest, ModelResponse
from ..models.prices import cost
from ..plan.model import ID_RULE, Plan, parse_plan_text
from ..tools import Registry

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["goal", "steps"],
    "properties": {
        "goal": {"type": "string"},
        "assumptions": {"type": "array", "items": {"type": "string"}},
        "steps": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "why"],
                "properties": {
                    "id": {"type": "string"},
                    "title": {"type": "string"},
                    "why": {"type": "string"},
                    "tool": {"type": "string"},
                    "args": {"type": "object"},
                    "llm": {"type": "object", "properties": {"prompt": {"type": "string"}, "system": {"type": "string"},
                                                             "schema": {"type": "object"}}},
                    "needs": {"type": "array", "items": {"type": "string"}},
                    "for_each": {"type": "string"},
                },
            },
        },
    },
}

INSTRUCTIONS = f"""You turn a request into an explicit plan that a person will review before it runs.

A plan is JSON: {{"goal": ..., "assumptions": [...], "steps": [...]}}.
Each step has a unique "id" ({ID_RULE}), a short "title", a "why" (the reason
for the step), and either "tool" with "args" (a call of one of the tools listed below, with arguments
fitting its schema), or "llm" with a "prompt" (a model call, for judgement or writing; add "schema" for a JSON answer).
Arguments and prompts refer to earlier results with references: "${{step_id}}" is a step's whole output,
"${{step_id.field}}" a field of it, "${{step_id.items[0]}}" an element. A reference makes the step wait for that
step; "needs": [ids] adds waits without data. Steps that do not depend on each other run in parallel.
"for_each": "${{step_id}}" runs a step once per element of a list output, "${{item}}" being the element.
"assumptions" lists what must hold for the plan to make sense. Use only the tools listed; add no others.
Prefer few steps. Answer with the plan as JSON only."""


@dataclass(frozen=True)
class PlanAttempt:
    """One answer of the model and what was wrong with it (nothing, for the one accepted)."""

    answer: str
    problems: list[str]


@dataclass
class PlanningResult:
    plan: Plan
    attempts: list[PlanAttempt]
    calls: list[tuple[ModelRequest, ModelResponse]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds each call took, as ``calls``

    @property
    def tokens(self) -> int:
        return sum(r.usage.total_tokens for _, r in self.calls)

    @property
    def cost(self) -> float | None:
        costs = [cost(r.model, r.usage) for _, r in self.calls]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)


class PlanningError(CharterError):
    """The model did not produce a usable plan within the allowed repairs, or a model call
    failed on the way. ``attempts`` holds every answer and its problems, in order."""

    def __init__(self, attempts: list[PlanAttempt], reason: str = "") -> None:
        self.attempts = attempts
        self.reason = reason
        lines = [f"no usable plan after {len(attempts)} answer(s)" + (f": {reason}" if reason else "")]
        for n, attempt in enumerate(attempts, 1):
            lines.append(f"problems with answer {n}:")
            lines += [f"  - {p}" for p in attempt.problems[:SHOWN_PROBLEMS]]
            if len(attempt.problems) > SHOWN_PROBLEMS:
                lines.append(f"  - … and {len(attempt.problems) - SHOWN_PROBLEMS} more")
        if attempts:
            last = attempts[-1].answer
            lines += ["the last answer was:", last if len(last) <= 2000 else last[:2000] + "…"]
        super().__init__("\n".join(lines))


SHOWN_PROBLEMS = 20  # per answer, in errors and repair prompts: enough to act on, bounded


def catalog(registry: Registry) -> list[dict[str, Any]]:
    """The tools as the planner shows them: name, description, effect, argument schema."""
    out = []
    for t in sorted(registry, key=lambda t: t.name):
        schema = t.schema()
        out.append({"name": t.name, "effect": t.effect, "description": t.description,
                    "arguments": schema.get("properties", {}), "required": schema.get("required", [])})
    return out


def planning_messages(request: str, registry: Registry, policy_text: str = "") -> list[Message]:
    system = INSTRUCTIONS + "\n\nTools:\n" + json.dumps(catalog(registry), indent=1)
    if policy_text:
        system += "\n\nPolicy:\n" + policy_text
    return [Message("system", system), Message("user", request)]


class Planner:
    """Asks a model for a plan and repairs what it answers, at most ``max_repairs`` times."""

    def __init__(self, model: Model, registry: Registry, *, max_repairs: int = 3, policy_text: str = "") -> None:
        self.model = model
        self.registry = registry
        self.max_repairs = max_repairs
        self.policy_text = policy_text

    async def plan(self, request: str) -> PlanningResult:
        if not request.strip():
            raise PlanningError([], "the request is empty")
        await self.registry.start()  # the catalog shows every tool: start MCP servers now, not blocking the loop
        messages = planning_messages(request, self.registry, self.policy_text)
        return await self._converse(messages)

    async def revise(self, messages: list[Message]) -> PlanningResult:
        """Plan from a prepared conversation (replanning builds its own)."""
        return await self._converse(messages)

    async def _converse(self, base: list[Message]) -> PlanningResult:
        attempts: list[PlanAttempt] = []
        calls: list[tuple[ModelRequest, ModelResponse]] = []
        latencies: list[float] = []
        messages = base
        for _ in range(self.max_repairs + 1):
            request = ModelRequest(tuple(messages), schema=PLAN_SCHEMA)
            started = time.perf_counter()  # latency is measured, not scheduled: real time, also under a fake clock
            try:
                response = await self.model.complete(request)
            except CharterError as exc:
                if not attempts:
                    raise  # nothing to add: the error says it all
                raise PlanningError(attempts, f"the model call for repair {len(attempts)} failed: {exc}") from exc
            latencies.append(time.perf_counter() - started)
            calls.append((request, response))
            plan, problems = self.check(response.text)
            attempts.append(PlanAttempt(response.text, problems))
            if plan is not None:
                return PlanningResult(plan, attempts, calls, latencies)
            # Only the last answer and its problems: earlier answers would make each repair longer
            # than the one before, until a small model's context overflows.
            messages = [*base, Message("assistant", response.text), Message("user", repair_prompt(problems))]
        raise PlanningError(attempts)

    def check(self, answer: str) -> tuple[Plan | None, list[str]]:
        """The plan in ``answer``, or what is wrong with it."""
        try:
            data = parse_plan_text(_strip_fences(answer), "answer")
        except PlanError as exc:
            return None, [str(p) for p in exc.problems]
        if isinstance(data, dict) and isinstance(data.get("plan"), dict):
            data = data["plan"]  # a common wrapping
        try:
            return Plan.from_dict(data, self.registry), []
        except PlanError as exc:
            return None, [str(p) for p in exc.problems]


def repair_prompt(problems: list[str]) -> str:
    listed = "\n".join(f"- {p}" for p in problems[:SHOWN_PROBLEMS])
    if len(problems) > SHOWN_PROBLEMS:
        listed += f"\n- … and {len(problems) - SHOWN_PROBLEMS} more like these"
    return f"That plan cannot be used:\n{listed}\nAnswer with the whole corrected plan as JSON only."


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        if stripped.rstrip().endswith("```"):
            stripped = stripped.rstrip()[:-3]
    return stripped
