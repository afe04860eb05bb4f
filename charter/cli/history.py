"""Commands that keep history bounded: prune, db stats."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import CharterError
from .console import fmt_age
from .fleet import db_app
from .shared import DbOpt, JsonOpt, command, fail, open_app, out, parse_age


def size(n: int | None) -> str:
    """Bytes as people read them."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


@command()
async def prune(
    older_than: Annotated[str, typer.Option("--older-than", metavar="AGE",
                                            help="Prune runs that ended longer ago than this (30d, 12h, 2w).")],
    keep_failed: Annotated[bool, typer.Option("--keep-failed", help="Leave failed runs whole.")] = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Drop the bulky payloads (model conversations, large outputs) of old runs. Their summaries, events
    and effect ledger stay: `charter show` still tells what happened, with the dropped values marked."""
    seconds = parse_age(older_than, "--older-than")
    charter = open_app(db)
    try:
        done = await charter.prune(seconds, keep_failed=keep_failed)
    except CharterError as exc:
        raise fail(exc) from None
    finally:
        charter.close()
    if json_out:
        out.print_json(json.dumps(asdict(done)))
        return
    out.print(f"pruned {done.runs} run{'s' * (done.runs != 1)} that ended over {escape(older_than.strip())} ago: "
              f"{done.payloads} payload{'s' * (done.payloads != 1)}, {size(done.bytes)}")


@db_app.command("stats")
def db_stats(db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """What uses the store's space: runs, events, payloads (kept and pruned), the effect ledger, the
    biggest runs."""
    from .shared import run_async

    async def body() -> None:
        charter = open_app(db, mode="ro")
        try:
            stats = await charter.stats()
        except CharterError as exc:
            raise fail(exc) from None
        finally:
            charter.close()
        if json_out:
            out.print_json(json.dumps(asdict(stats)))
            return
        runs = sum(stats.runs.values())
        by_status = ", ".join(f"{n} {s}" for s, n in sorted(stats.runs.items(), key=lambda x: -x[1]))
        out.print(f"{escape(charter.location)}: {size(stats.on_disk)} on disk")
        table = Table(box=None, pad_edge=False)
        for col in ("WHAT", "ROWS", "SIZE", "NOTE"):
            table.add_column(col, justify="right" if col in ("ROWS", "SIZE") else "left")
        oldest = f"the oldest from {fmt_age(stats.oldest_run)}" if stats.oldest_run is not None else ""
        table.add_row("runs", str(runs), "", escape(", ".join(x for x in (by_status, oldest) if x)))
        table.add_row("events", str(stats.events), size(stats.event_bytes), "")
        table.add_row("payloads", str(stats.payloads), size(stats.payload_bytes),
                      "bulky parts of events, each stored once per run")
        table.add_row("pruned", str(stats.pruned_payloads), size(stats.pruned_bytes),
                      f"dropped from {stats.pruned_runs} run{'s' * (stats.pruned_runs != 1)} by `charter prune`")
        table.add_row("effect ledger", str(stats.effects), size(stats.effect_bytes), "kept for good")
        out.print(table)
        if stats.biggest:
            out.print("\nbiggest runs:")
            big = Table(box=None, pad_edge=False)
            for col in ("RUN", "STATUS", "AGE", "SIZE"):
                big.add_column(col, justify="right" if col == "SIZE" else "left")
            for r in stats.biggest:
                big.add_row(r.id, r.status + (" (pruned)" if r.pruned_at else ""), fmt_age(r.created_at), size(r.bytes))
            out.print(big)

    run_async(body())
