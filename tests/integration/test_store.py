"""The SQLite store for real: schema from migrations, settings, errors, fencing."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

import pytest

from charter import SQLiteStore, StoreError, open_store
from charter.engine.rules import RunState, apply
from charter.events import RunCreated, StepStarted
from charter.plan import Plan
from charter.store.sql import migrations


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
    declared.executescript(resources.files("charter.store").joinpath("schema.sql").read_text())
    migrated = sqlite3.connect(tmp_path / "migrated.db")
    assert schema_of(migrated) == schema_of(declared)
    assert schema_of(migrated)  # not vacuously equal
    versions = [r[0] for r in migrated.execute("SELECT version FROM schema_migrations")]
    assert versions == [v for v, _, _ in migrations()]
    assert versions == sorted(versions) and len(versions) >= 2


def test_opening_twice_applies_nothing_new(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "a.db").close()
    SQLiteStore(tmp_path / "a.db").close()
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(migrations())


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
        open_store("postgres://x")


def test_durability_settings(tmp_path: Path) -> None:
    normal = SQLiteStore(tmp_path / "n.db")
    full = SQLiteStore(tmp_path / "f.db", synchronous="full")
    assert normal._fetchall("PRAGMA synchronous")[0][0] == 1
    assert full._fetchall("PRAGMA synchronous")[0][0] == 2
    assert normal._fetchall("PRAGMA journal_mode")[0][0] == "wal"
    with pytest.raises(StoreError, match="synchronous must be one of"):
        SQLiteStore(tmp_path / "x.db", synchronous="sometimes")


def _new_run(store: SQLiteStore, owner: str) -> RunState:
    created = RunCreated(at=1.0, plan=Plan.from_dict({"goal": "g", "steps": [{"id": "a", "tool": "t"}]}).to_json())
    state = RunState.from_created("r1", created)
    store.create_run(state, created, owner, lease_expires=100.0)
    return state


def test_only_the_owner_can_write_and_a_stale_writer_is_fenced(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    state = _new_run(store, "host:1:a")
    ev = StepStarted(at=2.0, step="a", key="r1/a")
    apply(state, ev)
    with pytest.raises(StoreError, match="changed by another process"):
        store.append([(state, [ev])], owner="host:2:b")
    assert [e.type for e in store.events("r1")] == ["RunCreated"]  # nothing written
    store.append([(state, [ev])], owner="host:1:a")
    stale = RunState.from_created("r1", store.events("r1")[0])  # a copy that missed an event
    stale.last_seq = 1
    with pytest.raises(StoreError):
        store.append([(stale, [ev])], owner="host:1:a")
    assert [e.type for e in store.events("r1")] == ["RunCreated", "StepStarted"]
    assert store.get_run("r1").last_seq == 2  # type: ignore[union-attr]


def test_claims_and_leases(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    _new_run(store, "host:1:a")
    assert not store.claim("r1", "host:2:b", 200.0, expected_owner=None)
    assert store.claim("r1", "host:2:b", 200.0, expected_owner="host:1:a")
    assert store.get_run("r1").owner == "host:2:b"  # type: ignore[union-attr]
    store.release(["r1"], "host:9:z")  # not the owner: no effect
    assert store.get_run("r1").owner == "host:2:b"  # type: ignore[union-attr]
    store.release(["r1"], "host:2:b")
    assert store.get_run("r1").owner is None  # type: ignore[union-attr]


def test_a_full_disk_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    state = _new_run(store, "o")
    store._execute("PRAGMA max_page_count = " + str(store._fetchall("PRAGMA page_count")[0][0] + 1))
    big = StepStarted(at=2.0, step="a", key="k", args={"blob": "x" * 200_000})
    apply(state, big)
    with pytest.raises(StoreError, match="disk is full"):
        store.append([(state, [big])], owner="o")
    store._execute("PRAGMA max_page_count = 1000000")
    assert [e.type for e in store.events("r1")] == ["RunCreated"]
    store.append([(state, [big])], owner="o")
    assert store.events("r1")[1].args["blob"] == "x" * 200_000  # type: ignore[attr-defined]


def test_requests_go_with_the_commit_that_answers_them_or_with_the_finished_run(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    state = _new_run(store, "o")
    store.add_request("r1", "pause", "lunch", 2.0)
    [(rid, run, action, reason)] = store.pending_requests()
    assert (run, action, reason) == ("r1", "pause", "lunch")
    assert store.pending_requests() != []  # reading takes nothing
    ev = StepStarted(at=3.0, step="a", key="r1/a")
    apply(state, ev)
    store.append([(state, [ev])], "o", requests_done=[rid])
    assert store.pending_requests() == []
    store.add_request("r1", "cancel", "", 4.0)
    store.release(["r1"], "o")
    assert len(store.pending_requests()) == 1  # the run is not over: the request still applies
    store._execute("UPDATE runs SET status = 'succeeded'")
    store.release(["r1"], "o")
    assert store.pending_requests() == []  # a request for a finished run is stale
