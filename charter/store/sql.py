"""The SQL layer shared by every database: the store's interface in domain terms.

Writes happen only in :meth:`SQLStore.append`, one transaction per batch of
transitions: the events, the derived step rows and the run row together. The
run row is fenced by its owner and its last sequence number, so an engine that
lost its run cannot write to it.
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..engine.rules import RunState, StepState, Unit, shown_status
from ..errors import StoreError
from ..events import EffectRecorded, Event, RunCreated
from ..workspace.secrets import redact

# ASCII-only JSON: a lone surrogate (a file name that is not UTF-8, say) is stored as \udcxx, not an error.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def _dumps(value: Any) -> str:
    """JSON as stored: every known secret masked (a no-op until some secret is used)."""
    return redact(_encode(value))


@dataclass(frozen=True)
class EffectRow:
    """One entry of the effect ledger."""

    run_id: str
    seq: int
    step_id: str
    item: int | None
    attempt: int
    key: str
    tool: str
    target: list[Any]
    result: Any
    at: float


def _load_queries() -> dict[str, str]:
    text = resources.files("charter.store").joinpath("queries.sql").read_text()
    queries: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        queries[name.strip()] = body.strip()
    return queries


QUERIES = _load_queries()


def migrations() -> list[tuple[int, str, str]]:
    """The numbered migration files, in order: (version, name, sql)."""
    folder = resources.files("charter.store").joinpath("migrations")
    out = []
    for entry in folder.iterdir():
        m = re.match(r"^(\d+)_(.+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(out)


@dataclass(frozen=True)
class RunRow:
    """A run as the store keeps it (derived from its events)."""

    id: str
    status: str
    goal: str
    tool_sources: list[str]
    parent_run: str | None
    steps_total: int
    steps_done: int
    reason: str
    output: Any
    created_at: float
    updated_at: float
    finished_at: float | None
    last_seq: int
    owner: str | None
    lease_expires: float | None
    #: in flight by its log, but whoever ran it is gone; set by :class:`~charter.Charter`,
    #: which knows how to tell (the store only keeps the owner and its lease)
    interrupted: bool = False


@dataclass(frozen=True)
class StepRow:
    step_id: str
    item: int | None
    status: str
    attempt: int
    retry_at: float | None
    started_at: float | None
    finished_at: float | None
    output: Any
    error: dict[str, Any] | None


def _run_row(r: Sequence[Any]) -> RunRow:
    return RunRow(
        id=r[0], status=r[1], goal=r[2], tool_sources=json.loads(r[3]), parent_run=r[4],
        steps_total=r[5], steps_done=r[6], reason=r[7],
        output=None if r[8] is None else json.loads(r[8]),
        created_at=r[9], updated_at=r[10], finished_at=r[11], last_seq=r[12], owner=r[13],
        lease_expires=r[14],
    )


class SQLStore(ABC):
    """Events and derived state in SQL. Subclasses supply the connection and dialect."""

    #: a human-readable location, for messages
    location: str = ""
    #: opened only to read: nothing is migrated or written
    read_only: bool = False

    def __init__(self) -> None:
        # The runs this handle has claimed and not let go of. When none is left the process
        # is idle, and a dialect may tidy up (SQLite truncates its write-ahead log).
        self._held: set[str] = set()

    # --- what a dialect provides -------------------------------------------------

    @abstractmethod
    def _execute(self, sql: str, params: dict[str, Any] | None = None) -> Any: ...

    @abstractmethod
    def _executemany(self, sql: str, rows: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    def _fetchall(self, sql: str, params: dict[str, Any] | None = None) -> list[Sequence[Any]]: ...

    @abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[None]: ...

    @abstractmethod
    def close(self) -> None: ...

    def _sql(self, name: str) -> str:
        return QUERIES[name]

    def _idle(self) -> None:  # noqa: B027 - a hook: most dialects have nothing to tidy up
        """Called when this handle holds no run any more."""

    # --- schema ------------------------------------------------------------------

    def migrate(self) -> None:
        """Apply the migrations this database has not seen yet (and write nothing if there are none,
        so that a store one may only read can still be inspected)."""
        known = migrations()
        latest = known[-1][0]
        try:
            current = self._fetchall(self._sql("select_schema_version"))[0][0]
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
        with self.transaction():
            self._execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            done = {r[0] for r in self._fetchall("SELECT version FROM schema_migrations")}
            for version, name, sql in known:
                if version in done:
                    continue
                for statement in _statements(sql):
                    self._execute(statement)
                self._execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (:v, :n, :t)",
                    {"v": version, "n": name, "t": time.time()},
                )

    # --- writing -------------------------------------------------------------------

    def create_run(self, state: RunState, created: RunCreated, owner: str, lease_expires: float) -> None:
        """Insert a new run with its ``RunCreated`` event."""
        with self.transaction():
            self._execute(
                self._sql("insert_run"),
                {
                    "id": state.run_id, "status": state.status, "goal": state.plan.goal,
                    "tool_sources": _dumps(state.tool_sources), "parent_run": state.parent_run,
                    "steps_total": len(state.steps), "created_at": created.at,
                    "owner": owner, "lease_expires": lease_expires,
                },
            )
            self._execute(
                self._sql("insert_event"),
                {"run_id": state.run_id, "seq": 1, "type": created.type, "at": created.at,
                 "data": _dumps(created.to_data())},
            )
        state.last_seq = 1
        self._held.add(state.run_id)

    def append(
        self, batch: Sequence[tuple[RunState, Sequence[Event]]], owner: str, requests_done: Sequence[int] = ()
    ) -> None:
        """Write the events of each run (already applied to its state) and the state they lead to.

        One transaction for the whole batch, which also deletes the control
        requests (``requests_done``) these events answer: a request is gone
        exactly when its effect is recorded. Raises :class:`StoreError` if a run
        is no longer owned by ``owner`` or was written by someone else meanwhile.
        """
        event_rows: list[dict[str, Any]] = []
        effect_rows: list[dict[str, Any]] = []
        step_rows: list[dict[str, Any]] = []
        run_updates: list[tuple[RunState, dict[str, Any]]] = []
        for state, events in batch:
            if not events:
                continue
            seq = state.last_seq
            touched: dict[tuple[str, int | None], None] = {}
            for ev in events:
                seq += 1
                event_rows.append({"run_id": state.run_id, "seq": seq, "type": ev.type, "at": ev.at,
                                   "data": _dumps(ev.to_data())})
                if isinstance(ev, EffectRecorded):
                    effect_rows.append({
                        "run_id": state.run_id, "seq": seq, "step_id": ev.step,
                        "item": -1 if ev.item is None else ev.item, "attempt": ev.attempt, "key": ev.key,
                        "tool": ev.tool, "target": _dumps(ev.target), "result": _dumps(ev.result), "at": ev.at,
                    })
                step = getattr(ev, "step", None)
                if step is not None and step in state.steps:
                    touched[(step, getattr(ev, "item", None))] = None
                    if getattr(ev, "item", None) is not None:
                        touched[(step, None)] = None
                elif step is None:
                    for sid in getattr(ev, "steps", ()):
                        touched[(sid, None)] = None
                        touched.update(((sid, i), None) for i in state.steps[sid].units if i is not None)
            for sid, item in touched:
                step_rows.append(_step_row(state, sid, item))
            run_updates.append((state, {
                "id": state.run_id, "status": state.status, "steps_done": state.done_steps,
                "reason": redact(state.reason),
                "output": None if state.output is None else _dumps(state.output),
                "updated_at": state.updated_at, "finished_at": state.finished_at,
                "last_seq": seq, "owner": owner, "prev_seq": state.last_seq,
            }))
        if not run_updates and not requests_done:
            return
        with self.transaction():
            for state, params in run_updates:  # first: a writer that lost its run learns it here
                if self._execute(self._sql("update_run"), params) != 1:
                    raise StoreError(
                        f"run {state.run_id} was changed by another process (or is no longer "
                        "owned by this one); nothing was written"
                    )
            self._executemany(self._sql("insert_event"), event_rows)
            if effect_rows:
                self._executemany(self._sql("insert_effect"), effect_rows)
            self._executemany(self._sql("upsert_step"), step_rows)
            self._executemany(self._sql("delete_request"), [{"id": i} for i in requests_done])
        for state, params in run_updates:
            state.last_seq = params["last_seq"]

    # --- ownership ----------------------------------------------------------------

    def claim(self, run_id: str, owner: str, lease_expires: float, expected_owner: str | None) -> bool:
        """Take a run that is free, ours, or owned by ``expected_owner`` (found dead or expired)."""
        with self.transaction():
            n = self._execute(
                self._sql("claim_run"),
                {"id": run_id, "owner": owner, "lease_expires": lease_expires,
                 "expected_owner": expected_owner or ""},
            )
        if n == 1:
            self._held.add(run_id)
        return bool(n == 1)

    def renew(self, run_ids: Sequence[str], owner: str, lease_expires: float) -> None:
        with self.transaction():
            self._executemany(self._sql("renew_lease"),
                              [{"id": r, "owner": owner, "lease_expires": lease_expires} for r in run_ids])

    def release(self, run_ids: Sequence[str], owner: str) -> None:
        """Let go of runs; requests left for a run that has ended can no longer apply and go too."""
        with self.transaction():
            self._executemany(self._sql("release_run"), [{"id": r, "owner": owner} for r in run_ids])
            self._executemany(self._sql("drop_finished_requests"), [{"id": r} for r in run_ids])
        if self._held:
            self._held.difference_update(run_ids)
            if not self._held:
                self._idle()

    # --- requests to the engine that owns a run --------------------------------------

    def add_request(self, run_id: str, action: str, reason: str, now: float) -> None:
        with self.transaction():
            self._execute(self._sql("insert_request"),
                          {"run_id": run_id, "action": action, "reason": reason, "created_at": now})

    def pending_requests(self) -> list[tuple[int, str, str, str]]:
        """Control requests not yet answered: (id, run, action, reason). Reading takes nothing:
        a request is deleted by the :meth:`append` that records its effect."""
        return [(r[0], r[1], r[2], r[3]) for r in self._fetchall(self._sql("select_requests"))]

    # --- reading ------------------------------------------------------------------

    def events(self, run_id: str, after: int = 0) -> list[Event]:
        rows = self._fetchall(self._sql("select_events"), {"run_id": run_id, "after": after})
        return [Event.from_data(r[1], r[2], json.loads(r[3])) for r in rows]

    def effects(self, run_id: str | None = None, limit: int = 1000) -> list[EffectRow]:
        """The effect ledger, oldest first: of one run, or of every run."""
        rows = self._fetchall(self._sql("select_effects"), {"run_id": run_id or "", "limit": limit})
        return [
            EffectRow(run_id=r[0], seq=r[1], step_id=r[2], item=None if r[3] < 0 else r[3], attempt=r[4],
                      key=r[5], tool=r[6], target=json.loads(r[7]), result=None if r[8] is None else json.loads(r[8]),
                      at=r[9])
            for r in rows
        ]

    def get_run(self, run_id: str) -> RunRow | None:
        rows = self._fetchall(self._sql("select_run"), {"id": run_id})
        return _run_row(rows[0]) if rows else None

    def find_run_ids(self, prefix: str) -> list[str]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return [r[0] for r in self._fetchall(self._sql("select_run_ids_like"), {"prefix": escaped + "%"})]

    def list_runs(self, limit: int = 50) -> list[RunRow]:
        return [_run_row(r) for r in self._fetchall(self._sql("select_runs"), {"limit": limit})]

    def unfinished_runs(self) -> list[tuple[str, str | None, float | None]]:
        return [(r[0], r[1], r[2]) for r in self._fetchall(self._sql("select_unfinished_runs"))]

    def steps(self, run_id: str) -> list[StepRow]:
        rows = self._fetchall(self._sql("select_steps"), {"run_id": run_id})
        return [
            StepRow(step_id=r[0], item=None if r[1] < 0 else r[1], status=r[2], attempt=r[3],
                    retry_at=r[4], started_at=r[5], finished_at=r[6],
                    output=None if r[7] is None else json.loads(r[7]),
                    error=None if r[8] is None else json.loads(r[8]))
            for r in rows
        ]


def _step_row(state: RunState, sid: str, item: int | None) -> dict[str, Any]:
    st: StepState = state.steps[sid]
    src: StepState | Unit
    if item is None:
        u = st.units.get(None)
        src = st
        attempt = u.attempt if u else max((x.attempt for x in st.units.values()), default=0)
        retry_at = u.retry_at if u else None
        status = shown_status(st)
    else:
        src = st.units[item]
        attempt, retry_at, status = src.attempt, src.retry_at, src.status
    output = src.output
    return {
        "run_id": state.run_id, "step_id": sid, "item": -1 if item is None else item,
        "status": status, "attempt": attempt, "retry_at": retry_at,
        "started_at": src.started_at, "finished_at": src.finished_at,
        "output": None if output is None else _dumps(output),
        "error": None if src.error is None else _dumps(src.error),
    }


def _statements(sql: str) -> list[str]:
    """Split a migration file into statements (no semicolons inside literals, by convention)."""
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]
