"""Commands that run and steer runs: run, resume, retry, rerun, pause, cancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from ..app import Charter, check_plan, make_registry
from ..errors import CharterError, ConfigError
from ..models import check_spec, model_from_spec
from .drive import drive, elsewhere, finish, run_to_end
from .shared import (
    EXIT,
    ConcOpt,
    DbOpt,
    JsonOpt,
    MaxCost,
    MaxSteps,
    MaxTime,
    MaxTokens,
    PlanArg,
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
    workspace,
)


def parse_inputs(pairs: list[str] | None) -> dict[str, Any]:
    """``--input NAME=VALUE`` pairs: JSON where the value is JSON, else the text as it is."""
    inputs: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(ValueError(f"--input wants NAME=VALUE, got {pair!r}"))
        try:  # JSON where it is JSON (5, true, [1, 2], {"a": 1}), else the text as it is
            inputs[key] = json.loads(value)
        except ValueError:
            inputs[key] = value
    return inputs


@command()
async def run(
    plan: PlanArg,
    tools: ToolsOpt = None,
    db: DbOpt = None,
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", metavar="NAME=VALUE", help="A plan input; repeatable.")
    ] = None,
    model: StepModelOpt = None,
    concurrency: ConcOpt = 100,
    json_out: JsonOpt = False,
    max_tokens: MaxTokens = None,
    max_cost: MaxCost = None,
    max_time: MaxTime = None,
    max_steps: MaxSteps = None,
    replan: Annotated[int, typer.Option("--replan", metavar="N", min=0,
                                        help="Revised plans the model may propose when steps fail for good.")] = 0,
    submit: Annotated[bool, typer.Option("--submit", help="Record the run and print its id at once: "
                                         "workers (`charter worker`) run it.")] = False,
) -> None:
    """Run a plan file with the given tools. It runs only this plan: runs that another process left
    unfinished are continued by `charter resume`. With --submit, workers run it instead."""
    values = parse_inputs(inputs)
    try:  # a plan that cannot run leaves the store untouched: checked before the store is opened
        registry = make_registry(tools or None, workspace())
        chosen = model_from_spec(model) if model else None
        loaded = await check_plan(plan, registry, chosen, inputs=values)
        if replan and chosen is None:
            try:
                check_spec(None)
            except ConfigError as exc:
                raise ConfigError(f"--replan needs a model to revise the plan: {exc}") from None
    except CharterError as exc:
        raise fail(exc) from None
    charter = open_app(db, registry, concurrency, with_workspace=True, model=chosen, mode="rwc")
    budget = budget_of(max_tokens, max_cost, max_time, max_steps)
    try:
        if submit:
            run_id = await charter.submit(loaded, inputs=values, budget=budget, max_replans=replan)
        else:
            run_id = await charter.start(loaded, inputs=values, budget=budget, max_replans=replan)
    except CharterError as exc:
        raise fail(exc) from None
    if submit:
        submitted(run_id, json_out, charter.location)
    await run_to_end(charter, run_id, json_out)


def submitted(run_id: str, json_out: bool, where: str) -> None:
    """Say that a run was submitted, and how to follow it (the command then exits 0)."""
    if json_out:
        out.print_json(json.dumps({"id": run_id, "status": "submitted"}))  # `id`, as runs and show say
    else:
        out.print(f"run {run_id} submitted: workers run it (`charter worker --db {escape(where)}`); "
                  f"follow it with `charter watch {run_id}`")
    raise typer.Exit(0)


@command()
async def resume(
    run_id: Annotated[str | None, typer.Argument(metavar="RUN_ID", help="The run's id (or a unique prefix).")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Every interrupted run: those whose process "
                                           "stopped in the middle.")] = False,
    db: DbOpt = None,
    tools: RunToolsOpt = None,
    model: StepModelOpt = None,
    concurrency: ConcOpt = 100,
    json_out: JsonOpt = False,
    max_tokens: MaxTokens = None,
    max_cost: MaxCost = None,
    max_time: MaxTime = None,
    max_steps: MaxSteps = None,
) -> None:
    """Continue a paused or interrupted run (raising its budget, if given). Finished steps never run again."""
    if all_runs == (run_id is not None):
        raise fail(ValueError("give a run id, or --all for every interrupted run"))
    charter = open_app(db, tools, concurrency, with_workspace=True, model=model)
    budget = budget_of(max_tokens, max_cost, max_time, max_steps)
    if run_id is None:
        await resume_all(charter, budget, json_out)
    try:
        rid = await charter.resolve(run_id)
        goes_on = await charter.start_resume(rid, budget=budget)
    except CharterError as exc:
        raise fail(exc) from None
    if not goes_on:
        report = await charter.report(rid)
        if report.status in ("running", "replanning") and not report.interrupted:
            elsewhere(report, json_out)  # a fleet run: resumed, and the workers take it from here
        if report.status in ("succeeded", "failed", "cancelled", "rejected"):
            err.print(f"run {rid} has already ended ({report.status})")
        finish(report, json_out)
    await run_to_end(charter, rid, json_out)


async def resume_all(charter: Charter, budget: dict[str, float], json_out: bool) -> NoReturn:
    """`charter resume --all`: continue every interrupted run, then exit with the worst outcome."""
    from .console import counted, print_outcome

    if budget:  # a budget is a decision about one run; `resume RUN --max-...` raises it
        raise fail(ValueError("--all takes no budget: raise a run's budget with charter resume RUN --max-..."))
    try:
        pending = await charter.interrupted()
    except CharterError as exc:
        raise fail(exc) from None
    if not pending:
        if json_out:
            out.print_json("[]")
        else:
            out.print(f"no interrupted runs in {charter.location}")
        raise typer.Exit(0)
    if not json_out:
        err.print(f"resuming {counted(len(pending), 'interrupted run')}: "
                  + ", ".join(r.id for r in pending))
    reports, problems = await drive(charter, json_out, charter.resume_all)
    for problem in problems:
        err.print(f"[red]error:[/] {escape(str(problem))}", soft_wrap=True)
    if json_out:
        out.print_json(json.dumps([r.to_json() for r in reports], default=str))
    else:
        for report in reports:
            print_outcome(out, report)
    codes = [EXIT.get(r.status, 1) for r in reports]
    if problems:
        raise typer.Exit(2)
    raise typer.Exit(1 if 1 in codes else max(codes, default=0))


@command()
async def retry(
    run_id: RunArg,
    step: Annotated[str, typer.Argument(metavar="STEP", help="The failed step to run again.")],
    db: DbOpt = None,
    tools: RunToolsOpt = None,
    model: StepModelOpt = None,
    concurrency: ConcOpt = 100,
    json_out: JsonOpt = False,
) -> None:
    """Run a failed step again, with a fresh retry budget, and then what depends on it."""
    charter = open_app(db, tools, concurrency, with_workspace=True, model=model)
    try:
        rid = await charter.start_retry(run_id, step)
    except CharterError as exc:
        raise fail(exc) from None
    await run_to_end(charter, rid, json_out)


@command()
async def rerun(
    run_id: RunArg,
    from_step: Annotated[str, typer.Option("--from", metavar="STEP", help="The first step to run again.")],
    plan: Annotated[
        Path | None, typer.Option("--plan", metavar="PLAN", help="Use this (edited) plan file instead of the run's.")
    ] = None,
    tools: ToolsOpt = None,
    db: DbOpt = None,
    model: StepModelOpt = None,
    concurrency: ConcOpt = 100,
    json_out: JsonOpt = False,
) -> None:
    """A new run that reuses the outputs of everything not downstream of a step."""
    charter = open_app(db, tools, concurrency, with_workspace=True, model=model)
    try:  # without --tools, the plan is checked against the tools the run recorded
        new_id = await charter.start_rerun(run_id, from_step, plan=plan)
    except CharterError as exc:
        raise fail(exc) from None
    await run_to_end(charter, new_id, json_out)


@command()
async def pause(
    run_id: RunArg,
    db: DbOpt = None,
    reason: Annotated[str, typer.Option(metavar="TEXT", help="Why, for the log.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Pause a run. Running attempts are interrupted and run again on resume; a sync tool's call finishes first."""
    await stop(db, run_id, "pause", reason, json_out)


@command()
async def cancel(
    run_id: RunArg,
    db: DbOpt = None,
    reason: Annotated[str, typer.Option(metavar="TEXT", help="Why, for the log.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Cancel a run for good. Its log is kept."""
    await stop(db, run_id, "cancel", reason, json_out)


async def stop(db: str | None, run_id: str, action: str, reason: str, json_out: bool) -> None:
    """Pause or cancel a run, here or by asking the process that runs it, and say whether it did."""
    charter = open_app(db)
    past = "paused" if action == "pause" else "cancelled"
    try:
        rid = await charter.resolve(run_id)
        await (charter.pause(rid, reason) if action == "pause" else charter.cancel(rid, reason))
        # Done here, it is so already; asked of another live process, that one picks it up within a moment.
        status = (await charter.wait(rid, until={past}, timeout=10)).status
    except CharterError as exc:
        raise fail(exc) from None
    confirmed = status == past
    if json_out:
        out.print_json(json.dumps({"id": rid, "action": action, "confirmed": confirmed, "status": status}))
    elif confirmed:
        out.print(f"run [bold]{rid}[/] {past}")
    else:
        out.print(f"asked the process running {rid} to {action}; it has not confirmed yet")
