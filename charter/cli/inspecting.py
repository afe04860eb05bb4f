"""Commands that look at runs: runs, watch, show and effects. They open the store read-only."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import time
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import CharterError, ConfigError
from ..reader import STATUSES
from .shared import (
    EXIT,
    DbOpt,
    JsonOpt,
    RunArg,
    command,
    err,
    fail,
    open_app,
    out,
    parse_age,
)


@command("runs")
async def runs_cmd(
    db: DbOpt = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="How many, newest first.")] = 20,
    status: Annotated[list[str] | None, typer.Option(
        "--status", metavar="STATUS", help="Only runs with this status (again for more; `interrupted` too).")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="AGE", help="Only runs created less than this long ago (30d, 12h, 90m).")] = None,
    grep: Annotated[str | None, typer.Option(
        "--grep", metavar="TEXT", help="Only runs whose goal, request or id holds TEXT (any case).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List runs: status, progress, age."""
    from .console import runs_table

    if status:
        unknown = sorted(set(status) - set(STATUSES))
        if unknown:
            raise fail(ConfigError(f"--status: no status {unknown[0]!r}: one of {', '.join(STATUSES)}"))
    after = None if since is None else time.time() - parse_age(since, "--since")
    charter = open_app(db, mode="ro")
    try:
        rows = await charter.runs(limit, status=status or None, since=after, text=grep)
    except CharterError as exc:
        raise fail(exc) from None
    if json_out:
        out.print_json(json.dumps([{
            "id": r.id, "status": r.status, "interrupted": r.interrupted, "goal": r.goal,
            "steps_done": r.steps_done, "steps_total": r.steps_total, "created_at": r.created_at,
            "updated_at": r.updated_at, "finished_at": r.finished_at, "reason": r.reason,
            "parent_run": r.parent_run, "request": r.request, "tokens": r.tokens, "cost": r.cost,
            "pruned_at": r.pruned_at,
        } for r in rows]))
        return
    if not rows:
        filtered = status or since is not None or grep is not None
        out.print(f"no runs match in {charter.location}" if filtered else f"no runs in {charter.location}")
        return
    out.print(runs_table(rows))
    if any(r.interrupted for r in rows):
        out.print("[yellow]interrupted[/]: the process running it stopped; continue with "
                  "[bold]charter resume RUN[/] or [bold]charter resume --all[/]")


@command()
async def watch(
    run_id: RunArg,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Follow a run that another process executes, live, until it ends. Only reads; Ctrl-C detaches."""
    from .console import Progress, print_outcome

    charter = open_app(db, mode="ro")
    try:
        rid = await charter.resolve(run_id)
    except CharterError as exc:
        raise fail(exc) from None
    progress = Progress(err if json_out else out, live=False if json_out else None)

    async def follow() -> bool:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        # Ctrl-C leaves this process only; the run goes on where it runs.
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            async for update in charter.watch(rid):
                if update.interrupted:
                    return True
                if update.event is not None:
                    progress(update.snapshot(), [update.event])
            return False
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        with progress:
            interrupted = await follow()
    except asyncio.CancelledError:
        err.print(f"Detached; run {rid} goes on. Follow it again with: [bold]charter watch {rid}[/]")
        raise typer.Exit(130) from None
    except CharterError as exc:
        raise fail(exc) from None
    report = await charter.report(rid)
    if json_out:
        out.print_json(json.dumps({**report.to_json(), "interrupted": interrupted}, default=str))
    elif interrupted:
        out.print(f"[yellow]⏸[/] run [bold]{rid}[/] is interrupted: the process running it is gone. "
                  f"Resume it with: [bold]charter resume {rid}[/]")
    else:
        print_outcome(out, report)
    raise typer.Exit(3 if interrupted else EXIT.get(report.status, 1))


@command()
async def show(
    run_id: RunArg,
    db: DbOpt = None,
    events: Annotated[bool, typer.Option("--events", help="Also print the raw event log.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """A run's timeline: each step's status, attempts, durations, arguments, output, error and why."""
    from .console import print_report

    charter = open_app(db, mode="ro")
    try:
        report = await charter.report(run_id)
    except CharterError as exc:
        raise fail(exc) from None
    if json_out:
        out.print_json(json.dumps(report.to_json(events=events), default=str))
        return
    print_report(out, report)
    if events:
        out.print()
        for i, ev in enumerate(report.events, 1):
            out.print(f"[dim]{i:4d}[/] {ev.type:16s} {escape(json.dumps(ev.to_data(), default=str))}", soft_wrap=True)


@command("effects")
async def effects_cmd(
    run_id: Annotated[str | None, typer.Argument(metavar="RUN_ID",
                                                 help="A run's id or prefix (default: every run).")] = None,
    db: DbOpt = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="How many, oldest first.")] = 1000,
    json_out: JsonOpt = False,
) -> None:
    """The effect ledger: every change a write tool made (run, step, tool, target, key, result)."""
    charter = open_app(db, mode="ro")
    try:
        rows = await charter.effects(run_id, limit)
    except CharterError as exc:
        raise fail(exc) from None
    if json_out:
        out.print_json(json.dumps([dataclasses.asdict(r) for r in rows], default=str))
        return
    if not rows:
        out.print("no effects recorded" + (f" for run {run_id}" if run_id else ""))
        return
    from .console import effects_table

    out.print(effects_table(rows))
