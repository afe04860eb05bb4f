"""Commands about plans and decisions: plan and do (a request becomes a plan, reviewed), the demo,
approve and reject (a plan in review, or an approval step)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..app import Charter, make_registry, plan_request
from ..errors import CharterError
from ..models import Model, model_from_spec
from ..planning.planner import PlanningResult
from ..tools import Registry
from .drive import drive, run_to_end
from .runs import submitted
from .shared import (
    EXIT,
    ConcOpt,
    DbOpt,
    JsonOpt,
    MaxCost,
    MaxSteps,
    MaxTime,
    MaxTokens,
    ModelOpt,
    RequestArg,
    RunArg,
    RunToolsOpt,
    StepModelOpt,
    ToolsOpt,
    budget_of,
    command,
    err,
    fail,
    open_app,
    out,
    user,
    workspace,
)

REVIEW_CHOICES = escape("[a]pprove / [e]dit / [r]eject")  # brackets shown as typed, not read as markup


async def make_plan(request: str, registry: Registry, model_spec: str | None) -> tuple[PlanningResult, Model]:
    """Plan ``request`` with the chosen model, showing what happens; exit 2 on failure.

    Returns the planning result and the model, for the run's steps to go on with (a
    scripted model then gives the steps the answers after the plan's). No store is
    opened: a request that cannot be planned leaves none behind.
    """

    def retrying(notice: Any) -> None:  # a wait is never silent
        err.print(f"[yellow]{escape(str(notice))}[/]", soft_wrap=True)

    try:
        model = model_from_spec(model_spec)
        where = getattr(model, "base_url", None)
        err.print(f"[dim]planning with {model.name}{f' at {where}' if where else ''}…[/]", soft_wrap=True)
        return await plan_request(request, registry, model, on_retry=retrying), model
    except CharterError as exc:
        raise fail(exc) from None


@command("plan")
async def plan_cmd(
    request: RequestArg,
    tools: ToolsOpt = None,
    model: ModelOpt = None,
    save: Annotated[Path | None, typer.Option("--save", metavar="FILE",
                                              help="Write the plan to this new YAML file.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Turn a request into a plan and show it (nothing runs). `charter run FILE` runs a saved plan."""
    from .review import plan_yaml, show_plan

    if save is not None and save.exists():  # said before the model is asked, and nothing is overwritten
        raise fail(ValueError(f"{save} exists: give --save a new file (Charter does not overwrite it)"))
    try:
        registry = make_registry(tools or None, workspace())
    except CharterError as exc:
        raise fail(exc) from None
    result, _ = await make_plan(request, registry, model)
    if json_out:
        out.print_json(json.dumps(result.plan.to_json()))
    else:
        show_plan(out, result.plan, registry)
    if save is not None:
        try:
            with save.open("x", encoding="utf-8") as f:
                f.write(plan_yaml(result.plan))
        except OSError as exc:
            raise fail(ValueError(f"cannot save the plan to {save}: {exc.strerror or exc}")) from None
        err.print(f"saved to {save}; run it with: charter run {save}" + "".join(f" -t {s}" for s in tools or []))


@command("do")
async def do_cmd(
    request: RequestArg,
    tools: ToolsOpt = None,
    model: ModelOpt = None,
    db: DbOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve the plan without asking.")] = False,
    auto_approve: Annotated[
        str | None, typer.Option(metavar="never|reads|policy",
                                 help="'never' always asks; 'reads' approves plans that only read; 'policy' also "
                                 "plans whose writes the workspace policy allows (default: the policy's "
                                 "'approve', else never).")
    ] = None,
    concurrency: ConcOpt = 100,
    json_out: JsonOpt = False,
    max_tokens: MaxTokens = None,
    max_cost: MaxCost = None,
    max_time: MaxTime = None,
    max_steps: MaxSteps = None,
    max_replans: Annotated[int, typer.Option(metavar="N", min=0, help="Revised plans the planner may propose "
                                             "when steps fail for good.")] = 2,
    submit: Annotated[bool, typer.Option("--submit", help="Once approved, leave the run to the workers "
                                         "(`charter worker`) and print its id.")] = False,
) -> None:
    """Plan a request, show the plan for review (approve / edit / reject), then run it."""
    from ..planning.writes import write_steps, writes_needing_review
    from .review import edit_plan, show_plan

    policy = workspace().config.policy
    mode = auto_approve or policy.approve
    if mode not in ("reads", "never", "policy"):
        raise fail(ValueError(f"--auto-approve must be 'never', 'reads' or 'policy', not {mode!r}"))
    try:
        registry = make_registry(tools or None, workspace())
    except CharterError as exc:
        raise fail(exc) from None
    result, chosen = await make_plan(request, registry, model)
    charter = open_app(db, registry, concurrency, with_workspace=True, model=chosen, mode="rwc")
    try:
        rid = await charter.propose(request, planned=result, max_replans=max_replans,
                                    budget=budget_of(max_tokens, max_cost, max_time, max_steps), submit=submit)
    except CharterError as exc:
        raise fail(exc) from None
    plan = result.plan
    console = err if json_out else out
    show_plan(console, plan, registry, title=f"Plan for run {rid}")
    if yes:
        await charter.approve(rid, by="--yes")
    elif mode in ("reads", "policy") and not write_steps(plan, registry):
        console.print("[green]approved by policy:[/] the plan only reads")
        await charter.approve(rid, by="policy: read-only plan")
    elif mode == "policy" and not writes_needing_review(plan, registry, policy):
        console.print("[green]approved by policy:[/] the workspace policy allows every write in the plan")
        await charter.approve(rid, by="policy: " + str(workspace().path or "workspace"))
    elif not sys.stdin.isatty():
        console.print(f"Run [bold]{rid}[/] waits for review: [bold]charter approve {rid}[/] or "
                      f"[bold]charter reject {rid} --reason ...[/] (or pass --yes)")
        raise typer.Exit(3)
    else:
        # A person answers: the prompt and the editor block this loop, which has nothing else to do meanwhile.
        while True:
            answer = console.input(f"[bold]Approve this plan?[/] {REVIEW_CHOICES}: ").strip().lower()
            if answer in ("a", "approve", "y", "yes"):
                await charter.approve(rid, by="user")
                break
            if answer in ("r", "reject", "n", "no"):
                reason = console.input("Why? ").strip() or "rejected in review"
                await charter.reject(rid, by="user", reason=reason)
                console.print(f"run [bold]{rid}[/] rejected; nothing ran")
                raise typer.Exit(3)
            if answer in ("e", "edit"):
                edited = edit_plan(plan, registry, console)
                if edited is None:
                    console.print("[yellow]edit abandoned; the plan is unchanged[/]")
                    continue
                plan = edited
                await charter.revise(rid, plan, by="user", reason="edited in review")
                show_plan(console, plan, registry, title=f"Plan for run {rid} (edited)")
    if submit:
        submitted(rid, json_out, charter.location)
    await run_to_end(charter, rid, json_out)


@command()
async def demo(
    folder: Annotated[Path, typer.Option("--dir", metavar="DIR",
                                         help="Where the demo's notes, store and report go.")] = Path("charter-demo"),
) -> None:
    """A complete run, offline: a request is planned (by a scripted model), approved, and run on real files."""
    from .. import demo as scenario
    from .console import print_outcome
    from .review import show_plan

    workdir = folder.resolve()
    try:
        scenario.reset(workdir)
        notes, report_path = scenario.prepare(workdir)
    except CharterError as exc:
        raise fail(exc) from None
    except OSError as exc:
        raise fail(ValueError(f"cannot write the demo's files in {workdir}: {exc.strerror or exc}")) from None
    out.rule("[bold]Charter demo[/] (offline)")
    out.print("[yellow]The model in this demo is SCRIPTED[/] (charter.testing.ScriptedModel): it proposes a "
              "prepared plan and writes its summary from the data it is given. No key, no network. "
              "Set CHARTER_MODEL and use `charter do` for a real model.\n")
    out.print(f"[bold]Request:[/] {scenario.REQUEST}\n")
    registry = scenario.registry()
    model = scenario.scripted_model(str(notes), str(report_path))
    charter = open_app(str(workdir / "charter.db"), registry, model=model, mode="rwc")
    result = await charter.plan(scenario.REQUEST)
    rid = await charter.propose(scenario.REQUEST, planned=result, max_replans=0)
    show_plan(out, result.plan, registry, title=f"Plan for run {rid}")
    out.print("\n[bold]Approved[/] (the demo approves for you; `charter do` asks)\n")
    await charter.approve(rid, by="demo")

    async def work() -> Any:
        await charter.drive()
        return await charter.report(rid)

    report = await drive(charter, False, work)
    out.print()
    print_outcome(out, report)
    if report.status == "succeeded":
        out.print(f"\n[bold]{report_path}[/]:")
        out.print(escape(report_path.read_text(encoding="utf-8")))
        out.print(f"See every step, attempt and model call: [bold]charter show {rid} --db {workdir / 'charter.db'}[/]")
    raise typer.Exit(EXIT.get(report.status, 1))


StepArg = Annotated[
    str | None, typer.Argument(metavar="STEP",
                               help="An approval step waiting for a decision; without it, the run's plan.")
]


@command()
async def approve(
    run_id: RunArg,
    step: StepArg = None,
    comment: Annotated[str, typer.Option(metavar="TEXT", help="A note kept with the decision.")] = "",
    db: DbOpt = None,
    tools: RunToolsOpt = None,
    model: StepModelOpt = None,
    concurrency: ConcOpt = 100,
    json_out: JsonOpt = False,
) -> None:
    """Approve a plan that waits for review, or an approval step; then run on."""
    charter = open_app(db, tools, concurrency, with_workspace=True, model=model)
    await decide(charter, run_id, step, True, comment, json_out)


@command()
async def reject(
    run_id: RunArg,
    step: StepArg = None,
    reason: Annotated[str, typer.Option(metavar="TEXT", help="Why, for the log.")] = "rejected in review",
    db: DbOpt = None,
    tools: RunToolsOpt = None,
    model: StepModelOpt = None,
    concurrency: ConcOpt = 100,
    json_out: JsonOpt = False,
) -> None:
    """Reject a plan that waits for review (the run ends, nothing runs), or an approval step (it fails)."""
    charter = open_app(db, tools, concurrency, with_workspace=True, model=model)
    await decide(charter, run_id, step, False, reason, json_out)


async def decide(charter: Charter, run_id: str, step: str | None, approve: bool, note: str, json_out: bool) -> None:
    """A person's decision on a plan (``step`` None) or an approval step, then the run goes on."""
    by = user()
    try:
        rid = await charter.resolve(run_id)
        how = await (charter.approve(rid, step, by=by, note=note) if approve
                     else charter.reject(rid, step, by=by, reason=note))
    except CharterError as exc:
        raise fail(exc) from None
    if how == "requested":
        if json_out:
            out.print_json(json.dumps({"id": rid, "action": "approve" if approve else "reject", "step": step,
                                       "requested": True}))
        else:
            out.print(f"asked the process running {rid} to record the "
                      f"{'approval' if approve else 'rejection'} of {step}")
        return
    if step is None and not approve:
        if json_out:
            out.print_json(json.dumps((await charter.report(rid)).to_json(), default=str))
        else:
            out.print(f"run [bold]{rid}[/] rejected: {escape(note)}")
        return
    await run_to_end(charter, rid, json_out)
