"""The SQLite store for real: schema from migrations, settings, errors, fencing, requests, wake-ups."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from charter import SQLiteStore, StoreError, open_store
from charter.engine.rules import NewRunRecord, RunRecord
from charter.errors import RunFencedError
from charter.events import Event, RunCreated, StepStarted
from charter.plan import Plan
from charter.store import RequestRow, RunWrite
from charter.store.sql import declared_schema, migrations
from charter.testing import FakeClock


def schema_of(conn: sqlite3.Connection) -> dict[str, object]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations' ORDER BY name")]
    out: dict[str, object] = {}
    for t in tables:
        out[t] = {
            "columns": [tuple(r) for r in conn.execute(f"PRAGMA table_info({t})")],
            "indexes": sorted((r[1], r[2]) for r in conn.execute(f"PRAGMA index_list({t})")),
            "foreign_keys": [tuple(r) for r in conn.execute(f"PRAGMA foreign_key_list({t})")],
        }
    return out


def test_migrations_reach_the_declared_schema(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "migrated.db").close()
    declared = sqlite3.connect(tmp_path / "declared.db")
    declared.executescript(declared_schema("sqlite"))
    migrated = sqlite3.connect(tmp_path / "migrated.db")
    assert schema_of(migrated) == schema_of(declared)
    assert schema_of(migrated)  # not vacuously equal
    versions = [r[0] for r in migrated.execute("SELECT version FROM schema_migrations")]
    assert versions == [v for v, _, _ in migrations("sqlite")]
    assert versions == sorted(versions) and len(versions) >= 3


def test_opening_twice_applies_nothing_new(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "a.db").close()
    SQLiteStore(tmp_path / "a.db").close()
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(migrations("sqlite"))


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "a.db").close()
    conn = sqlite3.connect(tmp_path / "a.db")
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
    conn.commit()
    with pytest.raises(StoreError, match="schema version 99, newer"):
        SQLiteStore(tmp_path / "a.db")


def test_not_a_database_and_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a Charter store or is damaged"):
        SQLiteStore(tmp_path / "junk.db")
    with pytest.raises(StoreError, match="does not exist"):
        SQLiteStore(tmp_path / "no" / "such" / "dir.db")
    with pytest.raises(StoreError, match="unsupported store"):
        open_store("mysql://x")


def test_durability_settings(tmp_path: Path) -> None:
    normal = SQLiteStore(tmp_path / "n.db")
    full = SQLiteStore(tmp_path / "f.db", synchronous="full")
    assert normal._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert full._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert normal._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(StoreError, match="synchronous must be one of"):
        SQLiteStore(tmp_path / "x.db", synchronous="sometimes")


def _change(status: str = "running", at: float = 1.0) -> RunRecord:
    return RunRecord(status=status, steps_done=0, reason="", output=None, updated_at=at, finished_at=None)


def _new_run(store: SQLiteStore, owner: str) -> None:
    created = RunCreated(at=1.0, plan=Plan.from_dict({"goal": "g", "steps": [{"id": "a", "tool": "t"}]}).to_json())
    run = NewRunRecord("r1", "running", "g", (), None, 1, 1.0)
    asyncio.run(store.create_run(run, RunWrite("r1", 0, [created], _change()), owner, lease_expires=100.0))


def _write(after: int, *events: Event) -> RunWrite:
    return RunWrite("r1", after, events, _change(at=events[-1].at))


def test_a_new_run_is_its_row_and_its_first_events_together(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    _new_run(store, "host:1:a")
    row = asyncio.run(store.get_run("r1"))
    assert row is not None and (row.status, row.last_seq, row.owner, row.goal) == ("running", 1, "host:1:a", "g")
    with pytest.raises(StoreError):  # the same id again: nothing of it is written
        _new_run(store, "host:2:b")
    assert [e.type for e in asyncio.run(store.events("r1"))] == ["RunCreated"]


def test_only_the_owner_can_write_and_a_stale_writer_is_fenced(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    _new_run(store, "host:1:a")
    ev = StepStarted(at=2.0, step="a", key="r1/a")
    with pytest.raises(RunFencedError, match="changed by another process"):
        asyncio.run(store.append([_write(1, ev)], owner="host:2:b"))
    assert [e.type for e in asyncio.run(store.events("r1"))] == ["RunCreated"]  # nothing written
    asyncio.run(store.append([_write(1, ev)], owner="host:1:a"))
    with pytest.raises(RunFencedError):  # a writer that missed an event: two writers never both win
        asyncio.run(store.append([_write(1, ev)], owner="host:1:a"))
    assert [e.type for e in asyncio.run(store.events("r1"))] == ["RunCreated", "StepStarted"]
    assert asyncio.run(store.get_run("r1")).last_seq == 2  # type: ignore[union-attr]
    assert [e.type for e in asyncio.run(store.events("r1", after=1))] == ["StepStarted"]


def test_claims_and_leases(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    _new_run(store, "host:1:a")
    assert not asyncio.run(store.claim("r1", "host:2:b", 200.0, expected_owner=None))
    assert asyncio.run(store.claim("r1", "host:2:b", 200.0, expected_owner="host:1:a"))
    assert asyncio.run(store.get_run("r1")).owner == "host:2:b"  # type: ignore[union-attr]
    asyncio.run(store.renew(["r1"], "host:2:b", 300.0))
    assert asyncio.run(store.get_run("r1")).lease_expires == 300.0  # type: ignore[union-attr]
    asyncio.run(store.release(["r1"], "host:9:z"))  # not the owner: no effect
    assert asyncio.run(store.get_run("r1")).owner == "host:2:b"  # type: ignore[union-attr]
    asyncio.run(store.release(["r1"], "host:2:b"))
    assert asyncio.run(store.get_run("r1")).owner is None  # type: ignore[union-attr]


def test_a_full_disk_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    _new_run(store, "o")
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages + 1}")
    big = StepStarted(at=2.0, step="a", key="k", args={"blob": "x" * 200_000})
    with pytest.raises(StoreError, match="disk is full"):
        asyncio.run(store.append([_write(1, big)], owner="o"))
    store._conn.execute("PRAGMA max_page_count = 1000000")
    assert [e.type for e in asyncio.run(store.events("r1"))] == ["RunCreated"]
    asyncio.run(store.append([_write(1, big)], owner="o"))
    assert asyncio.run(store.events("r1"))[1].args["blob"] == "x" * 200_000  # type: ignore[attr-defined]


def test_requests_are_typed_and_go_with_the_commit_that_carries_them_out(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    _new_run(store, "o")
    decision = RequestRow("r1", "reject_step", 2.0, step="sign_off", by="ana", reason="numbers are wrong")
    rid = asyncio.run(store.add_request(decision))
    [stored] = asyncio.run(store.pending_requests())
    assert stored == RequestRow("r1", "reject_step", 2.0, "sign_off", "ana", "numbers are wrong", {}, rid)
    assert asyncio.run(store.pending_requests(["other"])) == []
    assert asyncio.run(store.pending_requests()) != []  # reading takes nothing
    asyncio.run(store.append([_write(1, StepStarted(at=3.0, step="a", key="r1/a"))], "o", answered=[rid]))
    assert asyncio.run(store.pending_requests()) == []
    revise = RequestRow("r1", "revise_plan", 4.0, by="bo", data={"plan": {"goal": "h", "steps": []}})
    asyncio.run(store.add_request(revise))
    assert asyncio.run(store.pending_requests())[0].data == {"plan": {"goal": "h", "steps": []}}
    asyncio.run(store.release(["r1"], "o"))
    assert len(asyncio.run(store.pending_requests())) == 1  # the run is not over: the request still applies
    store._conn.execute("UPDATE runs SET status = 'succeeded'")
    asyncio.run(store.release(["r1"], "o"))
    assert asyncio.run(store.pending_requests()) == []  # a request for a finished run is stale


def test_requests_of_an_older_store_keep_their_kind_and_fields(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                 "applied_at DOUBLE PRECISION NOT NULL)")
    for version, name, sql in migrations("sqlite")[:2]:
        conn.executescript(sql)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (version, name))
    conn.execute("INSERT INTO runs (id, status, goal, tool_sources, steps_total, created_at, updated_at) "
                 "VALUES ('r1', 'running', 'g', '[]', 1, 0, 0)")
    conn.execute("INSERT INTO events VALUES ('r1', 1, 'RunCreated', 0, '{}')")
    conn.execute("INSERT INTO requests (run_id, action, reason, created_at) VALUES ('r1', 'pause', 'lunch', 1)")
    conn.execute("INSERT INTO requests (run_id, action, reason, created_at) VALUES ('r1', 'approve', ?, 2)",
                 ('{"step": "ok", "by": "ana", "note": "fine"}',))
    conn.commit()
    conn.close()
    store = SQLiteStore(db)
    pause, approve = asyncio.run(store.pending_requests())
    assert (pause.kind, pause.reason, pause.step) == ("pause", "lunch", None)
    assert (approve.kind, approve.step, approve.by, approve.reason) == ("approve_step", "ok", "ana", "fine")
    assert [e.type for e in asyncio.run(store.events("r1"))] == ["RunCreated"]  # the log came along


async def test_a_waiter_wakes_at_once_for_a_write_here_and_soon_for_another_process(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    clock = FakeClock(auto_advance=True)
    seen = await store.change()
    assert await store.wait_for_change(seen, 5.0, clock) == seen  # nothing changed: back after the timeout
    assert clock.now() >= 5.0
    waiting = asyncio.ensure_future(store.wait_for_change(seen, 3600.0, clock))
    await asyncio.sleep(0)
    other = sqlite3.connect(tmp_path / "a.db")  # another process, as far as SQLite can tell
    other.execute("INSERT INTO runs (id, status, goal, tool_sources, steps_total, created_at, updated_at) "
                  "VALUES ('x', 'running', 'g', '[]', 1, 0, 0)")
    other.commit()
    assert await waiting != seen
    seen = await store.change()
    waiting = asyncio.ensure_future(store.wait_for_change(seen, 3600.0, clock))
    await asyncio.sleep(0)
    await store.add_request(RequestRow("x", "pause", clock.now()))  # a writer in this process wakes it at once
    assert await waiting != seen
