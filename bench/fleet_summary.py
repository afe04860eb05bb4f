#!/usr/bin/env python3
"""Median table of a PostgreSQL session (run_pg.sh): DBOS against Charter with 1, 2, 4 workers.

Reads the JSON lines of fleet_bench.py (``"workers": N``), bench_dbos.py and
pgcluster.py's commit limit; groups them by (peer, workload, workers) and prints
markdown: the medians, Charter's best against DBOS, the ready-to-started latency,
and what each added worker changed. Stdlib only.

Usage: python3 bench/fleet_summary.py RESULTS.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any

METRIC = {"chain": "steps_per_s", "fanout": "ratio_to_ideal", "many_runs": "runs_per_s"}
HIGHER_IS_BETTER = {"steps_per_s": True, "runs_per_s": True, "ratio_to_ideal": False}


def med(rs: list[dict[str, Any]], *path: str) -> float | None:
    xs = []
    for r in rs:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, int | float):
            xs.append(float(v))
    return statistics.median(xs) if xs else None


def fmt(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{x:,.{digits}f}"


def main(path: str) -> None:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    with open(path) as f:
        for line in f:
            if line.startswith("{"):
                r = json.loads(line)
                groups[(r["peer"], r["workload"], int(r.get("workers") or 0))].append(r)
    limit = med(groups.get(("postgresql", "commit_limit", 0), []), "commits_per_s")
    counts = sorted({w for (p, _, w) in groups if p == "charter" and w})
    print(f"commit limit (one connection, single-row INSERT + COMMIT): {fmt(limit, 0)} commits/s\n")
    head = ["workload", "DBOS", *[f"Charter {n} worker{'s' if n > 1 else ''}" for n in counts], "best / DBOS"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for wl, key in METRIC.items():
        dbos = groups.get(("dbos", wl, 0), [])
        d = med(dbos, key)
        cells = [wl, f"{fmt(d, 2 if key == 'ratio_to_ideal' else 1)} ({ok(dbos)})"]
        ours = []
        for n in counts:
            rs = groups.get(("charter", wl, n), [])
            v = med(rs, key)
            ours.append(v)
            extra = f", {v / limit * 100:.0f}% of the limit" if key == "steps_per_s" and v and limit else ""
            cells.append(f"{fmt(v, 2 if key == 'ratio_to_ideal' else 1)}{extra} ({ok(rs)})")
        best = [v for v in ours if v is not None]
        if best and d:
            b = max(best) if HIGHER_IS_BETTER[key] else min(best)
            cells.append(f"{(b / d if HIGHER_IS_BETTER[key] else d / b):.2f}x")
        else:
            cells.append("")
        print("| " + " | ".join(cells) + " |")
    print("\nready -> started (hand-offs to idle workers; ms, medians of the runs' p50 / p99 / max):\n")
    print("| workload | workers | hand-offs | p50 | p99 | max | started in the same transaction |")
    print("|---|---|---|---|---|---|---|")
    for (peer, wl, n), rs in sorted(groups.items()):
        if peer != "charter" or "ready_to_started" not in rs[0]:
            continue
        print(f"| {wl} | {n} | {fmt(med(rs, 'ready_to_started', 'handoffs'), 0)} | "
              f"{fmt(med(rs, 'ready_to_started', 'p50_ms'), 2)} | {fmt(med(rs, 'ready_to_started', 'p99_ms'), 2)} | "
              f"{fmt(med(rs, 'ready_to_started', 'max_ms'), 2)} | {fmt(med(rs, 'ready_to_started', 'same_tx'), 0)} |")
    print("\nCPU seconds while timed (medians: PostgreSQL / workers / bench) and the wall time:\n")
    print("| workload | workers | seconds | to last commit | PostgreSQL | workers | bench | other processes |")
    print("|---|---|---|---|---|---|---|---|")
    for (peer, wl, n), rs in sorted(groups.items()):
        if peer == "charter" and "cpu_s" in rs[0]:
            print(f"| {wl} | {n} | {fmt(med(rs, 'seconds'), 3)} | {fmt(med(rs, 'to_last_commit_s'), 3)} | "
                  f"{fmt(med(rs, 'cpu_s', 'postgres'), 2)} | {fmt(med(rs, 'cpu_s', 'workers'), 2)} | "
                  f"{fmt(med(rs, 'cpu_s', 'bench'), 2)} | {fmt(med(rs, 'cpu_s', 'other'), 2)} |")
    print("\nreference lines (medians):")
    for (peer, wl, _), rs in sorted(groups.items()):
        if peer == "dbos" and wl not in METRIC:
            print(f"- dbos {wl}: {fmt(med(rs, 'seconds'), 3)} s, "
                  + ", ".join(f"{k}={fmt(med(rs, k), 2)}" for k in ("steps_per_s", "runs_per_s", "ratio_to_ideal")
                              if med(rs, k) is not None) + f" ({ok(rs)})")


def ok(rs: list[dict[str, Any]]) -> str:
    return f"{sum(1 for r in rs if r.get('ok') is True)}/{len(rs)} ok"


if __name__ == "__main__":
    main(sys.argv[1])
