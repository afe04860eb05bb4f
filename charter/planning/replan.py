"""Replanning: when steps fail for good, the planner revises the rest of the plan.

The planner sees the request, the plan, what finished (outputs summarised),
what failed and why, and proposes a revised plan. Finished steps are kept as
they are: they never run again, and new steps may use their outputs. A revision
that adds write steps goes back to review; the number of revisions is bounded
by the run's ``max_replans``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from ..engine.rules import FAILED, SKIPPED, SUCCEEDED, RunState
from ..errors import PlanError
from ..models.base import Message, Model
from ..plan.diff import plan_diff
from ..plan.model import Plan
from ..tools import Registry
from .planner import Planner, PlanningResult, planning_messages
from .writes import write_steps


@dataclass
class Revision:
    plan: Plan
    result: PlanningResult
    diff: str
    needs_review: bool


def summarise(value: Any, limit: int = 400) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def replan_messages(state: RunState, registry: Registry) -> list[Message]:
    """The conversation that asks for a revised plan."""
    base = planning_messages(state.request or state.plan.goal, registry)
    lines = [f"The request was: {state.request or state.plan.goal}", "",
             f"This plan (version {state.plan_version}) did not work out:", _yaml(state.plan), ""]
    done = [s for s in state.plan.steps if state.steps[s.id].status == SUCCEEDED]
    if done:
        lines.append("These steps finished; they will not run again, and new steps may reference their outputs:")
        lines += [f"- {s.id}: {summarise(state.steps[s.id].output)}" for s in done]
    for s in state.plan.steps:
        st = state.steps[s.id]
        if st.status == FAILED:
            lines.append(f"Step {s.id} failed for good: {(st.error or {}).get('message', '')}")
        elif st.status == SKIPPED:
            lines.append(f"Step {s.id} did not run ({st.reason}).")
    lines += ["", "Propose the whole revised plan as JSON. Keep the finished steps with the same ids; "
              "change or replace what failed and what depends on it. Do not repeat finished work."]
    return [base[0], Message("user", "\n".join(lines))]


def merge(state: RunState, proposed: Plan, registry: Registry) -> Plan:
    """The revised plan: the finished steps as they were, then the proposal's other steps."""
    kept = [s.to_json() for s in state.plan.steps if state.steps[s.id].status == SUCCEEDED]
    kept_ids = {s["id"] for s in kept}
    new = [s.to_json() for s in proposed.steps if s.id not in kept_ids]
    data = proposed.to_json()
    data["steps"] = kept + new
    data.setdefault("inputs", {}).update(state.plan.inputs)
    return Plan.from_dict(data, registry)


def adds_writes(old: Plan, new: Plan, registry: Registry) -> bool:
    """Whether ``new`` has a write step (or an agent allowed a write tool) that ``old`` did not."""

    before = {(s.id, json.dumps(s.to_json(), sort_keys=True)) for s in old.steps if s.id in write_steps(old, registry)}
    return any((s.id, json.dumps(s.to_json(), sort_keys=True)) not in before
               for s in new.steps if s.id in write_steps(new, registry))


class _RevisingPlanner(Planner):
    """A planner whose answers are checked once merged with the finished steps."""

    def __init__(self, state: RunState, model: Model, registry: Registry, max_repairs: int) -> None:
        super().__init__(model, registry, max_repairs=max_repairs)
        self.state = state

    def check(self, answer: str) -> tuple[Plan | None, list[str]]:
        plan, problems = super().check(answer)
        if plan is None:
            return None, problems
        try:
            return merge(self.state, plan, self.registry), []
        except PlanError as exc:
            return None, [str(p) for p in exc.problems]


async def revise(state: RunState, registry: Registry, model: Model, max_repairs: int = 2) -> Revision:
    """Ask the planner for a revised plan of what is left; check it as a whole."""
    planner = _RevisingPlanner(state, model, registry, max_repairs)
    await registry.start()  # the catalog shows every tool: start MCP servers now, not blocking the loop
    result = await planner.revise(replan_messages(state, registry))
    return Revision(result.plan, result, plan_diff(state.plan.to_json(), result.plan.to_json(), state.plan_version),
                    adds_writes(state.plan, result.plan, registry))


def _yaml(plan: Plan) -> str:
    return yaml.safe_dump(plan.to_json(), sort_keys=False, allow_unicode=True, width=100)
