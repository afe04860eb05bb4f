"""The PostgreSQL store, against a throwaway cluster started by the test (groundwork for the fleet)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from charter import Charter, RunFencedError, tool
from charter.engine.rules import NewRunRecord, RunRecord
from charter.events import RunCreated, StepStarted
from charter.store import RequestRow, RunWrite, open_store
from charter.testing import FakeClock
from tests.pg import cluster


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with cluster() as url:
        yield url


@tool
def double(n: int) -> int:
    return 2 * n


PLAN: dict[str, Any] = {"goal": "g", "inputs": {"xs": [1, 2, 3]}, "steps": [
    {"id": "a", "tool": "double", "args": {"n": 2}},
    {"id": "b", "tool": "double", "args": {"n": "${a}"}},
    {"id": "c", "tool": "double", "for_each": "${inputs.xs}", "args": {"n": "${item}"}},
]}


async def test_a_run_on_postgresql_goes_as_on_sqlite(pg_url: str) -> None:
    async with Charter(pg_url, tools=[double]) as app:
        report = await app.run(PLAN)
        assert report.status == "succeeded" and report.output == {"b": 8, "c": [2, 4, 6]}
        assert (await app.runs())[0].id == report.id
        run_id = await app.start(PLAN)
        assert await app.pause(run_id) == "done"
        assert (await app.report(run_id)).status == "paused"
        assert (await app.resume(run_id)).status == "succeeded"
        seen = [type(u.event).__name__ async for u in app.watch(report.id)]
        assert seen[0] == "RunCreated" and seen[-1] == "RunSucceeded"


async def test_fencing_requests_and_wake_ups(pg_url: str) -> None:
    store = open_store(pg_url)
    rec = RunRecord("running", 0, "", None, 1.0, None)
    run = NewRunRecord("pg-r1", "running", "g", (), None, 1, 1.0)
    await store.create_run(run, RunWrite("pg-r1", 0, [RunCreated(at=1.0)], rec), "host:1:a", 1e12)
    ev = StepStarted(at=2.0, step="a", key="k")
    with pytest.raises(RunFencedError):
        await store.append([RunWrite("pg-r1", 1, [ev], rec)], "host:2:b")
    await store.append([RunWrite("pg-r1", 1, [ev], rec)], "host:1:a")
    with pytest.raises(RunFencedError):  # a writer that missed an event
        await store.append([RunWrite("pg-r1", 1, [ev], rec)], "host:1:a")
    assert [e.type for e in await store.events("pg-r1")] == ["RunCreated", "StepStarted"]
    clock = FakeClock(start=1000.0)  # never moves by itself: only a notification can end the wait
    seen = await store.change()
    other = open_store(pg_url)  # another process, as far as the server can tell
    rid = await other.add_request(RequestRow("pg-r1", "approve_step", 3.0, step="ok", by="ana", reason="fine"))
    woken = await asyncio.wait_for(store.wait_for_change(seen, 3600.0, clock), 60)  # 60 s: only against a hang
    assert woken != seen and clock.now() == 1000.0  # woken by NOTIFY: the clock never moved
    [request] = await store.pending_requests(["pg-r1"])
    assert (request.id, request.kind, request.step, request.by) == (rid, "approve_step", "ok", "ana")
    other.close()
    store.close()


def _schema(url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity "
            "FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'schema_migrations' "
            "ORDER BY table_name, ordinal_position").fetchall()
        indexes = conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename <> 'schema_migrations' ORDER BY tablename, indexname").fetchall()
        keys = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'schema_migrations' "
            "ORDER BY 1, 2").fetchall()
    return {"columns": columns, "indexes": indexes, "constraints": keys}


async def test_migrations_reach_the_declared_postgresql_schema(pg_url: str) -> None:
    import psycopg

    from charter.store.sql import declared_schema, migrations

    base = pg_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        for name in ("migrated", "declared"):
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
            admin.execute(f"CREATE DATABASE {name}")
    store = open_store(f"{base}/migrated")
    assert await store.list_runs() == []  # connecting migrates
    store.close()
    with psycopg.connect(f"{base}/declared", autocommit=True) as conn:
        conn.execute(declared_schema("postgresql"))
    migrated, declared = _schema(f"{base}/migrated"), _schema(f"{base}/declared")
    assert migrated == declared
    assert migrated["columns"]  # not vacuously equal
    with psycopg.connect(f"{base}/migrated") as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [v for v, _, _ in migrations("postgresql")]
