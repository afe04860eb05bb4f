"""Bounded history, the shared SQL layer's part: pruning old runs' payloads, and what uses the space.

A mixin of :class:`~charter.store.sql.SQLStore`, written once for every dialect with
the named queries of ``queries.sql``. Payloads themselves (how events' bulky parts
are stored once) are :mod:`charter.store.payloads`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from .records import Pruned, RunSize, StoreStats

#: runs pruned in one transaction (a SQLite store's writers wait for each)
_BATCH = 200


class HistorySQL:
    """``prune`` and ``stats`` in SQL (mixed into :class:`~charter.store.sql.SQLStore`)."""

    # what the SQL layer gives (see SQLStore)
    async def _execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        raise NotImplementedError

    async def _fetchall(self, sql: str, params: dict[str, Any] | None = None) -> list[Sequence[Any]]:
        raise NotImplementedError

    def _sql(self, name: str) -> str:
        raise NotImplementedError

    def transaction(self) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def _disk_size(self) -> int | None:
        """The bytes the database takes where it lives, if the dialect can tell."""
        return None

    async def prune(self, before: float, now: float, *, keep_failed: bool = False) -> Pruned:
        runs = payloads = size = 0
        while True:
            async with self.transaction():
                nos = [r[0] for r in await self._fetchall(self._sql("select_prunable"), {
                    "before": before, "keep_failed": int(keep_failed), "limit": _BATCH})]
                for no in nos:
                    count, total = (await self._fetchall(self._sql("count_payloads_of_run"), {"no": no}))[0]
                    await self._execute(self._sql("prune_payloads_of_run"), {"no": no})
                    await self._execute(self._sql("mark_run_pruned"), {"no": no, "now": now})
                    payloads += int(count)
                    size += int(total)
            runs += len(nos)
            if len(nos) < _BATCH:
                return Pruned(runs, payloads, size)

    async def stats(self, biggest: int = 5) -> StoreStats:
        by_status = await self._fetchall(self._sql("stats_runs"))
        events, event_bytes = (await self._fetchall(self._sql("stats_events")))[0]
        payloads, payload_bytes, pruned, pruned_bytes = (await self._fetchall(self._sql("stats_payloads")))[0]
        effects, effect_bytes = (await self._fetchall(self._sql("stats_effects")))[0]
        sizes = await self._fetchall(self._sql("stats_biggest_runs"), {"limit": biggest})
        oldest = [r[3] for r in by_status if r[3] is not None]
        return StoreStats(
            runs={r[0]: int(r[1]) for r in by_status}, pruned_runs=sum(int(r[2]) for r in by_status),
            oldest_run=min(oldest) if oldest else None,
            events=int(events), event_bytes=int(event_bytes),
            payloads=int(payloads), payload_bytes=int(payload_bytes),
            pruned_payloads=int(pruned), pruned_bytes=int(pruned_bytes),
            effects=int(effects), effect_bytes=int(effect_bytes),
            biggest=[RunSize(r[0], r[1], r[2], r[3], int(r[4])) for r in sizes if int(r[4]) > 0],
            on_disk=await self._disk_size(),
        )
