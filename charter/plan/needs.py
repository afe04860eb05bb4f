"""What a plan needs before any of its steps runs: a model for its ``llm`` and ``agent`` steps.

Checked by validation, by ``run`` and by whoever takes over a run (resume,
retry, approve), so a run does not execute its first steps only to fail at
the first step that asks a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..errors import ConfigError, PlanError, Problem
from ..models import Model, check_spec
from .model import Plan
from .refs import has_refs


def model_problems(plan: Plan, model: Model | None = None, env: Mapping[str, str] | None = None, *,
                   steps: Iterable[str] | None = None) -> list[Problem]:
    """Why the plan's ``llm`` and ``agent`` steps (or those of ``steps``) would find no model when
    they run (empty if they would): a step's own ``model``, else ``model``, else ``$CHARTER_MODEL``.
    Nothing is built or called."""
    problems: list[Problem] = []
    only = None if steps is None else set(steps)
    for i, step in enumerate(plan.steps):
        if step.kind not in ("llm", "agent") or (only is not None and step.id not in only):
            continue
        spec = step.args.get("model")
        if spec and has_refs((step.args_template or {}).get("model")):
            continue  # chosen by a reference (an input, an earlier output): known only when the step runs
        if spec:
            try:
                check_spec(str(spec), env)
            except ConfigError as exc:
                problems.append(Problem(f"steps[{i}].{step.kind}.model", str(exc)))
        elif model is None:
            try:
                check_spec(None, env)
            except ConfigError as exc:
                why: object = exc
                if "no model chosen" in str(exc):
                    why = ("none is chosen: pass --model or set CHARTER_MODEL=provider:model (for example "
                           "openai:gpt-4o-mini), or name one in the step (model: provider:model)")
                problems.append(Problem(f"steps[{i}].{step.kind}", f"an {step.kind} step needs a model, and {why}"))
    return problems


def require_models(plan: Plan, model: Model | None = None, source: str | None = None, *,
                   steps: Iterable[str] | None = None) -> None:
    """Raise :class:`PlanError` naming every step that would find no model, before anything runs."""
    problems = model_problems(plan, model, steps=steps)
    if problems:
        raise PlanError(problems, source)
