"""Reviewing a plan in the terminal: show it, then approve, edit or reject it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape

from ..errors import PlanError
from ..plan.model import Plan, parse_plan_text
from ..planning.writes import write_steps
from ..tools import Registry


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
