"""Driving runs in the foreground: live progress, Ctrl-C as a clean pause, the outcome and its exit code."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer

from ..app import Charter
from ..engine.report import RunReport
from ..errors import CharterError
from .shared import EXIT, err, fail, out

T = TypeVar("T")


async def note_interrupted(charter: Charter, *, besides: str | None = None) -> None:
    """One line on stderr about interrupted runs: this command does not continue them."""
    try:
        rows = [r for r in await charter.interrupted() if r.id != besides]
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


async def run_to_end(charter: Charter, run_id: str, json_out: bool) -> NoReturn:
    """Drive the app's runs to the end, then print ``run_id``'s outcome and exit with its code."""

    async def work() -> RunReport:
        await charter.drive()
        return await charter.report(run_id)

    await note_interrupted(charter, besides=run_id)
    report = await drive(charter, json_out, work)
    if report.status in ("running", "replanning") and not report.interrupted:
        elsewhere(report, json_out)
    finish(report, json_out)


def elsewhere(report: RunReport, json_out: bool) -> NoReturn:
    """The run goes on, run by others (the workers of a fleet run): say how to follow it; exit 0."""
    if json_out:
        out.print_json(json.dumps(report.to_json(), default=str))
    else:
        out.print(f"run {report.id} goes on, run by the workers: follow it with `charter watch {report.id}`")
    raise typer.Exit(0)


async def drive(charter: Charter, json_out: bool, work: Callable[[], Awaitable[T]]) -> T:
    """Await ``work`` with live progress and Ctrl-C turned into a clean pause."""
    from .console import Progress, counted

    progress = Progress(err if json_out else out, live=False if json_out else None)
    charter.observe(progress)
    stopped: list[str] = []  # the runs a signal paused
    pausing: list[asyncio.Task[None]] = []  # held, so that the loop does not drop them

    def resume_hint() -> str:
        return " ; ".join(f"charter resume {r}" for r in stopped) or "charter resume RUN"

    async def pause(reason: str) -> None:
        paused = await charter.pause_all(reason)
        stopped.extend(paused.runs)
        if paused.attempts:
            err.print(f"[yellow]Pausing:[/] waiting for {counted(paused.attempts, 'running attempt')} to stop "
                      "(press Ctrl-C again to leave at once)")

    loop = asyncio.get_running_loop()

    def on_signal(reason: str) -> None:
        if stopped:
            # Asked twice: leave now. Everything committed is safe; attempts
            # still running are recorded as interrupted when the run resumes.
            progress.__exit__(None, None, None)
            err.print(f"[yellow]Stopped at once.[/] Resume with: [bold]{resume_hint()}[/]")
            os._exit(130)
        pausing.append(loop.create_task(pause(reason)))

    try:
        with progress:
            loop.add_signal_handler(signal.SIGINT, on_signal, "interrupted (Ctrl-C)")
            loop.add_signal_handler(signal.SIGTERM, on_signal, "stopped (SIGTERM)")
            try:
                result = await work()
            finally:
                loop.remove_signal_handler(signal.SIGINT)
                loop.remove_signal_handler(signal.SIGTERM)
                charter.flush_watchers(timeout=10)  # every line of progress before the outcome
    except CharterError as exc:
        raise fail(exc) from None
    if len(stopped) > 1:  # one run's outcome says how to resume it; several are named here
        err.print(f"[yellow]Interrupted.[/] Paused; resume with: [bold]{resume_hint()}[/]")
    return result


def finish(report: RunReport, json_out: bool) -> NoReturn:
    """Print a run's outcome and exit with its code (130 for a Ctrl-C pause)."""
    from .console import print_outcome

    if json_out:
        out.print_json(json.dumps(report.to_json(), default=str))
    else:
        print_outcome(out, report)
    if report.status == "paused" and "Ctrl-C" in report.reason:
        raise typer.Exit(130)
    raise typer.Exit(EXIT.get(report.status, 1))
