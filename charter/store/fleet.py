"""The fleet's part of the shared SQL layer: a fleet run's queue of tasks, the workers, the tools' limits.

A mixin of :class:`~charter.store.sql.SQLStore`, written once for every dialect
with the same named queries (``queries.sql``) and the dialect's row locks. Only
a writer that holds a run's row lock changes the run's tasks (see
:mod:`charter.engine.fleet`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .codec import dumps
from .records import FLEET, DueTask, Queue, RunLock, Task, ToolSlot, WorkerRow


class FleetSQL:
    """Tasks, workers and tool slots in SQL (mixed into :class:`~charter.store.sql.SQLStore`)."""

    # what the SQL layer gives (see SQLStore)
    async def _execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        raise NotImplementedError

    async def _executemany(self, sql: str, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def _fetchall(self, sql: str, params: dict[str, Any] | None = None) -> list[Sequence[Any]]:
        raise NotImplementedError

    def _sql(self, name: str) -> str:
        raise NotImplementedError

    def _active(self) -> bool:
        raise NotImplementedError

    def _locking(self, skip_locked: bool) -> str:
        raise NotImplementedError

    async def _write_queue(self, run_id: str, queue: Queue) -> None:
        """Make a fleet run's task rows match ``queue``: insert, change and delete only what differs."""
        no = queue.run_no
        if no is None:
            no = (await self._fetchall(self._sql("select_run_no"), {"id": run_id}))[0][0]
        had = queue.had
        if had is None:
            had = [_task(r) for r in await self._fetchall(self._sql("select_run_tasks"), {"no": no, "now": 0.0})]
        have = {t.key: t for t in had}
        inserts, updates = [], []
        for t in queue.tasks:
            row = {"no": no, "step": t.step, "item": -1 if t.item is None else t.item, "due_at": t.due_at,
                   "tool": t.tool, "owner": t.owner, "attempt": t.attempt}
            old = have.pop(t.key, None)
            if old is None:
                inserts.append(row)
            elif (old.due_at, old.owner, old.attempt, old.tool) != (t.due_at, t.owner, t.attempt, t.tool):
                updates.append(row)
        if have:
            await self._executemany(self._sql("delete_task"), [
                {"no": no, "step": step, "item": -1 if item is None else item} for step, item in have])
        if updates:
            await self._executemany(self._sql("update_task"), updates)
        if inserts:
            await self._executemany(self._sql("insert_task"), inserts)

    async def lock_run(self, run_id: str, now: float, *, skip_locked: bool = False) -> RunLock | None:
        if not self._active():
            raise RuntimeError("lock_run locks for a transaction: call it inside store.transaction()")
        rows = await self._fetchall(self._sql("lock_run") + self._locking(skip_locked), {"id": run_id})
        if not rows:
            return None  # not a fleet run, or (skip_locked) another writer holds it
        no, status, last_seq, sources = rows[0]
        tasks = [_task(r) for r in await self._fetchall(self._sql("select_run_tasks"), {"no": no, "now": now})]
        return RunLock(run_id, status, last_seq, json.loads(sources), tasks, no)

    async def lock_tools(self, tools: Sequence[str], now: float) -> dict[str, ToolSlot]:
        if not self._active():
            raise RuntimeError("lock_tools locks for a transaction: call it inside store.transaction()")
        slots = {}
        for tool in sorted(set(tools)):  # always in the same order: two writers cannot wait on each other
            await self._execute(self._sql("insert_tool_slot"), {"tool": tool})
            next_at = (await self._fetchall(self._sql("lock_tool_slot") + self._locking(False), {"tool": tool}))[0][0]
            running = (await self._fetchall(self._sql("count_tool_running"), {"tool": tool, "now": now}))[0][0]
            slots[tool] = ToolSlot(running=int(running), next_at=float(next_at))
        return slots

    async def save_tools(self, slots: dict[str, ToolSlot]) -> None:
        rows = [{"tool": t, "next_at": s.next_at} for t, s in slots.items() if s.changed]
        if rows:
            await self._executemany(self._sql("update_tool_slot"), rows)

    async def due_tasks(self, now: float, limit: int = 100) -> list[DueTask]:
        rows = await self._fetchall(self._sql("select_due_tasks"), {"now": now, "limit": limit})
        return [DueTask(run_id=r[0], step=r[1], item=None if r[2] < 0 else r[2], owner=r[3], tool=r[4],
                        fleet=r[5] == FLEET, tool_sources=json.loads(r[6])) for r in rows]

    async def hand_over(self, run_id: str) -> bool:
        if not self._active():
            raise RuntimeError("hand_over belongs to a transaction: call it inside store.transaction()")
        return await self._execute(self._sql("hand_over_run"), {"id": run_id}) == 1

    async def stopped_runs(self, owner: str) -> list[str]:
        return [r[0] for r in await self._fetchall(self._sql("select_stopped_runs"), {"owner": owner})]

    async def next_due(self) -> float | None:
        rows = await self._fetchall(self._sql("select_next_due"))
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def beat(self, worker: WorkerRow) -> None:
        # one statement on its own (autocommit), not a write transaction: it wakes nobody
        await self._execute(self._sql("upsert_worker"), {
            "id": worker.id, "host": worker.host, "pid": worker.pid, "started_at": worker.started_at,
            "heartbeat_at": worker.heartbeat_at, "expires_at": worker.expires_at,
            "concurrency": worker.concurrency, "running": worker.running, "runs": dumps(worker.runs),
            "lacking": dumps(worker.lacking), "stopping": 1 if worker.stopping else 0,
        })

    async def workers(self) -> list[WorkerRow]:
        return [
            WorkerRow(id=r[0], host=r[1], pid=r[2], started_at=r[3], heartbeat_at=r[4], expires_at=r[5],
                      concurrency=r[6], running=r[7], runs=json.loads(r[8]), lacking=json.loads(r[9]),
                      stopping=bool(r[10]))
            for r in await self._fetchall(self._sql("select_workers"))
        ]

    async def drop_worker(self, worker_id: str) -> None:
        await self._execute(self._sql("delete_worker"), {"id": worker_id})  # one statement: autocommit


def _task(r: Sequence[Any]) -> Task:
    return Task(step=r[0], item=None if r[1] < 0 else r[1], due_at=r[2], owner=r[3], attempt=r[4], tool=r[5],
                live=bool(r[6]))
