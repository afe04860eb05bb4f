"""What every command shares: the Typer app, the consoles, the options, opening the app, errors.

Commands are async functions registered with :func:`command`: each runs on its
own event loop, so the facade's methods are awaited in one place, the command's
body. The CLI reaches runs only through :class:`~charter.Charter`; it imports
nothing of the engine or the store but the data types it prints
(tests/unit/test_cli_door.py holds it to that).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..app import Charter, ToolsLike
from ..errors import CharterError, ConfigError
from ..models import Model
from ..workspace import Workspace, load_workspace

T = TypeVar("T")
P = ParamSpec("P")

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
    str | None, typer.Option("--db", envvar="CHARTER_DB", metavar="PATH|URL", show_default=False,
                             help="The store: a SQLite file (`run` and `do` create it if missing) or a "
                                  "postgresql://user@host/db URL [default: the workspace file's `db`, "
                                  "else charter.db]."),
]
ToolsOpt = Annotated[
    list[str] | None,
    typer.Option("--tools", "-t", metavar="FILE|MODULE",
                 help="A tools file (path/to/tools.py) or module (pkg.tools); repeatable."),
]
# For commands that go on with an existing run: by default it loads the tools it recorded.
RunToolsOpt = Annotated[
    list[str] | None,
    typer.Option("--tools", "-t", metavar="FILE|MODULE",
                 help="Load these tools instead of the ones the run recorded (moved files); repeatable."),
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

EXIT = {"succeeded": 0, "failed": 1, "paused": 3, "cancelled": 3, "rejected": 3, "awaiting": 3, "created": 3}


def budget_of(tokens: int | None, cost: float | None, seconds: float | None, steps: int | None) -> dict[str, float]:
    """The budget options given; a run that reaches a limit pauses with the reason."""
    given = {"tokens": tokens, "cost": cost, "seconds": seconds, "steps": steps}
    return {k: float(v) for k, v in given.items() if v is not None}


def main() -> None:
    """The console script."""
    try:
        app()
    except (CharterError, OSError) as exc:  # a user's mistake the command did not name itself: still one line
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)


def fail(exc: Exception) -> typer.Exit:
    """Say what is wrong in one line; the caller raises what this returns (exit 2)."""
    err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(2)


def command(name: str | None = None) -> Callable[[Callable[P, Coroutine[Any, Any, None]]],
                                                 Callable[P, Coroutine[Any, Any, None]]]:
    """Register an async function as a command: Typer calls a plain function, which runs it on its own loop."""

    def register(body: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, Coroutine[Any, Any, None]]:
        @functools.wraps(body)  # Typer reads the options from the signature and the help from the docstring
        def sync(*args: P.args, **kwargs: P.kwargs) -> None:
            run_async(body(*args, **kwargs))

        app.command(name)(sync)
        return body

    return register


def run_async(body: Coroutine[Any, Any, T]) -> T:
    """Run a command's body on a new event loop, as ``asyncio.run`` does, but with Ctrl-C left alone.

    ``asyncio.run`` turns a first Ctrl-C into a cancellation that waits for the loop to
    get control back: at a review prompt (a blocking read) nothing would happen until
    Enter. Here Ctrl-C stays Python's ``KeyboardInterrupt`` (Typer exits with 130), except
    while runs are driven, where :func:`charter.cli.drive.drive` makes it a pause.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(body)
    finally:
        _send_traces()
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


_settings: dict[str, Any] = {"config": None}
_traced: list[Charter] = []  # apps whose tracer sends what is left when the command ends


def _send_traces() -> None:
    """At the end of a command (whatever ends it): each tracer gets its last spans out, in bounded time."""
    while _traced:
        charter = _traced.pop()
        charter.flush_watchers(charter.tracer.close_timeout)
        charter.tracer.close()


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
    otel: Annotated[str | None, typer.Option(
        "--otel", metavar="URL",
        help="Send traces and metrics of the runs this command writes to an OpenTelemetry collector "
             "(OTLP/HTTP, e.g. http://localhost:4318); OTEL_EXPORTER_OTLP_ENDPOINT does the same. "
             "See docs/telemetry.md.",
    )] = None,
) -> None:
    """Run explicit plans as durable, observable work."""
    _settings["config"] = config
    if otel is not None:
        from ..telemetry import check_endpoint  # light: no OpenTelemetry import

        try:
            check_endpoint(otel, "--otel")
        except CharterError as exc:
            raise fail(exc) from None
    _settings["otel"] = otel


def workspace() -> Workspace:
    """The workspace of ``--config``, else ``./charter.yaml``, else the current directory (loaded once)."""
    ws = _settings.get("workspace")
    if ws is None:
        try:
            ws = _settings["workspace"] = load_workspace(_settings["config"])
        except CharterError as exc:
            raise fail(exc) from None
    return ws


def open_app(db: str | None, tools: ToolsLike = None, concurrency: int = 100, *, with_workspace: bool = False,
             model: Model | str | None = None, mode: str = "rw") -> Charter:
    """The app on ``db``; with ``with_workspace``, with the workspace's tools, settings and policy too.

    Without ``model``, steps that need one use ``$CHARTER_MODEL`` (read when the first one runs).
    ``mode`` (see :class:`Charter`): only ``run`` and ``do`` create a store (``"rwc"``); commands
    about existing runs want one (``"rw"``); commands that only look open it read-only (``"ro"``).
    """
    try:
        if db is None:  # --db, else $CHARTER_DB, else the workspace file's db, else charter.db here
            db = workspace().store_location() or "charter.db"
        elif not with_workspace:
            _quietly_load_workspace()
        charter = Charter(db, tools=tools or None, max_concurrency=concurrency,
                          workspace=workspace() if with_workspace else None, model=model, mode=mode,
                          tracing=_tracing(db, mode))
    except CharterError as exc:
        raise fail(exc) from None
    if charter.tracer is not None:
        _traced.append(charter)
    return charter


def _quietly_load_workspace() -> None:
    """Load the workspace file if there is one, for what loading it does: the secrets it names are
    masked in all this command prints. A command given ``--db`` that needs nothing else of the
    workspace still works when the file is broken."""
    try:
        workspace()
    except CharterError:
        pass


def _tracing(db: str, mode: str) -> Any:
    """What ``Charter(tracing=...)`` gets: nothing for a command that writes no run; a tracer for
    ``--otel URL``; else the environment decides (``OTEL_EXPORTER_OTLP_ENDPOINT``, ...)."""
    if mode == "ro" or db == ":memory:":
        return False
    url = _settings.get("otel")
    if url is None:
        return None
    from .. import telemetry

    return False if telemetry.disabled() else telemetry.make_tracer(endpoint=url)


def user() -> str:
    """Who decides, for the log: the login name."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "user"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_age(text: str, option: str) -> float:
    """Seconds from an age such as ``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` given to ``option``."""
    m = _AGE.match(text)
    if m is None:
        raise fail(ConfigError(f"{option}: {text!r} is not an age: a number and a unit, as in 30d, 12h, 90m, "
                               "45s or 2w"))
    return float(m.group(1)) * _UNITS[m.group(2)]
