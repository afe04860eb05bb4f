"""Commands that need no store: validate a plan, list the tools."""

from __future__ import annotations

import json

import typer

from ..errors import CharterError, PlanError
from .shared import JsonOpt, PlanArg, StepModelOpt, ToolsOpt, command, fail, open_app, out


@command()
async def validate(
    plan: PlanArg,
    tools: ToolsOpt = None,
    model: StepModelOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check a plan without running it: every problem, with where it is."""
    from .console import counted

    charter = open_app(":memory:", tools, with_workspace=True, mode="rwc", model=model)
    try:
        loaded = await charter.load_plan(plan)
    except PlanError as exc:
        if not json_out:
            raise fail(exc) from None
        problems = [{"where": p.where, "message": p.message} for p in exc.problems]
        out.print_json(json.dumps({"plan": str(plan), "valid": False, "problems": problems}))
        raise typer.Exit(2) from None
    except CharterError as exc:
        raise fail(exc) from None
    writes = [s.id for s in loaded.steps if (t := charter.registry.get(s.tool)) and t.effect == "write"]
    if json_out:
        out.print_json(json.dumps({"plan": str(plan), "valid": True, "steps": [s.id for s in loaded.steps],
                                   "write_steps": writes}))
        return
    out.print(f"[green]✓[/] {plan}: {counted(len(loaded.steps), 'step')}, valid"
              + (f"; write steps: {', '.join(writes)}" if writes else ""))


@command("tools")
async def tools_cmd(
    tools: ToolsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the tools in files or modules: name, effect, arguments, description."""
    charter = open_app(":memory:", tools, with_workspace=True, mode="rwc")
    try:
        listed = await charter.tools()
    except CharterError as exc:
        raise fail(exc) from None
    catalog = [{"name": t.name, "effect": t.effect, "description": t.description,
                "args": t.schema().get("properties", {}), "required": t.required_args()}
               for t in listed]
    if json_out:
        out.print_json(json.dumps(catalog))
        return
    if not catalog:
        out.print("no tools loaded: pass --tools FILE|MODULE, or list tools and MCP servers in charter.yaml")
        return
    for t in catalog:
        args = ", ".join(f"{k}{'' if k in t['required'] else '?'}" for k in t["args"])
        summary = t["description"].splitlines()[0] if t["description"] else ""
        out.print(f"[bold]{t['name']}[/]({args}) [dim]{t['effect']}[/]  {summary}")
