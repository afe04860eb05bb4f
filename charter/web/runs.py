"""The runs list: filters and pages, through :meth:`~charter.Charter.runs`.

A page is keyset-paged (the next page starts after the last id of this one), so it
costs the same on page 1 and page 2,000. ``interrupted`` is not a stored status (the
run's log says running; its process is gone): asked for, it is read as the in-flight
statuses and only the rows marked interrupted are kept.

It may import the facade; never the engine or the store.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Collection

from ..app import Charter
from ..errors import ConfigError
from ..store import RunRow

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
IN_FLIGHT = ("running", "replanning")


def parse_age(text: str) -> float:
    """``30m``, ``6h``, ``7d``, ``2w`` as seconds; a clear error for anything else."""
    m = _AGE.match(text)
    if not m:
        raise ConfigError(f"age must be a number and a unit (s, m, h, d or w), like 30m or 7d; not {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


async def list_runs(charter: Charter, limit: int, *, status: Collection[str], since: float | None,
                    text: str | None, before: str | None) -> tuple[list[RunRow], bool]:
    """A page of runs, newest first, and whether there are more after it."""
    wanted = set(status)
    interrupted_only = wanted == {"interrupted"}
    stored = (wanted - {"interrupted"}) | (set(IN_FLIGHT) if "interrupted" in wanted else set())
    rows = await _runs(charter, limit + 1, status=stored or None, since=since, text=text, before=before)
    more = len(rows) > limit
    rows = rows[:limit]
    if "interrupted" in wanted:  # in flight, but only those whose process is gone (and other asked statuses)
        rows = [r for r in rows if r.interrupted or (not interrupted_only and r.status in wanted)]
    return rows, more


async def _runs(charter: Charter, limit: int, *, status: Collection[str] | None, since: float | None,
                text: str | None, before: str | None) -> list[RunRow]:
    if "before" in inspect.signature(charter.runs).parameters:
        return await charter.runs(limit, status=status, since=since, text=text, before=before)  # type: ignore[call-arg]
    # Until the store filters and pages runs itself (RunReader.runs with filters), filter here:
    # the first page without filters is the store's own (indexed); the rest reads every run.
    if status is None and since is None and not text and before is None:
        return await charter.runs(limit)
    rows = await charter.runs(1_000_000)
    if before is not None:
        ids = [r.id for r in rows]
        rows = rows[ids.index(before) + 1:] if before in ids else []
    needle = (text or "").lower()
    out = [r for r in rows
           if (status is None or r.status in status) and (since is None or r.created_at >= since)
           and (not needle or needle in f"{r.id} {r.goal} {getattr(r, 'request', '') or ''}".lower())]
    return out[:limit]
