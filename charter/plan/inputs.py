"""A run's inputs, checked where the plan uses them before the run exists.

A literal argument of the wrong type is a plan problem found when the plan is
loaded; an input is only known when a run starts. This checks each input
against the places it flows into (``${inputs.x}`` as a tool argument, a
``for_each`` list, a field path), so that ``-i n=abc`` for an ``int`` argument
is refused before anything runs instead of failing the step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, Problem
from .refs import Ref, ResolveError, refs_in, render

if TYPE_CHECKING:
    from ..tools import Registry
    from .model import Plan


def check_inputs(plan: Plan, inputs: Mapping[str, Any] | None = None,
                 registry: Registry | None = None) -> dict[str, Any]:
    """A run's inputs: the plan's defaults with ``inputs`` over them, checked before anything runs.

    Every input must be declared and JSON data; every ``${inputs...}`` must lead
    to a value; a ``for_each`` over an input needs a list; and an argument built
    from inputs alone is checked against its tool's schema (with ``registry``),
    like any literal argument. Raises :class:`~charter.ConfigError` naming each
    problem and where the input goes.
    """
    values = declared_inputs(plan, inputs)
    problems = _problems(plan, values, registry)
    if len(problems) == 1:
        raise ConfigError(str(problems[0]))
    if problems:
        raise ConfigError("invalid inputs:\n" + "\n".join(f"  - {p}" for p in problems))
    return values


def declared_inputs(plan: Plan, inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The plan's defaults with ``inputs`` over them; every input must be declared, and JSON data."""
    given = dict(inputs or {})
    unknown = sorted(set(given) - set(plan.inputs))
    if unknown:
        declared = ", ".join(sorted(plan.inputs)) or "none"
        raise ConfigError(f"unknown input(s) {', '.join(unknown)} (the plan declares: {declared})")
    values = {**plan.inputs, **given}
    try:
        json.dumps(values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"inputs must be JSON data: {exc}") from None
    return values


def _problems(plan: Plan, values: Mapping[str, Any], registry: Registry | None) -> list[Problem]:
    """Where the inputs go and do not fit: each problem names the input(s) and the place they go to."""
    problems: list[Problem] = []

    def lookup(root: str) -> Any:
        return values  # only ``inputs`` references are resolved here

    def inputs_of(refs: list[Ref]) -> str:
        names = list(dict.fromkeys(str(r.path[0]) for r in refs if r.path))
        return ("input " if len(names) == 1 else "inputs ") + ", ".join(names)

    for i, step in enumerate(plan.steps):
        where = f"steps[{i}]"
        if step.for_each_ref is not None and step.for_each_ref.root == "inputs":
            ref = step.for_each_ref
            try:
                items = ref.resolve(lookup)
            except ResolveError as exc:
                problems.append(Problem(inputs_of([ref]), f"{exc} (at {where}.for_each)"))
            else:
                if not isinstance(items, list):
                    problems.append(Problem(inputs_of([ref]), f"{_short(items)} is not a list, and "
                                            f"{where}.for_each iterates over it"))
        tool = registry.get(step.tool) if registry is not None and step.kind == "tool" else None
        for name, template in (step.args_template or {}).items():
            refs = list(refs_in(template))
            at = f"{where}.args.{name}" if step.kind == "tool" else f"{where}.{step.kind}.{name}"
            if not refs or any(r.root != "inputs" for r in refs):
                # Built from other steps' outputs too: checked when the step starts.
                for ref in (r for r in refs if r.root == "inputs"):
                    try:
                        ref.resolve(lookup)
                    except ResolveError as exc:
                        problems.append(Problem(inputs_of([ref]), f"{exc} (at {at})"))
                continue
            try:
                value = render(template, lookup)
            except ResolveError as exc:
                problems.append(Problem(inputs_of(refs), f"{exc} (at {at})"))
                continue
            if tool is None or not tool.has_arg(name):
                continue
            for p in tool.check_arg(name, value):
                target = f"{where}.args.{p.where}"
                problems.append(Problem(inputs_of(refs), f"{_short(value)} does not fit {target} of tool "
                                        f"{tool.name!r}: {p.message}"))
    return problems


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:59] + "…"
