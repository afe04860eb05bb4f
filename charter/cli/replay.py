"""`charter replay RUN`: a recorded run re-executed offline with today's code, and where it now differs.

Opens the store read-only: a replay runs on a throwaway store of its own and
writes nothing here. Exit codes: 0 no divergence, 1 divergences found, 2 bad input.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import CharterError
from .shared import DbOpt, JsonOpt, RunArg, RunToolsOpt, command, fail, open_app, out

if TYPE_CHECKING:
    from ..replay import ReplayReport

LiveReadsOpt = Annotated[bool, typer.Option(
    "--live-reads", help="Call read tools for real instead of feeding their recorded results "
                         "(write tools are never called, whatever the flags).")]


@command()
async def replay(
    run_id: RunArg,
    db: DbOpt = None,
    tools: RunToolsOpt = None,
    live_reads: LiveReadsOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Re-execute a recorded run offline with today's plan compiler, rules and tool code, fed its
    recorded model answers and tool results, and report each step that now differs (arguments,
    model requests, retries, order, skips, the run's end). Changes nothing; calls no model and
    no write tool. Exit code 0: no divergence, 1: divergences found."""
    charter = open_app(db, tools, mode="ro")
    try:
        report = await charter.replay(run_id, live_reads=live_reads)
    except CharterError as exc:
        raise fail(exc) from None
    finally:
        charter.close()
    if json_out:
        out.print_json(json.dumps(report.to_json(), default=str))
    else:
        print_replay(out, report)
    raise typer.Exit(report.exit_code)


def print_replay(console: Console, report: ReplayReport) -> None:
    """The report for people: what was fed, then each divergence with the two values."""
    n = len(report.divergences)
    head = "[green]✓ no divergence[/]" if not n else f"[red]✗ {n} divergence{'s' if n > 1 else ''}[/]"
    console.print(f"replay of run [bold]{report.run_id}[/]: {head}")
    console.print(f"  {escape(report.goal)}")
    fed = (f"{report.attempts} attempt(s) · {report.model_answers} model answer(s) and {report.tool_results} "
           f"tool result(s) fed from the log · {report.writes_withheld} write(s) answered from the log, not made")
    if report.live_reads:
        fed += f" · {report.live_calls} read(s) called for real"
    console.print(f"  recorded {report.recorded_status}, replayed {report.replayed_status} · {fed}", style="dim")
    if report.note:
        console.print(f"  {escape(report.note)}")
    for d in report.divergences:
        console.print(f"  [red]✗[/] [bold]{escape(d.where)}[/] · {d.kind}: {escape(d.message)}")
        if d.recorded is not None or d.replayed is not None:
            console.print(f"      recorded: {escape(_shown(d.recorded))}", style="dim")
            console.print(f"      today:    {escape(_shown(d.replayed))}", style="dim")


def _shown(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = " ".join(text.split()) if "\n" not in text else text.replace("\n", "\n                ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
