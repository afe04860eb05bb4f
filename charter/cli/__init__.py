"""The `charter` command: run plans, and inspect and steer runs.

Exit codes: 0 the run succeeded (or the command worked), 1 the run failed,
2 bad input (an invalid plan, an unknown run, bad options), 3 the run was
paused or cancelled, 130 interrupted with Ctrl-C (the run is paused).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..app import Charter, ToolsLike, make_registry, require_models
from ..engine.report import RunReport
from ..errors import CharterError, ConfigError, PlanError
from ..models import Model, check_spec, model_from_spec
from ..plan.inputs import check_inputs
from ..plan.model import load_plan
from ..workspace import Workspace, load_workspace

T = TypeVar("T")

app = typer.Typer(
    name="charter",
    help="Run explicit plans as durable, observable work. See `charter COMMAND --help`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# soft_wrap: a long line is the terminal's to wrap, so a command printed for copying stays one line;
# a pipe gets room for tables (Rich would squeeze them into 80 columns)
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160


class _Console(Console):
    """A console that falls silent when its reader goes away (`charter run plan | head -1`).

    Rich exits the process at a broken pipe, which would leave a run half done;
    the run goes on instead, and the command's exit code is the run's.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), (sys.stderr if self.stderr else sys.stdout).fileno())


out = _Console(highlight=False, soft_wrap=True, width=_WIDTH)
err = _Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)

# Every argument and option names what it takes (RUN_ID, PATH, N), as `--help` shows it.
RunArg = Annotated[str, typer.Argument(metavar="RUN_ID", help="The run's id (or a unique prefix).")]
PlanArg = Annotated[Path, typer.Argument(metavar="PLAN", help="A plan file (YAML or JSON).")]
RequestArg = Annotated[str, typer.Argument(metavar="REQUEST", help="What you want done, in words.")]
DbOpt = Annotated[
    str, typer.Option("--db", envvar="CHARTER_DB", metavar="PATH",
                      help="The SQLite store (`run` and `do` create it if missing)."),
]
ToolsOpt = Annotated[
    list[str] | None,
    typer.Option("--tools", "-t", metavar="FILE|MODULE",
                 help="A tools file (path/to/tools.py) or module (pkg.tools); repeatable."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of tables.")]
ConcOpt = Annotated[int, typer.Option("--concurrency", "-c", metavar="N", min=1, help="Attempts running at once.")]

MaxTokens = Annotated[int | None, typer.Option("--max-tokens", metavar="N", min=1,
                                               help="Budget: model tokens for the run.")]
MaxCost = Annotated[float | None, typer.Option("--max-cost", metavar="DOLLARS",
                                               help="Budget: dollars of model calls for the run.")]
MaxTime = Annotated[float | None, typer.Option("--max-time", metavar="SECONDS",
                                               help="Budget: seconds of wall time from approval.")]
MaxSteps = Annotated[int | None, typer.Option("--max-steps", metavar="N", min=1, help="Budget: attempts started.")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", envvar="CHARTER_MODEL", metavar="PROVIDER:MODEL",
                             help="The model, e.g. openai:gpt-4o-mini, or scripted:answers.yaml (offline).")
]
# For commands that run steps: without it, $CHARTER_MODEL is read only once a step needs a model.
StepModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", metavar="PROVIDER:MODEL",
                             help="The model of llm and agent steps and of replanning, e.g. openai:gpt-4o-mini, "
                                  "or scripted:answers.yaml (offline) [default: $CHARTER_MODEL].")
]


def _budget(tokens: int | None, cost: float | None, seconds: float | None, steps: int | None) -> dict[str, float]:
    """The budget options given; a run that reaches a limit pauses with the reason."""
    given = {"tokens": tokens, "cost": cost, "seconds": seconds, "steps": steps}
    return {k: float(v) for k, v in given.items() if v is not None}


REVIEW_CHOICES = escape("[a]pprove / [e]dit / [r]eject")  # brackets shown as typed, not read as markup
EXIT = {"succeeded": 0, "failed": 1, "paused": 3, "cancelled": 3, "rejected": 3, "awaiting": 3, "created": 3}


def main() -> None:
    """The console script."""
    try:
        app()
    except (CharterError, OSError) as exc:  # a user's mistake the command did not name itself: still one line
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(2)


_settings: dict[str, Any] = {"config": None}


def _print_version(asked: bool) -> None:
    if asked:
        from .. import __version__

        out.print(f"charter {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option(
        "--version", "-V", is_eager=True, callback=_print_version, help="Print Charter's version and exit.",
    )] = False,
    config: Annotated[str | None, typer.Option(
        "--config", envvar="CHARTER_CONFIG", metavar="PATH",
        help="The workspace file: root, tools, MCP servers, settings, limits, policy (default: ./charter.yaml).",
    )] = None,
) -> None:
    """Run explicit plans as durable, observable work."""
    _settings["config"] = config


def _workspace() -> Workspace:
    """The workspace of ``--config``, else ``./charter.yaml``, else the current directory (loaded once)."""
    ws = _settings.get("workspace")
    if ws is None:
        try:
            ws = _settings["workspace"] = load_workspace(_settings["config"])
        except CharterError as exc:
            raise _fail(exc) from None
    return ws


def _open(db: str, tools: ToolsLike = None, concurrency: int = 100, *, workspace: bool = False,
          model: Model | str | None = None, mode: str = "rw") -> Charter:
    """The app on ``db``; with ``workspace``, with the workspace's tools, settings and policy too.

    Without ``model``, steps that need one use ``$CHARTER_MODEL`` (read when the first one runs).
    ``mode`` (see :class:`Charter`): only ``run`` and ``do`` create a store (``"rwc"``); commands
    about existing runs want one (``"rw"``); commands that only look open it read-only (``"ro"``).
    """
    try:
        return Charter(db, tools=tools or None, max_concurrency=concurrency,
                       workspace=_workspace() if workspace else None, model=model, mode=mode)
    except CharterError as exc:
        raise _fail(exc) from None


def _note_interrupted(charter: Charter, *, besides: str | None = None) -> None:
    """One line on stderr about interrupted runs: this command does not continue them."""
    try:
        rows = [r for r in charter.interrupted() if r.id != besides]
    except CharterError:
        return  # only a note: the command itself says what is wrong with the store
    if rows:
        from .console import counted

        ids = ", ".join(r.id for r in rows[:3]) + (", ..." if len(rows) > 3 else "")
        many = len(rows) != 1
        err.print(f"[yellow]note:[/] {counted(len(rows), 'interrupted run')} on this store ({ids}): "
                  f"{'their process' if many else 'its process'} stopped. Continue "
                  f"{'them' if many else 'it'} with [bold]charter resume RUN[/] or [bold]charter resume --all[/]",
                  soft_wrap=True)


def _parse_inputs(pairs: list[str] | None) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _fail(ValueError(f"--input wants NAME=VALUE, got {pair!r}"))
        try:  # JSON where it is JSON (5, true, [1, 2], {"a": 1}), else the text as it is
            inputs[key] = json.loads(value)
        except ValueError:
            inputs[key] = value
    return inputs


def _run_to_end(charter: Charter, run_id: str, json_out: bool) -> None:
    """Drive the engine's runs to the end, then print ``run_id``'s outcome and exit with its code."""

    async def work() -> RunReport:
        await charter.engine().run_until_settled()
        return charter.report(run_id)

    _note_interrupted(charter, besides=run_id)
    _finish(_drive(charter, json_out, work), json_out)


def _drive(charter: Charter, json_out: bool, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` with live progress and Ctrl-C turned into a clean pause."""
    from .console import Progress, counted

    engine = charter.engine()
    progress = Progress(err if json_out else out, live=False if json_out else None)
    engine.observers.append(progress)
    stopped: list[str] = []  # the runs a signal paused

    def resume_hint() -> str:
        return " ; ".join(f"charter resume {r}" for r in stopped) or "charter resume RUN"

    async def guarded() -> T:
        loop = asyncio.get_running_loop()

        def on_signal(reason: str) -> None:
            if stopped:
                # Asked twice: leave now. Everything committed is safe; attempts
                # still running are recorded as interrupted when the run resumes.
                progress.__exit__(None, None, None)
                err.print(f"[yellow]Stopped at once.[/] Resume with: [bold]{resume_hint()}[/]")
                os._exit(130)
            stopped.extend(s.run_id for s in engine.hosted() if s.status == "running")
            engine.stop_all(reason)
            running = sum(len(s.running_units()) for s in engine.hosted())
            if running:
                err.print(f"[yellow]Pausing:[/] waiting for {counted(running, 'running attempt')} to stop "
                          "(press Ctrl-C again to leave at once)")

        loop.add_signal_handler(signal.SIGINT, on_signal, "interrupted (Ctrl-C)")
        loop.add_signal_handler(signal.SIGTERM, on_signal, "stopped (SIGTERM)")
        try:
            return await work()
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        with progress:
            result = asyncio.run(guarded())
    except CharterError as exc:
        raise _fail(exc) from None
    if len(stopped) > 1:  # one run's outcome says how to resume it; several are named here
        err.print(f"[yellow]Interrupted.[/] Paused; resume with: [bold]{resume_hint()}[/]")
    return result


def _finish(report: RunReport, json_out: bool) -> None:
    from .console import print_outcome

    if json_out:
        out.print_json(json.dumps(report.to_json(), default=str))
    else:
        print_outcome(out, report)
    if report.status == "paused" and "Ctrl-C" in report.reason:
        raise typer.Exit(130)
    raise typer.Exit(EXIT.get(report.status, 1))


@app.command()
def run(
    plan: PlanArg,
    tools: ToolsOpt = None,
    db: DbOpt = "charter.db",
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
) -> None:
    """Run a plan file with the given tools. It runs only this plan: runs that another process left
    unfinished are continued by `charter resume`."""
    values = _parse_inputs(inputs)
    try:  # a plan that cannot run leaves the store untouched
        registry = make_registry(tools or None, _workspace())
        loaded = load_plan(plan, registry)
        check_inputs(loaded, values, registry)
        chosen = model_from_spec(model) if model else None
        require_models(loaded, chosen, source=str(plan))  # llm and agent steps: a model, before any step runs
        if replan and chosen is None:
            try:
                check_spec(None)
            except ConfigError as exc:
                raise ConfigError(f"--replan needs a model to revise the plan: {exc}") from None
    except CharterError as exc:
        raise _fail(exc) from None
    charter = _open(db, registry, concurrency, workspace=True, model=chosen, mode="rwc")
    try:
        engine = charter.engine()
        state = engine.create(loaded, charter.registry, values,
                              budget=_budget(max_tokens, max_cost, max_time, max_steps), max_replans=replan)
    except CharterError as exc:
        raise _fail(exc) from None
    _run_to_end(charter, state.run_id, json_out)


# For commands that go on with an existing run: by default it loads the tools it recorded.
RunToolsOpt = Annotated[
    list[str] | None,
    typer.Option("--tools", "-t", metavar="FILE|MODULE",
                 help="Load these tools instead of the ones the run recorded (moved files); repeatable."),
]


@app.command()
def resume(
    run_id: Annotated[str | None, typer.Argument(metavar="RUN_ID", help="The run's id (or a unique prefix).")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Every interrupted run: those whose process "
                                           "stopped in the middle.")] = False,
    db: DbOpt = "charter.db",
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
        raise _fail(ValueError("give a run id, or --all for every interrupted run"))
    charter = _open(db, tools, concurrency, workspace=True, model=model)
    budget = _budget(max_tokens, max_cost, max_time, max_steps)
    if run_id is None:
        _resume_all(charter, budget, json_out)
    try:
        rid = charter.resolve(run_id)
        state = charter.engine().resume(rid, budget=budget, registry=charter._own_tools())
    except CharterError as exc:
        raise _fail(exc) from None
    if state.finished:
        report = charter.report(rid)
        err.print(f"run {rid} has already ended ({report.status})")
        _finish(report, json_out)

    _run_to_end(charter, rid, json_out)


def _resume_all(charter: Charter, budget: dict[str, float], json_out: bool) -> NoReturn:
    """`charter resume --all`: continue every interrupted run, then exit with the worst outcome."""
    from .console import counted, print_outcome

    if budget:  # a budget is a decision about one run; `resume RUN --max-...` raises it
        raise _fail(ValueError("--all takes no budget: raise a run's budget with charter resume RUN --max-..."))
    try:
        pending = charter.interrupted()
    except CharterError as exc:
        raise _fail(exc) from None
    if not pending:
        if json_out:
            out.print_json("[]")
        else:
            out.print(f"no interrupted runs in {charter.store.location}")
        raise typer.Exit(0)
    if not json_out:
        err.print(f"resuming {counted(len(pending), 'interrupted run')}: "
                  + ", ".join(r.id for r in pending))
    reports, problems = _drive(charter, json_out, charter.resume_all)
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


@app.command()
def retry(
    run_id: RunArg,
    step: Annotated[str, typer.Argument(metavar="STEP", help="The failed step to run again.")],
    db: DbOpt = "charter.db",
    tools: RunToolsOpt = None,
    model: StepModelOpt = None,
    concurrency: ConcOpt = 100,
    json_out: JsonOpt = False,
) -> None:
    """Run a failed step again, with a fresh retry budget, and then what depends on it."""
    charter = _open(db, tools, concurrency, workspace=True, model=model)
    try:
        rid = charter.resolve(run_id)
        charter.engine().retry(rid, step, registry=charter._own_tools())
    except CharterError as exc:
        raise _fail(exc) from None

    _run_to_end(charter, rid, json_out)


@app.command()
def rerun(
    run_id: RunArg,
    from_step: Annotated[str, typer.Option("--from", metavar="STEP", help="The first step to run again.")],
    plan: Annotated[
        Path | None, typer.Option("--plan", metavar="PLAN", help="Use this (edited) plan file instead of the run's.")
    ] = None,
    tools: ToolsOpt = None,
    db: DbOpt = "charter.db",
    model: StepModelOpt = None,
    concurrency: ConcOpt = 100,
    json_out: JsonOpt = False,
) -> None:
    """A new run that reuses the outputs of everything not downstream of a step."""
    charter = _open(db, tools, concurrency, workspace=True, model=model)
    try:
        if plan is not None and not tools:
            rid = charter.resolve(run_id)
            from ..tools import load_tools

            charter.registry = load_tools(charter.state(rid).tool_sources)
        new_id = charter.start_rerun(run_id, from_step, plan=plan)
    except CharterError as exc:
        raise _fail(exc) from None

    _run_to_end(charter, new_id, json_out)


@app.command()
def pause(
    run_id: RunArg,
    db: DbOpt = "charter.db",
    reason: Annotated[str, typer.Option(metavar="TEXT", help="Why, for the log.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Pause a run. Running attempts are interrupted and run again on resume; a sync tool's call finishes first."""
    _stop(db, run_id, "pause", reason, json_out)


@app.command()
def cancel(
    run_id: RunArg,
    db: DbOpt = "charter.db",
    reason: Annotated[str, typer.Option(metavar="TEXT", help="Why, for the log.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Cancel a run for good. Its log is kept."""
    _stop(db, run_id, "cancel", reason, json_out)


def _stop(db: str, run_id: str, action: str, reason: str, json_out: bool) -> None:
    charter = _open(db)
    try:
        rid = charter.resolve(run_id)
        how = charter.pause(rid, reason) if action == "pause" else charter.cancel(rid, reason)
    except CharterError as exc:
        raise _fail(exc) from None
    past = "paused" if action == "pause" else "cancelled"
    confirmed = how == "done"
    if not confirmed:
        # Another live process runs it: it picks the request up within a moment.
        import time

        deadline = time.monotonic() + 10
        while not confirmed and time.monotonic() < deadline:
            row = charter.store.get_run(rid)
            confirmed = row is not None and row.status == past
            if not confirmed:
                time.sleep(0.05)
    if json_out:
        row = charter.store.get_run(rid)
        out.print_json(json.dumps({"id": rid, "action": action, "confirmed": confirmed,
                                   "status": row.status if row else None}))
    elif confirmed:
        out.print(f"run [bold]{rid}[/] {past}")
    else:
        out.print(f"asked the process running {rid} to {action}; it has not confirmed yet")


@app.command("runs")
def runs_cmd(
    db: DbOpt = "charter.db",
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="How many, newest first.")] = 20,
    json_out: JsonOpt = False,
) -> None:
    """List runs: status, progress, age."""
    from .console import runs_table

    charter = _open(db, mode="ro")
    try:
        rows = charter.runs(limit)
    except CharterError as exc:
        raise _fail(exc) from None
    if json_out:
        out.print_json(json.dumps([{
            "id": r.id, "status": r.status, "interrupted": r.interrupted, "goal": r.goal,
            "steps_done": r.steps_done, "steps_total": r.steps_total, "created_at": r.created_at,
            "updated_at": r.updated_at, "finished_at": r.finished_at, "reason": r.reason,
            "parent_run": r.parent_run,
        } for r in rows]))
        return
    if not rows:
        out.print(f"no runs in {charter.store.location}")
        return
    out.print(runs_table(rows))
    if any(r.interrupted for r in rows):
        out.print("[yellow]interrupted[/]: the process running it stopped; continue with "
                  "[bold]charter resume RUN[/] or [bold]charter resume --all[/]")


@app.command()
def watch(
    run_id: RunArg,
    db: DbOpt = "charter.db",
    json_out: JsonOpt = False,
) -> None:
    """Follow a run that another process executes, live, until it ends. Only reads; Ctrl-C detaches."""
    from .console import Progress, print_outcome

    charter = _open(db, mode="ro")
    try:
        rid = charter.resolve(run_id)
    except CharterError as exc:
        raise _fail(exc) from None
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
                    progress(update.state, [update.event])
            return False
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        with progress:
            interrupted = asyncio.run(follow())
    except asyncio.CancelledError:
        err.print(f"Detached; run {rid} goes on. Follow it again with: [bold]charter watch {rid}[/]")
        raise typer.Exit(130) from None
    except CharterError as exc:
        raise _fail(exc) from None
    report = charter.report(rid)
    if json_out:
        out.print_json(json.dumps({**report.to_json(), "interrupted": interrupted}, default=str))
    elif interrupted:
        out.print(f"[yellow]⏸[/] run [bold]{rid}[/] is interrupted: the process running it is gone. "
                  f"Resume it with: [bold]charter resume {rid}[/]")
    else:
        print_outcome(out, report)
    raise typer.Exit(3 if interrupted else EXIT.get(report.status, 1))


@app.command()
def show(
    run_id: RunArg,
    db: DbOpt = "charter.db",
    events: Annotated[bool, typer.Option("--events", help="Also print the raw event log.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """A run's timeline: each step's status, attempts, durations, arguments, output, error and why."""
    from .console import print_report

    charter = _open(db, mode="ro")
    try:
        report = charter.report(run_id)
    except CharterError as exc:
        raise _fail(exc) from None
    if json_out:
        out.print_json(json.dumps(report.to_json(events=events), default=str))
        return
    print_report(out, report)
    if events:
        out.print()
        for i, ev in enumerate(report.events, 1):
            out.print(f"[dim]{i:4d}[/] {ev.type:16s} {escape(json.dumps(ev.to_data(), default=str))}", soft_wrap=True)


@app.command("effects")
def effects_cmd(
    run_id: Annotated[str | None, typer.Argument(metavar="RUN_ID",
                                                 help="A run's id or prefix (default: every run).")] = None,
    db: DbOpt = "charter.db",
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="How many, oldest first.")] = 1000,
    json_out: JsonOpt = False,
) -> None:
    """The effect ledger: every change a write tool made (run, step, tool, target, key, result)."""
    charter = _open(db, mode="ro")
    try:
        rows = charter.effects(run_id, limit)
    except CharterError as exc:
        raise _fail(exc) from None
    if json_out:
        out.print_json(json.dumps([dataclasses.asdict(r) for r in rows], default=str))
        return
    if not rows:
        out.print("no effects recorded" + (f" for run {run_id}" if run_id else ""))
        return
    from .console import effects_table

    out.print(effects_table(rows))


def _make_plan(request: str, registry: Any, model_spec: str | None) -> tuple[Any, Model]:
    """Plan ``request`` with the chosen model, showing what happens; exit 2 on failure.

    Returns the plan and the model, for the run's steps to go on with (a scripted
    model then gives the steps the answers after the plan's).
    """
    from ..models import RetryingModel, model_from_spec
    from ..planning.planner import Planner

    def retrying(notice: Any) -> None:  # a wait is never silent
        err.print(f"[yellow]{escape(str(notice))}[/]", soft_wrap=True)

    try:
        model = model_from_spec(model_spec)
        where = getattr(model, "base_url", None)
        err.print(f"[dim]planning with {model.name}{f' at {where}' if where else ''}…[/]", soft_wrap=True)
        return asyncio.run(Planner(RetryingModel(model, on_retry=retrying), registry).plan(request)), model
    except CharterError as exc:
        raise _fail(exc) from None


@app.command("plan")
def plan_cmd(
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
        raise _fail(ValueError(f"{save} exists: give --save a new file (Charter does not overwrite it)"))
    try:
        registry = make_registry(tools or None, _workspace())
    except CharterError as exc:
        raise _fail(exc) from None
    result, _ = _make_plan(request, registry, model)
    if json_out:
        out.print_json(json.dumps(result.plan.to_json()))
    else:
        show_plan(out, result.plan, registry)
    if save is not None:
        try:
            with save.open("x", encoding="utf-8") as f:
                f.write(plan_yaml(result.plan))
        except OSError as exc:
            raise _fail(ValueError(f"cannot save the plan to {save}: {exc.strerror or exc}")) from None
        err.print(f"saved to {save}; run it with: charter run {save}" + "".join(f" -t {s}" for s in tools or []))


@app.command("do")
def do_cmd(
    request: RequestArg,
    tools: ToolsOpt = None,
    model: ModelOpt = None,
    db: DbOpt = "charter.db",
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
) -> None:
    """Plan a request, show the plan for review (approve / edit / reject), then run it."""
    from ..planning.writes import write_steps, writes_needing_review
    from .review import edit_plan, show_plan

    policy = _workspace().config.policy
    mode = auto_approve or policy.approve
    if mode not in ("reads", "never", "policy"):
        raise _fail(ValueError(f"--auto-approve must be 'never', 'reads' or 'policy', not {mode!r}"))
    try:
        registry = make_registry(tools or None, _workspace())
    except CharterError as exc:
        raise _fail(exc) from None
    result, chosen = _make_plan(request, registry, model)
    charter = _open(db, registry, concurrency, workspace=True, model=chosen, mode="rwc")
    engine = charter.engine()
    try:
        rid = _planned_run(engine, result, registry, request, _budget(max_tokens, max_cost, max_time, max_steps),
                           max_replans)
    except CharterError as exc:
        raise _fail(exc) from None
    plan = result.plan
    console = err if json_out else out
    show_plan(console, plan, registry, title=f"Plan for run {rid}")
    if yes:
        engine.approve(rid, by="--yes")
    elif mode in ("reads", "policy") and not write_steps(plan, registry):
        console.print("[green]approved by policy:[/] the plan only reads")
        engine.approve(rid, by="policy: read-only plan")
    elif mode == "policy" and not writes_needing_review(plan, registry, policy):
        console.print("[green]approved by policy:[/] the workspace policy allows every write in the plan")
        engine.approve(rid, by="policy: " + str(_workspace().path or "workspace"))
    elif not sys.stdin.isatty():
        console.print(f"Run [bold]{rid}[/] waits for review: [bold]charter approve {rid}[/] or "
                      f"[bold]charter reject {rid} --reason ...[/] (or pass --yes)")
        raise typer.Exit(3)
    else:
        while True:
            answer = console.input(f"[bold]Approve this plan?[/] {REVIEW_CHOICES}: ").strip().lower()
            if answer in ("a", "approve", "y", "yes"):
                engine.approve(rid, by="user")
                break
            if answer in ("r", "reject", "n", "no"):
                reason = console.input("Why? ").strip() or "rejected in review"
                engine.reject(rid, reason)
                console.print(f"run [bold]{rid}[/] rejected; nothing ran")
                raise typer.Exit(3)
            if answer in ("e", "edit"):
                edited = edit_plan(plan, registry, console)
                if edited is None:
                    console.print("[yellow]edit abandoned; the plan is unchanged[/]")
                    continue
                plan = edited
                engine.revise(rid, plan, by="user", reason="edited in review")
                show_plan(console, plan, registry, title=f"Plan for run {rid} (edited)")
    _run_to_end(charter, rid, json_out)


def _planned_run(engine: Any, result: Any, registry: Any, request: str, budget: dict[str, float] | None = None,
                 max_replans: int = 0) -> str:
    """Record a run of a planned request, waiting for review, with the planner's model calls in its log."""
    from ..engine.journal import planner_events

    planning = planner_events(result.calls, engine.clock.now(), result.latencies)
    state = engine.create(result.plan, registry, approved_by=None, request=request, planning=planning,
                          budget=budget, max_replans=max_replans)
    return str(state.run_id)


@app.command()
def demo(
    folder: Annotated[Path, typer.Option("--dir", metavar="DIR",
                                         help="Where the demo's notes, store and report go.")] = Path("charter-demo"),
) -> None:
    """A complete run, offline: a request is planned (by a scripted model), approved, and run on real files."""
    from .. import demo as scenario
    from ..planning.planner import Planner
    from .console import print_outcome
    from .review import show_plan

    workdir = folder.resolve()
    try:
        scenario.reset(workdir)
        notes, report_path = scenario.prepare(workdir)
    except CharterError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(ValueError(f"cannot write the demo's files in {workdir}: {exc.strerror or exc}")) from None
    out.rule("[bold]Charter demo[/] (offline)")
    out.print("[yellow]The model in this demo is SCRIPTED[/] (charter.testing.ScriptedModel): it proposes a "
              "prepared plan and writes its summary from the data it is given. No key, no network. "
              "Set CHARTER_MODEL and use `charter do` for a real model.\n")
    out.print(f"[bold]Request:[/] {scenario.REQUEST}\n")
    registry = scenario.registry()
    model = scenario.scripted_model(str(notes), str(report_path))
    result = asyncio.run(Planner(model, registry).plan(scenario.REQUEST))
    charter = _open(str(workdir / "charter.db"), registry, mode="rwc")
    engine = charter.engine()
    engine.model = model
    rid = _planned_run(engine, result, registry, scenario.REQUEST)
    show_plan(out, result.plan, registry, title=f"Plan for run {rid}")
    out.print("\n[bold]Approved[/] (the demo approves for you; `charter do` asks)\n")
    engine.approve(rid, by="demo")

    async def work() -> RunReport:
        await engine.run_until_settled()
        return charter.report(rid)

    report = _drive(charter, False, work)
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


@app.command()
def approve(
    run_id: RunArg,
    step: StepArg = None,
    comment: Annotated[str, typer.Option(metavar="TEXT", help="A note kept with the decision.")] = "",
    db: DbOpt = "charter.db",
    tools: RunToolsOpt = None,
    model: StepModelOpt = None,
    concurrency: ConcOpt = 100,
    json_out: JsonOpt = False,
) -> None:
    """Approve a plan that waits for review, or an approval step; then run on."""
    _decide(_open(db, tools, concurrency, workspace=True, model=model), run_id, step, True, comment, json_out)


@app.command()
def reject(
    run_id: RunArg,
    step: StepArg = None,
    reason: Annotated[str, typer.Option(metavar="TEXT", help="Why, for the log.")] = "rejected in review",
    db: DbOpt = "charter.db",
    tools: RunToolsOpt = None,
    model: StepModelOpt = None,
    concurrency: ConcOpt = 100,
    json_out: JsonOpt = False,
) -> None:
    """Reject a plan that waits for review (the run ends, nothing runs), or an approval step (it fails)."""
    _decide(_open(db, tools, concurrency, workspace=True, model=model), run_id, step, False, reason, json_out)


def _decide(charter: Charter, run_id: str, step: str | None, approve: bool, note: str, json_out: bool) -> None:
    """A person's decision on a plan (``step`` None) or an approval step, then the run goes on."""
    by = _user()
    try:
        rid = charter.resolve(run_id)
        how = (charter.approve(rid, step, by=by, note=note) if approve
               else charter.reject(rid, step, by=by, reason=note))
    except CharterError as exc:
        raise _fail(exc) from None
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
            out.print_json(json.dumps(charter.report(rid).to_json(), default=str))
        else:
            out.print(f"run [bold]{rid}[/] rejected: {escape(note)}")
        return
    _run_to_end(charter, rid, json_out)


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "user"


@app.command()
def validate(
    plan: PlanArg,
    tools: ToolsOpt = None,
    model: StepModelOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check a plan without running it: every problem, with where it is."""
    from .console import counted

    charter = _open(":memory:", tools, workspace=True, mode="rwc", model=model)
    try:
        loaded = charter.load_plan(plan)
    except PlanError as exc:
        if not json_out:
            raise _fail(exc) from None
        problems = [{"where": p.where, "message": p.message} for p in exc.problems]
        out.print_json(json.dumps({"plan": str(plan), "valid": False, "problems": problems}))
        raise typer.Exit(2) from None
    except CharterError as exc:
        raise _fail(exc) from None
    writes = [s.id for s in loaded.steps if (t := charter.registry.get(s.tool)) and t.effect == "write"]
    if json_out:
        out.print_json(json.dumps({"plan": str(plan), "valid": True, "steps": [s.id for s in loaded.steps],
                                   "write_steps": writes}))
        return
    out.print(f"[green]✓[/] {plan}: {counted(len(loaded.steps), 'step')}, valid"
              + (f"; write steps: {', '.join(writes)}" if writes else ""))


@app.command("tools")
def tools_cmd(
    tools: ToolsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the tools in files or modules: name, effect, arguments, description."""
    charter = _open(":memory:", tools, workspace=True, mode="rwc")
    try:
        listed = list(charter.registry)
    except CharterError as exc:
        raise _fail(exc) from None
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


if __name__ == "__main__":  # pragma: no cover
    main()
