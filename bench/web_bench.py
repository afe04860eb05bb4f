#!/usr/bin/env python
"""The web page's two figures (docs/web.md): the runs API on a store of 100,000 runs, and how
soon a live update reaches a page.

* ``runs``: a SQLite store gets a few real runs (made through Charter), then is filled to
  ``--runs`` (default 100,000) by copying their rows and events in SQL with new ids and
  creation times spread over 60 days (a bulk insert: making 100,000 runs one by one would
  measure the engine, not the page; the copies are for the list: their bulky payloads are
  not copied with them, so opening one may not show everything). Then ``GET /api/runs`` with each filter is timed over
  HTTP against a real `charter ui` server (uvicorn on loopback): the median and p95 of 20 calls.
* ``live``: see tests/browser/test_page.py, which writes the delays the page measured (from
  an event's commit to the graph showing it) to test-artifacts/web-latency.json.

Usage: python bench/web_bench.py [--runs 100000] [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charter import Charter, PermanentError, tool


@tool
def ok(text: str) -> str:
    return text


@tool
def broken(text: str) -> str:
    raise PermanentError(f"broken on {text}")


def seed(db: Path) -> None:
    """A few real runs of each kind."""
    with Charter(db, tools=[ok, broken]) as app:
        for i in range(10):
            app.run_sync({"goal": f"Summarise the notes of week {i}", "steps": [
                {"id": "a", "tool": "ok", "args": {"text": "x"}},
                {"id": "b", "tool": "broken" if i % 3 == 0 else "ok", "args": {"text": "${a}"}}]})


def fill(db: Path, total: int) -> None:
    """Copy the seeded runs (rows and events) until the store holds ``total`` runs."""
    con = sqlite3.connect(db)
    columns = [r[1] for r in con.execute("PRAGMA table_info(runs)") if r[1] not in ("no", "id", "created_at")]
    ev_columns = [r[1] for r in con.execute("PRAGMA table_info(events)") if r[1] != "run_no"]
    seeds = con.execute("SELECT no FROM runs ORDER BY no").fetchall()
    now = time.time()
    have = len(seeds)
    con.execute("BEGIN")
    while have < total:
        for (no,) in seeds:
            if have >= total:
                break
            at = now - 60 * 86400 * (1 - have / total)  # older first: ids and times grow together
            cur = con.execute(f"INSERT INTO runs (id, created_at, {', '.join(columns)}) "
                              f"SELECT ?, ?, {', '.join(columns)} FROM runs WHERE no = ?",
                              (secrets.token_hex(6), at, no))
            con.execute(f"INSERT INTO events (run_no, {', '.join(ev_columns)}) "
                        f"SELECT ?, {', '.join(ev_columns)} FROM events WHERE run_no = ?", (cur.lastrowid, no))
            have += 1
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()


async def time_runs_api(db: Path) -> dict[str, dict[str, float]]:
    from tests.webserver import AUTH, serving

    with Charter(db, mode="rw") as app:
        async with serving(app) as base, httpx.AsyncClient(base_url=base, headers=AUTH, timeout=60) as client:
            first = (await client.get("/api/runs?limit=50")).json()
            queries = {
                "newest 50": "/api/runs?limit=50",
                "page 2 (before=)": f"/api/runs?limit=50&before={first['next']}",
                "status=failed": "/api/runs?limit=50&status=failed",
                "age=7d": "/api/runs?limit=50&age=7d",
                "text (q=week 7)": "/api/runs?limit=50&q=week%207",
            }
            out = {}
            for name, url in queries.items():
                times = []
                for _ in range(20):
                    t = time.perf_counter()
                    res = await client.get(url)
                    times.append((time.perf_counter() - t) * 1000)
                    assert res.status_code == 200, res.text
                times.sort()
                out[name] = {"median_ms": round(statistics.median(times), 1), "p95_ms": round(times[18], 1),
                             "rows": len(res.json()["runs"])}
            return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--db", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "runs.db"
        t = time.perf_counter()
        seed(db)
        fill(db, args.runs)
        made = time.perf_counter() - t
        result = asyncio.run(time_runs_api(db))
        print(json.dumps({"runs": args.runs, "store_made_in_s": round(made, 1), "api": result}, indent=1))


if __name__ == "__main__":
    main()
