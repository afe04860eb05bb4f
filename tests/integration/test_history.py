"""Bounded history on a real store (SQLite, and PostgreSQL with CHARTER_TEST_STORE=postgresql):
payloads stored once per run, pruning old runs, what uses the space, and the runs list's filters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from charter import Charter, PermanentError, RunStateError, tool
from charter.events import ModelCalled, ToolCalled
from charter.store import codec, payloads
from charter.testing import FakeClock, ScriptedModel


@tool
def page(n: int) -> str:
    """One page of a long document: about 500 bytes each, all different."""
    return f"page {n}: " + " ".join(f"word{n}-{i}" for i in range(50))


@tool
def fails() -> str:
    """Always fails for good."""
    raise ValueError("no")


@tool
def fails_on(text: str) -> str:
    """Fails for good, saying what it was given (a bulky error)."""
    raise PermanentError(f"cannot take {text}")


def agent_run(calls: int) -> tuple[dict[str, Any], ScriptedModel]:
    """An agent step of ``calls`` model calls that reads a page after each but the last: the
    conversation it resends grows with each call (to ~50 KB at 100 calls)."""
    script: list[Any] = [ScriptedModel.call("page", {"n": i}) for i in range(calls - 1)] + ["done"]
    plan = {"goal": "read everything", "steps": [
        {"id": "read", "agent": {"prompt": "Read every page.", "tools": ["page"], "max_turns": calls}}]}
    return plan, ScriptedModel(script)


def app_on(db: Any, clock: FakeClock, model: ScriptedModel | None = None) -> Charter:
    a = Charter(db, tools=[page, fails, fails_on], clock=clock)
    if model is not None:
        a.engine().model = model
    return a


async def stored_bytes(app: Charter, run_id: str) -> tuple[int, int]:
    """(what the log takes as stored: events and payloads; what it would take inline)."""
    stats = await app.stats(biggest=1000)
    stored = next(r.bytes for r in stats.biggest if r.id == run_id)
    inline = sum(len(codec.dumps(ev.to_data())) for ev in await app.store.events(run_id))
    return stored, inline


async def test_a_growing_conversation_is_stored_once_not_once_per_call(db_path: Any) -> None:
    clock = FakeClock(auto_advance=True)
    sizes = {}
    for calls in (50, 100):
        plan, model = agent_run(calls)
        app = app_on(db_path, clock, model)
        report = await app.run(plan)
        assert report.status == "succeeded", report.error
        sizes[calls] = await stored_bytes(app, report.id)
        events = await app.store.events(report.id)
        # Read back whole: the last request holds the whole conversation, every page in it.
        last = [e for e in events if isinstance(e, ModelCalled)][-1]
        assert len(last.request["messages"]) == 2 + 2 * (calls - 1)
        assert page.fn(calls - 2) in json.dumps(last.request)
        assert [e.output for e in events if isinstance(e, ToolCalled)] == [page.fn(i) for i in range(calls - 1)]
        app.close()
    (stored_50, inline_50), (stored_100, inline_100) = sizes[50], sizes[100]
    assert inline_100 > 3.5 * inline_50  # inline, the log grows with the square of the calls
    assert stored_100 < 2.5 * stored_50  # stored, with what is new
    assert stored_100 < inline_100 / 10


async def test_pruning_drops_old_runs_payloads_and_keeps_what_happened(db_path: Any) -> None:
    clock = FakeClock(start=1_000_000.0, auto_advance=True)
    plan, model = agent_run(10)
    app = app_on(db_path, clock, model)
    old = await app.run(plan)
    failed = await app.run({"goal": "fail", "steps": [{"id": "f", "tool": "fails"}]})
    assert failed.status == "failed"
    clock.advance(40 * 86400)
    model.add(*agent_run(10)[1]._script)
    recent = await app.run(plan)
    kept_before = await app.store.events(recent.id)

    done = await app.prune(30 * 86400, keep_failed=True)
    assert (done.runs, done.payloads > 0, done.bytes > 0) == (1, True, True)
    assert await app.prune(30 * 86400, keep_failed=True) == type(done)(0, 0, 0)  # nothing twice

    # The old run: its row, events, ledger and report stay; its bulky values read back as pruned.
    row = (await app.runs(status="succeeded", text="read everything"))[-1]
    assert row.id == old.id and row.pruned_at is not None
    report = await app.report(old.id)
    assert report.status == "succeeded" and report.step("read").status == "succeeded"
    shown = report.step("read").attempts[0].model_calls[-1]
    assert shown.prompt.startswith("(pruned: ") and shown.input_tokens > 0  # said so, with what stays
    events = await app.store.events(old.id)
    calls = [e for e in events if isinstance(e, ModelCalled)]
    assert len(calls) == 10
    assert set(calls[-1].request) == {payloads.PRUNED, "size"} and calls[-1].request["size"] > 0
    assert calls[-1].input_tokens > 0  # the summary of the call stays
    # The recent run is whole; the failed one was kept (--keep-failed) and can still be retried.
    assert await app.store.events(recent.id) == kept_before
    assert (await app.report(failed.id)).status == "failed"
    stats = await app.stats()
    assert stats.pruned_runs == 1 and stats.pruned_bytes == done.bytes and stats.payloads > stats.pruned_payloads

    assert (await app.resume(old.id)).status == "succeeded"  # ended, pruned or not: nothing to take over
    # A failed run with nothing bulky is left as it is, even without --keep-failed: it can go on.
    assert (await app.prune(30 * 86400)).runs == 0
    assert (await app.runs(status="failed"))[0].pruned_at is None
    with pytest.raises(RunStateError, match="was pruned"):
        await app.rerun(old.id, "read")
    app.close()


async def test_a_pruned_failed_run_cannot_go_on(db_path: Any) -> None:
    clock = FakeClock(start=1_000_000.0, auto_advance=True)
    app = app_on(db_path, clock)
    failed = await app.run({"goal": "fail", "steps": [
        {"id": "big", "tool": "page", "args": {"n": 1}},
        {"id": "f", "tool": "fails_on", "args": {"text": "y" * 3000 + "${big}"}}]})
    clock.advance(86400)
    assert (await app.prune(3600, keep_failed=True)).runs == 0
    assert (await app.prune(3600)).runs == 1
    with pytest.raises(RunStateError, match="was pruned"):
        await app.retry(failed.id, "f")
    with pytest.raises(RunStateError, match="was pruned"):
        await app.rerun(failed.id, "f")
    app.close()


async def test_runs_in_flight_are_never_pruned(db_path: Any) -> None:
    clock = FakeClock(start=1_000_000.0, auto_advance=True)
    app = app_on(db_path, clock)
    waiting = await app.run({"goal": "wait", "steps": [
        {"id": "ok", "approval": {"message": "go on?"}}]})
    assert waiting.status == "awaiting"
    clock.advance(400 * 86400)
    assert (await app.prune(0)).runs == 0
    app.close()


async def test_the_runs_list_filters_and_pages(db_path: Any) -> None:
    clock = FakeClock(start=1_000_000.0, auto_advance=True)
    app = app_on(db_path, clock)
    ids = []
    for i in range(7):
        goal = f"Goal {i} 100%_done" if i == 3 else f"Goal {i}"
        plan = {"goal": goal, "steps": [{"id": "f", "tool": "fails" if i % 2 else "page", "args": {"n": i}}]}
        if i % 2:
            plan["steps"][0].pop("args")
        ids.append((await app.run(plan)).id)
        clock.advance(3600)
    newest_first = ids[::-1]
    assert [r.id for r in await app.runs(limit=3)] == newest_first[:3]
    assert [r.id for r in await app.runs(limit=3, before=newest_first[2])] == newest_first[3:6]
    assert [r.id for r in await app.runs(status="failed")] == [i for n, i in enumerate(ids) if n % 2][::-1]
    assert [r.id for r in await app.runs(status=["failed", "succeeded"], limit=100)] == newest_first
    assert [r.id for r in await app.runs(status="paused")] == []
    third = (await app.runs(limit=3))[-1]
    assert [r.id for r in await app.runs(since=third.created_at)] == newest_first[:3]
    assert [r.id for r in await app.runs(text="GOAL 5")] == [ids[5]]
    assert [r.id for r in await app.runs(text="100%_d")] == [ids[3]]  # % and _ are plain text
    assert [r.id for r in await app.runs(text="0%x")] == []
    assert [r.id for r in await app.runs(text=ids[2][:8])] == [ids[2]]
    # Paging with a filter: each page holds what matches, in order.
    failed = [r.id for r in await app.runs(status="failed", limit=2)]
    failed += [r.id for r in await app.runs(status="failed", limit=2, before=failed[-1])]
    assert failed == [i for n, i in enumerate(ids) if n % 2][::-1]
    app.close()


async def test_tokens_and_cost_are_kept_on_the_run(db_path: Any) -> None:
    plan, model = agent_run(3)
    app = app_on(db_path, FakeClock(auto_advance=True), model)
    report = await app.run(plan)
    row = (await app.runs(limit=1))[0]
    calls = [e for e in await app.store.events(report.id) if isinstance(e, ModelCalled)]
    assert row.tokens == sum(c.input_tokens + c.output_tokens for c in calls) > 0
    assert row.cost == sum(c.cost or 0.0 for c in calls)
    app.close()


def test_the_sqlite_migration_fills_the_new_columns_from_the_log(tmp_path: Path) -> None:
    import sqlite3

    from charter.store import SQLiteStore
    from charter.store.sql import migrations

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                 "applied_at DOUBLE PRECISION NOT NULL)")
    for version, name, sql in migrations("sqlite"):
        if version < 6:
            conn.executescript(sql)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (version, name))
    conn.execute("INSERT INTO runs (id, status, goal, tool_sources, steps_total, created_at, updated_at) "
                 "VALUES ('r1', 'succeeded', 'g', '[]', 1, 1, 1)")
    rows = [(1, "RunCreated", json.dumps({"plan": {}, "request": "do the thing"})),
            (2, "ModelCalled", json.dumps({"input_tokens": 10, "output_tokens": 5, "cost": 0.25})),
            (3, "ModelCalled", json.dumps({"input_tokens": 1, "output_tokens": 2, "cost": None}))]
    conn.executemany("INSERT INTO events (run_no, seq, type, at, data) VALUES (1, ?, ?, 1, ?)", rows)
    conn.commit()
    conn.close()
    store = SQLiteStore(db)
    try:
        from charter.store.sqlite import now

        row = now(store.get_run("r1"))
        assert row is not None and (row.request, row.tokens, row.cost) == ("do the thing", 18, 0.25)
    finally:
        store.close()


async def test_a_pruned_runs_errors_and_reasons_stay_whole_and_show_prints_it(db_path: Any) -> None:
    import io

    from rich.console import Console

    from charter.cli.console import print_report

    clock = FakeClock(start=1_000_000.0, auto_advance=True)
    app = app_on(db_path, clock)
    bulky = "x" * 5000
    failed = await app.run({"goal": "fail loudly", "steps": [
        {"id": "big", "tool": "page", "args": {"n": 1}},
        {"id": "f", "tool": "fails_on", "args": {"text": bulky + "${big}"}}]})
    assert failed.status == "failed"
    clock.advance(86400)
    assert (await app.prune(3600)).payloads > 0  # the arguments went: the error stays
    report = await app.report(failed.id)
    assert report.step("f").error["message"].startswith("cannot take " + bulky)  # type: ignore[index]
    out = io.StringIO()
    print_report(Console(file=out, width=100), report)
    shown = "".join(out.getvalue().split())
    assert "failed:f(cannottakexxx" in shown and "(pruned:" in shown, out.getvalue()
    app.close()
