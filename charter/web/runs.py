"""The runs list: filters and pages, through :meth:`~charter.Charter.runs`.

A page is keyset-paged (the next page starts after the last id of this one), so it
costs the same on page 1 and page 2,000; the store filters (status, including
``interrupted``; age; text) and pages.

It may import the facade; never the engine or the store.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from ..app import Charter
from ..errors import ConfigError
from ..store import RunRow

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``30m``, ``6h``, ``7d``, ``2w`` as seconds; a clear error for anything else."""
    m = _AGE.match(text)
    if not m:
        raise ConfigError(f"age must be a number and a unit (s, m, h, d or w), like 30m or 7d; not {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


async def list_runs(charter: Charter, limit: int, *, status: Collection[str], since: float | None,
                    text: str | None, before: str | None) -> tuple[list[RunRow], bool]:
    """A page of runs, newest first, and whether there are more after it (one more is asked for).
    ``before`` must name a run (:class:`~charter.errors.RunNotFoundError` if not): a page after
    nothing would look like the end of the list."""
    if before is not None:
        before = await charter.resolve(before)
    rows = await charter.runs(limit + 1, status=set(status) or None, since=since, text=text, before=before)
    return rows[:limit], len(rows) > limit
