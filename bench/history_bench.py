"""Bytes stored for an agent step whose conversation grows: inline (as before payloads) and as stored now.

An agent step makes N model calls; after each but the last it reads a page of
~500 bytes, so the conversation it resends grows by a page and a call each
time (to ~50 KB of context at 100 calls). Inline, every model call's event
holds the whole conversation so far: the log grows with N squared. Stored
with payloads (charter/store/payloads.py), each page and each chunk of
messages is stored once.

    python bench/history_bench.py [--calls 25 50 100] [--db PATH|URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from charter import Charter, tool
from charter.store import codec
from charter.testing import FakeClock, ScriptedModel


@tool
def page(n: int) -> str:
    """One page of a long document (~500 bytes, all different)."""
    return f"page {n}: " + " ".join(f"word{n}-{i}" for i in range(50))


async def measure(db: Any, calls: int) -> dict[str, Any]:
    script: list[Any] = [ScriptedModel.call("page", {"n": i}) for i in range(calls - 1)] + ["done"]
    plan = {"goal": "read everything", "steps": [
        {"id": "read", "agent": {"prompt": "Read every page.", "tools": ["page"], "max_turns": calls}}]}
    app = Charter(db, tools=[page], clock=FakeClock(auto_advance=True))
    app.engine().model = ScriptedModel(script)
    try:
        report = await app.run(plan)
        assert report.status == "succeeded", report.error
        events = await app.store.events(report.id)
        inline = sum(len(codec.dumps(ev.to_data())) for ev in events)
        stats = await app.stats(biggest=10_000)
        stored = next(r.bytes for r in stats.biggest if r.id == report.id)
        context = max(len(json.dumps(ev.to_data()["request"])) for ev in events if ev.type == "ModelCalled")
        return {"calls": calls, "context_bytes": context, "inline_bytes": inline, "stored_bytes": stored,
                "ratio": round(inline / stored, 1)}
    finally:
        app.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--db", default=None, help="a store to use (default: a new SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "history.db"
        print(f"{'calls':>5} {'context':>9} {'inline':>11} {'stored':>10} {'inline/stored':>13}")
        for n in args.calls:
            r = await measure(db, n)
            print(f"{r['calls']:>5} {r['context_bytes']:>9,} {r['inline_bytes']:>11,} {r['stored_bytes']:>10,} "
                  f"{r['ratio']:>12}x")


if __name__ == "__main__":
    asyncio.run(main())
