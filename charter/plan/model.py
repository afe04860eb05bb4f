"""Plans: a goal, its assumptions, and steps forming a DAG.

A plan comes from a YAML or JSON file, a dict, or code. :func:`load_plan`
checks it whole and raises one :class:`~charter.PlanError` that lists every
problem with where it is, rather than stopping at the first. The file's format
is :mod:`.spec`; this module compiles it: references, dependencies, cycles,
tools and their arguments (against a tool registry, if given).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from ..errors import PlanError, Problem
from ..retry import RetryPolicy
from ..tools import Registry
from .refs import Ref, RefSyntaxError, compile_template, has_refs, refs_in
from .spec import (
    ID_PATTERN,
    ID_RULE,
    RESERVED_ROOTS,
    STEP_KINDS,
    PlanSpec,
    StepSpec,
    parse_plan_text,
    pydantic_problems,
    schema_problems,
)

__all__ = ["ID_RULE", "Plan", "Step", "load_plan", "parse_plan_text", "plan_to_text"]


@dataclass(frozen=True)
class Step:
    """One node of a plan: a tool call, or a model call (``kind="llm"``), whose arguments may
    reference earlier outputs. For an ``llm`` step, ``args`` holds its prompt, system prompt,
    output schema and model."""

    id: str
    tool: str
    kind: str = "tool"
    title: str = ""
    why: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    for_each: str | None = None
    retry: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    concurrency: int | None = None
    check: str | None = None
    # derived
    deps: tuple[str, ...] = ()
    args_template: Any = None
    for_each_ref: Ref | None = None
    constant_args: bool = True

    def tool_names(self) -> list[str]:
        """The tools this step may call: its tool, or the tools its agent may use."""
        if self.kind == "tool":
            return [self.tool]
        return list(self.args.get("tools", ())) if self.kind == "agent" else []

    def retry_policy(self, base: RetryPolicy) -> RetryPolicy:
        return base.merged(dict(self.retry)) if self.retry else base

    def to_json(self) -> dict[str, Any]:
        """The step as a plan file writes it: fields left at their defaults are left out."""
        out: dict[str, Any] = {"id": self.id}
        if self.title:
            out["title"] = self.title
        if self.why:
            out["why"] = self.why
        if self.kind != "tool":
            out[self.kind] = dict(self.args)
        else:
            out["tool"] = self.tool
            if self.args:
                out["args"] = dict(self.args)
        if self.needs:
            out["needs"] = list(self.needs)
        if self.for_each is not None:
            out["for_each"] = self.for_each
        if self.retry:
            out["retry"] = dict(self.retry)
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.concurrency is not None:
            out["concurrency"] = self.concurrency
        if self.check is not None:
            out["check"] = self.check
        return out


@dataclass(frozen=True)
class Plan:
    """A validated plan. Build one with :func:`load_plan` or :meth:`Plan.from_dict`."""

    goal: str
    steps: tuple[Step, ...]
    assumptions: tuple[str, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=dict)
    output: Any = None
    # derived
    by_id: Mapping[str, Step] = field(default_factory=dict, compare=False)
    dependents: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    output_template: Any = None

    @classmethod
    def from_dict(
        cls, data: Any, registry: Registry | None = None, *, source: str | None = None
    ) -> Plan:
        """Check and compile a plan. With a registry, tools and arguments are checked too."""
        return _compile(data, registry, source)

    def to_json(self) -> dict[str, Any]:
        """The plan as a plan file writes it: fields left at their defaults are left out."""
        out: dict[str, Any] = {"goal": self.goal}
        if self.assumptions:
            out["assumptions"] = list(self.assumptions)
        if self.inputs:
            out["inputs"] = dict(self.inputs)
        out["steps"] = [s.to_json() for s in self.steps]
        if self.output is not None:
            out["output"] = self.output
        return out

    def downstream(self, step_id: str) -> list[str]:
        """``step_id`` and every step that depends on it, directly or not, in plan order."""
        seen = {step_id}
        stack = [step_id]
        while stack:
            for d in self.dependents.get(stack.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        return [s.id for s in self.steps if s.id in seen]

    def upstream(self, step_id: str) -> list[str]:
        """Every step that ``step_id`` depends on, directly or not, in plan order."""
        seen: set[str] = set()
        stack = list(self.by_id[step_id].deps)
        while stack:
            s = stack.pop()
            if s not in seen:
                seen.add(s)
                stack.extend(self.by_id[s].deps)
        return [s.id for s in self.steps if s.id in seen]

    def sinks(self) -> list[str]:
        """Steps nothing depends on: by default, the run's output."""
        return [s.id for s in self.steps if not self.dependents.get(s.id)]


def load_plan(source: str | Path, registry: Registry | None = None) -> Plan:
    """Read a plan from a YAML or JSON file and check it (against ``registry`` if given)."""
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError([Problem("", f"file not found: {path}")], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError([Problem("", f"cannot read {path}: {exc}")], str(path)) from None
    return Plan.from_dict(parse_plan_text(text, str(path)), registry, source=str(path))


def _compile(data: Any, registry: Registry | None, source: str | None) -> Plan:
    try:
        return _compile_checked(data, registry, source)
    except RecursionError:
        raise PlanError([Problem("", "nested too deeply")], source) from None


def _compile_checked(data: Any, registry: Registry | None, source: str | None) -> Plan:
    if isinstance(data, Plan):
        data = data.to_json()
    try:
        json.dumps(data)
    except (TypeError, ValueError) as exc:  # a YAML date, a set, bytes: nothing the log could keep
        raise PlanError([Problem("", f"a plan holds JSON data only: {exc}")], source) from None
    if not isinstance(data, dict):
        raise PlanError([Problem("", "a plan must be a mapping with 'goal' and 'steps'")], source)
    problems: list[Problem] = []
    try:
        spec = PlanSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        raise PlanError(pydantic_problems(exc, ""), source) from None

    steps: list[tuple[int, StepSpec]] = []  # with its place in the file, which problems name
    ids: dict[str, int] = {}
    known_ids: set[str] = set()  # ids of steps that failed other checks, to avoid cascades
    for i, raw in enumerate(spec.steps):
        where = f"steps[{i}]"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            known_ids.add(raw["id"])
        try:
            st = StepSpec.model_validate(raw)
        except pydantic.ValidationError as exc:
            problems.extend(pydantic_problems(exc, where))
            continue
        # Duplicates first, whatever the id looks like: a second step must never stand in for the first.
        if st.id in ids:
            problems.append(Problem(f"{where}.id", f"duplicate id {st.id!r} (first at steps[{ids[st.id]}])"))
            continue
        if not ID_PATTERN.match(st.id):
            problems.append(Problem(f"{where}.id", f"{st.id!r} is not a valid id ({ID_RULE})"))
        elif st.id in RESERVED_ROOTS:
            problems.append(Problem(f"{where}.id", f"{st.id!r} is reserved"))
        ids[st.id] = i
        steps.append((i, st))
    if not spec.steps:
        problems.append(Problem("steps", "a plan needs at least one step"))

    compiled: list[Step] = []
    for i, st in steps:
        where = f"steps[{i}]"
        step, step_problems = _compile_step(st, where, ids, known_ids, set(spec.inputs), registry)
        problems.extend(step_problems)
        compiled.append(step)

    by_id = {s.id: s for s in compiled}
    cycle = _find_cycle(compiled, by_id)
    if cycle:
        problems.append(Problem(f"steps[{ids[cycle[0]]}]", "cycle: " + " -> ".join(cycle)))

    output_template: Any = None
    if spec.output is not None:
        try:
            output_template = compile_template(spec.output)
        except RefSyntaxError as exc:
            problems.append(Problem("output", str(exc)))
        else:
            for ref in refs_in(output_template):
                if ref.root not in ids and ref.root != "inputs":
                    problems.append(Problem("output", f"{ref.text}: unknown step {ref.root!r}"))

    if problems:
        raise PlanError(sorted(problems, key=_problem_order), source)
    dependents: dict[str, list[str]] = {s.id: [] for s in compiled}
    for s in compiled:
        for d in s.deps:
            dependents[d].append(s.id)
    return Plan(
        goal=spec.goal,
        steps=tuple(compiled),
        assumptions=tuple(spec.assumptions),
        inputs=dict(spec.inputs),
        output=spec.output,
        by_id=by_id,
        dependents={k: tuple(v) for k, v in dependents.items()},
        output_template=output_template,
    )


def _compile_step(
    st: StepSpec,
    where: str,
    ids: Mapping[str, int],
    known_ids: set[str],
    inputs: set[str],
    registry: Registry | None,
) -> tuple[Step, list[Problem]]:
    problems: list[Problem] = []
    deps: list[str] = []

    def check_ref(ref: Ref, at: str) -> None:
        if ref.root == "item":
            if st.for_each is None:
                problems.append(Problem(at, f"{ref.text}: 'item' is only defined in a for_each step"))
        elif ref.root == "inputs":
            if not ref.path or not isinstance(ref.path[0], str) or ref.path[0] not in inputs:
                name = ref.path[0] if ref.path else ""
                message = f"{ref.text}: unknown input {name!r} (declare it under 'inputs')"
                problems.append(Problem(at, message))
        elif ref.root == st.id:
            problems.append(Problem(at, f"{ref.text}: a step cannot reference itself"))
        elif ref.root not in ids:
            if ref.root not in known_ids:
                problems.append(Problem(at, f"{ref.text}: unknown step {ref.root!r}"))
        elif ref.root not in deps:
            deps.append(ref.root)

    for need in st.needs:
        if need == st.id:
            problems.append(Problem(f"{where}.needs", "a step cannot need itself"))
        elif need not in ids:
            if need not in known_ids:
                problems.append(Problem(f"{where}.needs", f"unknown step {need!r}"))
        elif need not in deps:
            deps.append(need)

    for_each_ref: Ref | None = None
    if st.for_each is not None:
        try:
            template = compile_template(st.for_each)
        except RefSyntaxError as exc:
            problems.append(Problem(f"{where}.for_each", str(exc)))
        else:
            if not isinstance(template, Ref):
                problems.append(Problem(f"{where}.for_each", "must be one reference, like ${list_files}"))
            elif template.root == "item":
                problems.append(Problem(f"{where}.for_each", "cannot iterate over 'item'"))
            else:
                for_each_ref = template
                check_ref(template, f"{where}.for_each")

    args = st.args
    kind = next(k for k in STEP_KINDS if getattr(st, k) is not None)
    if st.llm is not None:
        args = st.llm.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
        args["prompt"] = st.llm.prompt
    elif st.agent is not None:
        args = st.agent.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
        args.update(prompt=st.agent.prompt, tools=list(st.agent.tools))
    elif st.approval is not None:
        args = st.approval.model_dump(exclude_none=True)
    args_template: dict[str, Any] = {}
    for name, value in args.items():
        at = f"{where}.args.{name}" if kind == "tool" else f"{where}.{kind}.{name}"
        if kind in ("llm", "agent") and name in ("schema", "tools"):
            args_template[name] = value  # a schema is data: "$ref" and friends are not references
            continue
        try:
            args_template[name] = compile_template(value)
        except RefSyntaxError as exc:
            problems.append(Problem(at, str(exc)))
            continue
        for ref in refs_in(args_template[name]):
            check_ref(ref, at)

    spec = st.llm or st.agent
    if spec is not None and spec.schema_ is not None:
        problems.extend(Problem(f"{where}.{kind}.schema", m) for m in schema_problems(spec.schema_))
    if st.agent is not None and registry is not None:
        for i, name in enumerate(st.agent.tools):
            if name not in registry:
                known = ", ".join(registry.names()) or "none loaded"
                problems.append(Problem(f"{where}.agent.tools[{i}]", f"unknown tool {name!r} (known: {known})"))
    elif registry is not None and st.tool is not None:
        tool = registry.get(st.tool)
        if tool is None:
            known = ", ".join(registry.names()) or "none loaded"
            problems.append(Problem(f"{where}.tool", f"unknown tool {st.tool!r} (known: {known})"))
        else:
            for name in tool.required_args():
                if name not in st.args:
                    message = f"missing required argument of tool {tool.name!r}"
                    problems.append(Problem(f"{where}.args.{name}", message))
            for name, template in args_template.items():
                if not tool.has_arg(name):
                    message = f"tool {tool.name!r} has no argument {name!r}"
                    problems.append(Problem(f"{where}.args.{name}", message))
                elif not has_refs(template):
                    for p in tool.check_arg(name, template):
                        problems.append(Problem(f"{where}.args.{p.where}", p.message))

    # A step with problems is still returned, so that cycles through it are found too.
    retry = st.retry.model_dump(exclude_none=True) if st.retry else {}
    return (
        Step(
            id=st.id,
            tool=st.tool or "",
            kind=kind,
            title=st.title,
            why=st.why,
            args=args,
            needs=tuple(st.needs),
            for_each=st.for_each,
            retry=retry,
            timeout=st.timeout,
            concurrency=st.concurrency,
            check=st.check,
            deps=tuple(deps),
            args_template=args_template,
            for_each_ref=for_each_ref,
            constant_args=not has_refs(args_template),
        ),
        problems,
    )


def _problem_order(p: Problem) -> tuple[int, int]:
    """Problems in plan order: the plan's own fields first, then step by step."""
    m = re.match(r"steps\[(\d+)\]", p.where)
    return (1, int(m.group(1))) if m else (0, 0)


def _find_cycle(steps: list[Step], by_id: Mapping[str, Step]) -> list[str] | None:
    """A dependency cycle as a path (``a -> b -> a``), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for start in steps:
        if state.get(start.id):
            continue
        stack: list[tuple[str, int]] = [(start.id, 0)]
        path: list[str] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                state[node] = 1
                path.append(node)
            deps = [d for d in by_id[node].deps if d in by_id]
            if i < len(deps):
                stack.append((node, i + 1))
                nxt = deps[i]
                if state.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    return list(reversed(cycle))
                if not state.get(nxt):
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def plan_to_text(plan: Plan) -> str:
    """The plan as pretty JSON (for diffs and saving)."""
    return json.dumps(plan.to_json(), indent=2)
