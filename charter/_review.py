"""Reviewing a plan in the terminal: show it, then approve, edit or reject it."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape

from .errors import PlanError
from .plan import Plan, parse_plan_text
from .refs import has_refs
from .tools import Registry
from .workspace import Policy


def write_steps(plan: Plan, registry: Registry) -> list[str]:
    """The steps that may change the world: a ``write`` tool, or an agent allowed one."""
    out = []
    for s in plan.steps:
        names = [s.tool] if s.kind == "tool" else list(s.args.get("tools", ())) if s.kind == "agent" else []
        if any((t := registry.get(n)) is not None and t.effect == "write" for n in names):
            out.append(s.id)
    return out


def writes_needing_review(plan: Plan, registry: Registry, policy: Policy) -> list[str]:
    """The write steps that ``policy`` does not allow as they stand (so a person must review the plan).

    A target that comes from another step's output (``${...}``) is not known
    yet, so the step needs review unless the rule allows the tool everywhere;
    an agent step needs a rule without a target for each write tool it may call.
    """
    out = []
    for s in plan.steps:
        if s.id not in write_steps(plan, registry):
            continue
        if s.kind == "agent":
            tools = [t for n in s.args.get("tools", ()) if (t := registry.get(n)) is not None and t.effect == "write"]
            if not all(any(r.target is None and fnmatch.fnmatchcase(t.name, r.tool) for r in policy.allow)
                       for t in tools):
                out.append(s.id)
            continue
        tool = registry.get(s.tool)
        if tool is None:
            continue
        args = s.args
        if s.for_each is not None or any(has_refs(args.get(n)) for n in tool.target):
            args = {k: v for k, v in args.items() if k not in tool.target}  # targets not known until it runs
        if not policy.allows(tool, args):
            out.append(s.id)
    return out


def show_plan(console: Console, plan: Plan, registry: Registry, *, title: str = "Plan") -> None:
    """The plan as a reviewer needs it: goal, assumptions, then each step with what it does, with what, and why."""
    writes = set(write_steps(plan, registry))
    console.print(f"[bold]{escape(title)}:[/] {escape(plan.goal)}")
    if plan.assumptions:
        console.print("[bold]Assumptions[/]")
        for a in plan.assumptions:
            console.print(f"  - {escape(a)}")
    console.print("[bold]Steps[/]")
    for i, s in enumerate(plan.steps, 1):
        if s.kind == "tool":
            does = escape(s.tool)
        else:
            does = f"[magenta]{s.kind}[/] {escape(str(s.args.get('model', '')))}".rstrip()
        line = f"  {i}. [bold]{escape(s.id)}[/]  {does}"
        if s.id in writes:
            line += "  [bold red]⚠ WRITE[/]"
        if s.for_each:
            line += f"  [dim]for each {escape(s.for_each)}[/]"
        if s.deps:
            line += f"  [dim]after {', '.join(s.deps)}[/]"
        console.print(line)
        if s.why:
            console.print(f"     [dim]why:[/] {escape(s.why)}")
        for name, value in s.args.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            text = text if len(text) <= 300 else text[:299] + "…"
            console.print(f"     [dim]{escape(name)}:[/] {escape(text)}")
    if writes:
        many = len(writes) > 1
        console.print(f"[bold red]⚠[/] {len(writes)} step{'s' if many else ''} change{'' if many else 's'} the world: "
                      f"{', '.join(sorted(writes))}")


def plan_yaml(plan: Plan) -> str:
    return yaml.safe_dump(plan.to_json(), sort_keys=False, allow_unicode=True, width=100)


def edit_plan(plan: Plan, registry: Registry, console: Console) -> Plan | None:
    """Open the plan in ``$EDITOR`` until it is valid again, or the editor leaves it empty (None)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    text = plan_yaml(plan)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.yaml"
        while True:
            path.write_text(text, encoding="utf-8")
            subprocess.run([*shlex.split(editor), str(path)], check=False)
            text = path.read_text(encoding="utf-8")
            if not text.strip():
                return None
            try:
                return Plan.from_dict(parse_plan_text(text, "edited plan"), registry, source="edited plan")
            except PlanError as exc:
                console.print(f"[red]{escape(str(exc))}[/]")
                answer = console.input("Edit again? [Y/n] ").strip().lower()
                if answer in ("n", "no"):
                    return None
                text = "# " + "\n# ".join(str(exc).splitlines()) + "\n" + text
