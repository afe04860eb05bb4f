"""Commands of the fleet and the store: worker, workers, db upgrade."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import CharterError
from .shared import DbOpt, JsonOpt, StepModelOpt, app, command, err, fail, open_app, out

db_app = typer.Typer(help="The store: its schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@command()
async def worker(
    db: DbOpt = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", metavar="N", min=1,
                                             help="Attempts this worker runs at once.")] = 10,
    lease: Annotated[float, typer.Option("--lease", metavar="SECONDS", min=1.0,
                                         help="How long its claims last without a heartbeat; past it, "
                                              "other workers take its steps over.")] = 15.0,
    grace: Annotated[float, typer.Option("--grace", metavar="SECONDS", min=0.0,
                                         help="On SIGTERM or Ctrl-C, how long running attempts may take to "
                                              "finish before they are left to other workers.")] = 30.0,
    model: StepModelOpt = None,
) -> None:
    """Run steps of submitted runs (`charter run PLAN --submit`), beside any number of other workers,
    until SIGTERM or Ctrl-C. Each run's tools load from where it recorded them."""
    charter = open_app(db, None, with_workspace=True, model=model)
    try:
        await charter.runs(limit=1)  # the store is there (and migrated) before the worker says it works
    except CharterError as exc:
        raise fail(exc) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    w = charter.worker(concurrency=concurrency, lease_seconds=lease, grace_seconds=grace)
    loop = asyncio.get_running_loop()
    asked: list[int] = []

    def on_signal(signum: int) -> None:
        asked.append(signum)
        if len(asked) == 1:
            err.print(f"worker {w.id}: stopping (finishing what runs, {grace:g}s at most); "
                      "signal again to leave at once")
            w.stop()
        else:
            w.grace_seconds = 0.0
            w.stop_now()

    loop.add_signal_handler(signal.SIGINT, on_signal, signal.SIGINT)
    loop.add_signal_handler(signal.SIGTERM, on_signal, signal.SIGTERM)
    err.print(f"worker {w.id} on {escape(charter.location)}: taking steps (concurrency {concurrency})")
    try:
        await w.run()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
        charter.close()
    err.print(f"worker {w.id}: stopped")


@command()
async def workers(
    db: DbOpt = None,
    all_workers: Annotated[bool, typer.Option("--all", help="Also the workers whose heartbeat stopped.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """The live workers: their host and pid, load, the runs they have steps of, their last heartbeat."""
    charter = open_app(db, mode="ro")
    try:
        rows = await charter.workers(all=all_workers)
    except CharterError as exc:
        raise fail(exc) from None
    now = time.time()
    if json_out:
        out.print_json(json.dumps([{**r.__dict__, "live": r.expires_at >= now} for r in rows]))
        return
    if not rows:
        out.print("no live workers" if not all_workers else "no workers")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("WORKER", "HOST", "PID", "RUNNING", "RUNS", "HEARTBEAT", "NOTE"):
        table.add_column(col)
    for r in rows:
        notes = []
        if r.expires_at < now:
            notes.append("silent")
        if r.stopping:
            notes.append("stopping")
        notes += [f"leaves {run}: {why}" for run, why in r.lacking.items()]
        table.add_row(r.id, r.host, str(r.pid), f"{r.running}/{r.concurrency}", ", ".join(r.runs) or "-",
                      f"{max(0.0, now - r.heartbeat_at):.1f}s ago", escape("; ".join(notes)))
    out.print(table)


@db_app.command("upgrade")
def db_upgrade(db: DbOpt = None) -> None:
    """Create the store's tables, or apply the migrations it has not had yet (every command also does,
    on start): to prepare a database before the workers start."""
    from .shared import run_async

    async def body() -> None:
        charter = open_app(db, mode="rwc")
        try:
            version, latest = await charter.schema()
        except CharterError as exc:
            raise fail(exc) from None
        finally:
            charter.close()
        out.print(f"{escape(charter.location)}: schema version {version} (the latest this Charter knows: {latest})")

    run_async(body())
