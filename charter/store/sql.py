"""The SQL layer shared by every database: the :class:`~charter.store.base.Store` interface, written once.

Transactions and fencing live here. Writes happen in :meth:`SQLStore.append`
(and :meth:`SQLStore.create_run`), one transaction per batch of transitions:
the events and the run rows together, each run row fenced by its owner and its
last sequence number, so an engine that lost its run cannot write to it.

A dialect overrides only what differs: connecting, running a statement
(parameter style, error mapping), its migrations (identity columns and types),
and how it learns of a change (:meth:`change` and :meth:`wait_for_change`).
Every query is named, once, in ``queries.sql``.
"""

from __future__ import annotations

import json
import re
import time
from abc import abstractmethod
from collections.abc import Collection, Mapping, Sequence
from importlib import resources
from typing import Any

from ..errors import RunFencedError, StoreError
from ..events import EffectRecorded, Event
from ..workspace.secrets import redact
from . import payloads
from .base import Store
from .codec import dumps as _dumps
from .fleet import FleetSQL
from .history import HistorySQL
from .records import (
    FLEET,
    EffectRow,
    NewRun,
    RequestRow,
    RunRow,
    RunWrite,
)


def _load_queries() -> dict[str, str]:
    text = resources.files("charter.store").joinpath("queries.sql").read_text()
    queries: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        queries[name.strip()] = body.strip()
    return queries


QUERIES = _load_queries()


def migrations(dialect: str = "sqlite") -> list[tuple[int, str, str]]:
    """A dialect's numbered migration files, in order: (version, name, sql)."""
    folder = resources.files("charter.store").joinpath("migrations", dialect)
    out = []
    for entry in folder.iterdir():
        m = re.match(r"^(\d+)_(.+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(out)


def declared_schema(dialect: str = "sqlite") -> str:
    """The schema applying a dialect's migrations must produce (a test checks it does)."""
    return resources.files("charter.store").joinpath("migrations", dialect, "schema.sql").read_text()


def _run_row(r: Sequence[Any]) -> RunRow:
    return RunRow(
        id=r[0], status=r[1], goal=r[2], tool_sources=json.loads(r[3]), parent_run=r[4],
        steps_total=r[5], steps_done=r[6], reason=r[7],
        output=None if r[8] is None else json.loads(r[8]),
        created_at=r[9], updated_at=r[10], finished_at=r[11], last_seq=r[12], owner=r[13],
        lease_expires=r[14], request=r[15], tokens=r[16], cost=r[17], pruned_at=r[18],
    )


class _Transaction:
    """A write transaction as an async context manager (a small class: it is on every commit's path)."""

    __slots__ = ("joined", "store")

    def __init__(self, store: SQLStore) -> None:
        self.store = store
        self.joined = False

    async def __aenter__(self) -> None:
        if self.store._active():  # inside a transaction of this task already: part of it
            self.joined = True
            return
        await self.store._begin()

    async def __aexit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if self.joined:
            return
        if exc is not None:
            await self.store._rollback(exc)
            return
        try:
            await self.store._commit()
        except BaseException as failed:  # a commit can fail too (a full disk)
            await self.store._rollback(failed)
            raise
        self.store._committed()


class SQLStore(FleetSQL, HistorySQL, Store):
    """Events and derived state in SQL. A dialect supplies the connection and what differs."""

    #: the folder of this dialect's migrations under ``charter/store/migrations``
    dialect: str = ""

    def __init__(self) -> None:
        # The runs this handle has claimed and not let go of. When none is left the process
        # is idle, and a dialect may tidy up (SQLite truncates its write-ahead log).
        self._held: set[str] = set()

    # --- what a dialect provides -------------------------------------------------

    @abstractmethod
    async def _execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    async def _executemany(self, sql: str, rows: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    async def _fetchall(self, sql: str, params: dict[str, Any] | None = None) -> list[Sequence[Any]]: ...

    @abstractmethod
    async def _begin(self) -> None:
        """Start a write transaction (the dialect's strongest lock on what it writes)."""

    @abstractmethod
    async def _commit(self) -> None: ...

    @abstractmethod
    async def _rollback(self, exc: BaseException) -> None:
        """Undo the transaction that ``exc`` broke; may raise a clearer error in its place."""

    @abstractmethod
    def _active(self) -> bool:
        """Whether the calling task is inside a write transaction (another one joins it)."""

    def _locking(self, skip_locked: bool) -> str:
        """What ends a query that locks the rows it reads for the transaction (nothing where a
        write transaction locks the whole database)."""
        return ""

    def _committed(self) -> None:
        """Called after every write transaction committed (a dialect may tell waiters at once)."""

    def _idle(self) -> None:
        """Called when this handle holds no run any more (most dialects have nothing to tidy up)."""

    async def _migrated(self) -> None:
        """Called at the end of the migrations' transaction, before it commits: a last check."""

    def transaction(self) -> _Transaction:
        """``async with store.transaction():`` one write transaction, committed if the block ends well.

        The store's own writes inside the block join it (all of it commits, or none)."""
        return _Transaction(self)

    def _sql(self, name: str) -> str:
        return QUERIES[name]

    # --- schema ------------------------------------------------------------------

    async def migrate(self) -> None:
        """Apply the migrations this database has not seen yet (and write nothing if there are none,
        so that a store one may only read can still be inspected)."""
        known = migrations(self.dialect)
        latest = known[-1][0]
        try:
            current = (await self._fetchall(self._sql("select_schema_version")))[0][0]
        except StoreError:
            current = None  # no schema yet
        if current is not None and current > latest:
            raise StoreError(
                f"{self.location} has schema version {current}, newer than this Charter "
                f"understands ({latest}): upgrade Charter"
            )
        if current is not None and current == latest:
            return
        if self.read_only:
            raise StoreError(
                f"{self.location} has schema version {current}, older than this Charter's ({latest}), "
                "and is open only to read: open it once with write access to upgrade it"
            )
        async with self.transaction():
            await self._execute(self._sql("create_schema_migrations"))
            done = {r[0] for r in await self._fetchall(self._sql("select_migrations_done"))}
            for version, name, sql in known:
                if version in done:
                    continue
                for statement in _statements(sql):
                    await self._execute(statement)
                await self._execute(self._sql("insert_migration"), {"v": version, "n": name, "t": time.time()})
            await self._migrated()

    async def schema_version(self) -> tuple[int, int]:
        rows = await self._fetchall(self._sql("select_schema_version"))
        return int(rows[0][0]), migrations(self.dialect)[-1][0]

    # --- writing -------------------------------------------------------------------

    async def create_run(self, run: NewRun, first: RunWrite, owner: str, lease_expires: float | None) -> None:
        async with self.transaction():
            await self._execute(self._sql("insert_run"), {
                "id": run.run_id, "status": first.run.status, "goal": run.goal,
                "tool_sources": _dumps(list(run.tool_sources)), "parent_run": run.parent_run,
                "steps_total": run.steps_total, "created_at": run.created_at,
                "owner": owner, "lease_expires": lease_expires,
                "request": None if run.request is None else redact(run.request),
            })
            await self._write([first], owner)
        if owner != FLEET:
            self._held.add(run.run_id)

    async def append(self, writes: Sequence[RunWrite], owner: str, answered: Sequence[int] = ()) -> None:
        writes = [w for w in writes if w.events]
        if not writes and not answered:
            return
        async with self.transaction():
            await self._write(writes, owner)
            if answered:
                await self._executemany(self._sql("delete_request"), [{"id": i} for i in answered])

    async def _write(self, writes: Sequence[RunWrite], owner: str) -> None:
        event_rows: list[dict[str, Any]] = []
        effect_rows: list[dict[str, Any]] = []
        payload_rows: list[dict[str, Any]] = []
        for w in writes:  # the run rows first: a writer that lost its run learns it before writing more
            r = w.run
            query = self._sql("update_run" if w.status_changed else "update_run_same_status")
            changed = await self._execute(query, {
                "id": w.run_id, "status": r.status, "steps_done": r.steps_done, "reason": redact(r.reason),
                "output": None if r.output is None else _dumps(r.output), "updated_at": r.updated_at,
                "finished_at": r.finished_at, "last_seq": w.last_seq, "owner": owner, "prev_seq": w.after_seq,
                "tokens": r.tokens, "cost": r.cost,
            })
            if changed != 1:
                raise RunFencedError(
                    f"run {w.run_id} was changed by another process (or is no longer owned by this one); "
                    "nothing was written"
                )
            for seq, ev in enumerate(w.events, start=w.after_seq + 1):
                data, parts = payloads.split(ev.type, ev.to_data())
                event_rows.append({"run_id": w.run_id, "seq": seq, "type": ev.type, "at": ev.at, "data": data})
                if parts:
                    payload_rows.extend({"run_id": w.run_id, "hash": p.hash, "size": p.size, "data": p.data}
                                        for p in parts.values())
                if isinstance(ev, EffectRecorded):
                    effect_rows.append({
                        "run_id": w.run_id, "seq": seq, "step_id": ev.step,
                        "item": -1 if ev.item is None else ev.item, "attempt": ev.attempt, "key": ev.key,
                        "tool": ev.tool, "target": _dumps(ev.target), "result": _dumps(ev.result), "at": ev.at,
                    })
        if payload_rows:
            await self._executemany(self._sql("insert_payload"), payload_rows)
        await self._executemany(self._sql("insert_event"), event_rows)
        if effect_rows:
            await self._executemany(self._sql("insert_effect"), effect_rows)
        for w in writes:
            if w.queue is not None:
                await self._write_queue(w.run_id, w.queue)

    # --- ownership ----------------------------------------------------------------

    async def claim(self, run_id: str, owner: str, lease_expires: float, expected_owner: str | None) -> bool:
        async with self.transaction():
            n = await self._execute(self._sql("claim_run"), {
                "id": run_id, "owner": owner, "lease_expires": lease_expires, "expected_owner": expected_owner or "",
            })
            if n == 1:
                await self._execute(self._sql("delete_timer"), {"id": run_id})
        if n == 1:
            self._held.add(run_id)
        return n == 1

    async def renew(self, run_ids: Sequence[str], owner: str, lease_expires: float) -> None:
        async with self.transaction():
            await self._executemany(self._sql("renew_lease"),
                                    [{"id": r, "owner": owner, "lease_expires": lease_expires} for r in run_ids])

    async def release(self, run_ids: Sequence[str], owner: str, timers: Mapping[str, float] | None = None) -> None:
        async with self.transaction():
            await self._executemany(self._sql("release_run"), [{"id": r, "owner": owner} for r in run_ids])
            await self._executemany(self._sql("drop_finished_requests"), [{"id": r} for r in run_ids])
            if timers:
                await self._executemany(self._sql("delete_timer"), [{"id": r} for r in timers])
                await self._executemany(self._sql("insert_timer"), [{"id": r, "due_at": t} for r, t in timers.items()])
        if self._held:
            self._held.difference_update(run_ids)
            if not self._held:
                self._idle()

    # --- control requests -------------------------------------------------------------

    async def add_request(self, request: RequestRow) -> int:
        async with self.transaction():
            rows = await self._fetchall(self._sql("insert_request"), {
                "run_id": request.run_id, "kind": request.kind, "step": request.step,
                "requested_by": request.by, "reason": redact(request.reason), "data": _dumps(request.data),
                "created_at": request.created_at,
            })
        return int(rows[0][0])

    async def pending_requests(self, run_ids: Sequence[str] | None = None) -> list[RequestRow]:
        wanted = None if run_ids is None else set(run_ids)
        return [
            RequestRow(id=r[0], run_id=r[1], kind=r[2], step=r[3], by=r[4], reason=r[5], data=json.loads(r[6]),
                       created_at=r[7])
            for r in await self._fetchall(self._sql("select_requests"))
            if wanted is None or r[1] in wanted
        ]

    # --- reading ------------------------------------------------------------------

    async def events(self, run_id: str, after: int = 0) -> list[Event]:
        rows = await self._fetchall(self._sql("select_events"), {"run_id": run_id, "after": after})
        datas = [json.loads(r[3]) for r in rows]
        if any(payloads.refers(r[3]) for r in rows):
            datas = await self._join(run_id, datas)
        return [Event.from_data(r[1], r[2], d) for r, d in zip(rows, datas, strict=True)]

    async def _join(self, run_id: str, datas: list[Any]) -> list[Any]:
        """Events' data with the payloads they refer to read back in place (those refer to smaller
        ones in turn: read until none is left)."""
        known: dict[str, tuple[int, Any]] = {}  # hash -> (size, the payload parsed; None once pruned)
        wanted = payloads.hashes(datas, set())
        while wanted:
            rows = await self._fetchall(self._sql("select_payloads"),
                                        {"run_id": run_id, "hashes": _dumps(sorted(wanted))})
            more: set[str] = set()
            for h, size, text in rows:
                value = None if text is None else json.loads(text)
                known[h] = (int(size), value)
                if text is not None and payloads.refers(text):
                    payloads.hashes(value, more)
            wanted = more - known.keys()
        return [payloads.join(d, known.get) for d in datas]

    async def effects(self, run_id: str | None = None, limit: int = 1000) -> list[EffectRow]:
        rows = await self._fetchall(self._sql("select_effects"), {"run_id": run_id or "", "limit": limit})
        return [
            EffectRow(run_id=r[0], seq=r[1], step_id=r[2], item=None if r[3] < 0 else r[3], attempt=r[4],
                      key=r[5], tool=r[6], target=json.loads(r[7]), result=None if r[8] is None else json.loads(r[8]),
                      at=r[9])
            for r in rows
        ]

    async def get_run(self, run_id: str) -> RunRow | None:
        rows = await self._fetchall(self._sql("select_run"), {"id": run_id})
        return _run_row(rows[0]) if rows else None

    async def find_run_ids(self, prefix: str) -> list[str]:
        return [r[0] for r in await self._fetchall(self._sql("select_run_ids_like"), {"prefix": _like(prefix) + "%"})]

    async def list_runs(self, limit: int = 50, *, statuses: Collection[str] | None = None, since: float | None = None,
                        text: str | None = None, before: str | None = None) -> list[RunRow]:
        params = {
            "limit": limit, "since": since, "before": before,
            "statuses": None if statuses is None else "," + ",".join(statuses) + ",",
            "text": None if not text else "%" + _like(text.lower()) + "%",
        }
        return [_run_row(r) for r in await self._fetchall(self._sql("select_runs"), params)]

    async def unfinished_runs(self) -> list[tuple[str, str | None, float | None]]:
        return [(r[0], r[1], r[2]) for r in await self._fetchall(self._sql("select_unfinished_runs"))]


def _like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (escaped with a backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _statements(sql: str) -> list[str]:
    """Split a migration file into statements (no semicolons inside literals, by convention)."""
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]
