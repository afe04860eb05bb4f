"""A run's budget: the limits it may be given, and which one it has used up.

A run that reaches its budget is paused by :func:`~charter.engine.rules.advance`
(raise the limit and resume it to go on). Imports the state only.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...errors import ConfigError
from .state import RunState

BUDGET_KEYS = ("tokens", "cost", "seconds", "steps")


def check_budget(budget: Mapping[str, float] | None) -> dict[str, float]:
    """The budget's limits as floats; a :class:`~charter.errors.ConfigError` for an unknown or non-positive one."""
    out = {}
    for key, value in (budget or {}).items():
        if key not in BUDGET_KEYS:
            raise ConfigError(f"unknown budget limit {key!r} (known: {', '.join(BUDGET_KEYS)})")
        if value <= 0:
            raise ConfigError(f"budget limit {key} must be positive, not {value}")
        out[key] = float(value)
    return out


def over_budget(state: RunState, now: float) -> str:
    """Which limit of the run's budget is used up, in words ("" if none)."""
    b = state.budget
    if "tokens" in b and state.tokens >= b["tokens"]:
        return f"{state.tokens} tokens used of {b['tokens']:g}"
    if "cost" in b and state.cost >= b["cost"]:
        return f"${state.cost:.4f} spent of ${b['cost']:g}"
    if "seconds" in b and state.approved_at is not None and now - state.approved_at >= b["seconds"]:
        return f"{now - state.approved_at:.0f}s elapsed of {b['seconds']:g}s"
    if "steps" in b and state.attempts >= b["steps"]:
        return f"{state.attempts} attempts started of {b['steps']:g}"
    return ""
