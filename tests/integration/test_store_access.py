"""Opening stores: read-only where one may not write, never creating one by mistake, never adopting a
foreign database; and telling which runs were interrupted (their owner is gone)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charter import Charter, SQLiteStore, StoreError, open_store, tool
from charter.store.sql import migrations
from charter.testing import FakeClock
from tests.volumes import read_only_folder

PLAN = {"goal": "g", "steps": [{"id": "a", "tool": "one"}]}


@tool
def one() -> int:
    return 1


def a_store_with_a_run(folder: Path) -> tuple[Path, str]:
    folder.mkdir()
    db = folder / "charter.db"
    app = Charter(db, tools=[one])
    report = app.run_sync(PLAN)
    app.close()
    assert report.status == "succeeded"
    return db, report.id


def test_a_store_in_a_read_only_folder_can_be_read(tmp_path: Path) -> None:
    db, run_id = a_store_with_a_run(tmp_path / "shelf")
    assert sorted(p.name for p in db.parent.iterdir()) == ["charter.db"]  # closed cleanly: no log files
    with read_only_folder(db.parent):
        with pytest.raises(StoreError):
            SQLiteStore(db)  # to write, it must be able to create its log files
        app = Charter(db, mode="ro")
        assert [r.id for r in asyncio.run(app.runs())] == [run_id]
        assert asyncio.run(app.report(run_id)).status == "succeeded"
        assert asyncio.run(app.effects()) == []
        app.close()
        assert sorted(p.name for p in db.parent.iterdir()) == ["charter.db"]


def test_a_crashed_store_in_a_read_only_folder_can_be_read(tmp_path: Path) -> None:
    """A process killed while writing leaves its write-ahead log beside the file; reading uses it."""
    folder = tmp_path / "shelf"
    folder.mkdir()
    db = folder / "charter.db"
    code = (
        "import os, signal, sys\n"
        "from charter import SQLiteStore\n"
        "s = SQLiteStore(sys.argv[1])\n"
        "s._conn.execute(\"INSERT INTO runs (id, status, goal, tool_sources, steps_total, created_at, updated_at) "
        "VALUES ('r1', 'running', 'killed', '[]', 1, 1.0, 1.0)\")\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(db)], check=False)
    assert done.returncode == -signal.SIGKILL
    assert (folder / "charter.db-wal").stat().st_size > 0  # the run is only in the log
    with read_only_folder(folder):
        store = open_store(db, mode="ro")
        assert [r.id for r in asyncio.run(store.list_runs())] == ["r1"]
        store.close()


def test_reading_never_creates_or_changes_a_store(tmp_path: Path) -> None:
    for mode in ("ro", "rw"):
        with pytest.raises(StoreError, match=r"no store at .*typo\.db: the file does not exist"):
            Charter(tmp_path / "typo.db", mode=mode)
    assert list(tmp_path.iterdir()) == []

    db, run_id = a_store_with_a_run(tmp_path / "shelf")
    before = db.read_bytes()
    app = Charter(db, tools=[one], mode="ro")
    assert asyncio.run(app.report(run_id)).status == "succeeded"
    with pytest.raises(StoreError, match=r"open only to read \(mode .ro.\)"):
        app.run_sync(PLAN)
    app.close()
    assert db.read_bytes() == before


@pytest.mark.parametrize("mode", ["rwc", "rw", "ro"])
def test_what_is_not_a_store_is_refused(tmp_path: Path, mode: str) -> None:
    with pytest.raises(StoreError, match="is a folder, not a store file"):
        SQLiteStore(tmp_path, mode=mode)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"a SQLite database but not a Charter store .*contacts"):
        SQLiteStore(other, mode=mode)
    assert [r[0] for r in sqlite3.connect(other).execute("SELECT name FROM sqlite_master")] == ["contacts"]
    (tmp_path / "garbage.db").write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StoreError, match="not a Charter store or is damaged"):
        SQLiteStore(tmp_path / "garbage.db", mode=mode)
    (tmp_path / "empty.db").write_bytes(b"")
    if mode == "rwc":
        SQLiteStore(tmp_path / "empty.db", mode=mode).close()  # an empty file becomes a store
    else:
        with pytest.raises(StoreError, match="not a Charter store \\(it is empty\\)"):
            SQLiteStore(tmp_path / "empty.db", mode=mode)


def test_an_older_store_opened_read_only_says_how_to_upgrade_it(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    (version, name, sql), *_ = migrations()
    conn = sqlite3.connect(db)
    conn.executescript(sql)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                 "applied_at DOUBLE PRECISION NOT NULL)")
    conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (version, name))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"older than this Charter's .* open it once with write access"):
        SQLiteStore(db, mode="ro")
    SQLiteStore(db).close()  # with write access it is upgraded
    SQLiteStore(db, mode="ro").close()


async def test_a_run_whose_owner_elsewhere_stopped_renewing_is_interrupted(db_path: Path) -> None:
    clock = FakeClock()
    app = Charter(db_path, tools=[one], clock=clock)
    run_id = await app.start(PLAN)
    engine = app.engine()
    # Another machine takes the run over, with a lease of 30 s that it will never renew.
    assert await app.store.claim(run_id, "elsewhere:4242:beef", clock.now() + 30, expected_owner=engine.owner)
    assert (await app.report(run_id)).interrupted is False
    assert await app.interrupted() == [] and (await app.runs())[0].interrupted is False
    clock.advance(31)
    assert (await app.report(run_id)).interrupted is True
    assert [r.id for r in await app.interrupted()] == [run_id] and (await app.runs())[0].interrupted is True
    assert (await app.report(run_id)).to_json()["interrupted"] is True

    reports, problems = await Charter(db_path, tools=[one], clock=clock).resume_all()
    assert problems == [] and [(r.id, r.status, r.interrupted) for r in reports] == [(run_id, "succeeded", False)]
    assert await app.interrupted() == []


async def test_a_run_of_a_live_process_here_is_not_interrupted_past_its_lease(db_path: Path) -> None:
    clock = FakeClock()
    app = Charter(db_path, tools=[one], clock=clock)
    run_id = await app.start(PLAN)
    parent = f"{socket.gethostname()}:{os.getppid()}:cafe"  # a process on this machine that is alive
    assert await app.store.claim(run_id, parent, clock.now() + 30, expected_owner=app.engine().owner)
    clock.advance(3600)
    assert await app.interrupted() == [] and (await app.report(run_id)).interrupted is False


async def test_a_run_whose_process_here_is_a_zombie_is_interrupted(db_path: Path) -> None:
    """A process killed but not yet reaped by its parent still answers kill(pid, 0): it is dead all the same."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc on this system")
    clock = FakeClock()
    app = Charter(db_path, tools=[one], clock=clock)
    run_id = await app.start(PLAN)
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # not waited for: once it exits, a zombie
    try:
        def state() -> str:
            return Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0]

        deadline = time.monotonic() + 30
        while state() != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        zombie = f"{socket.gethostname()}:{child.pid}:dead"
        assert await app.store.claim(run_id, zombie, clock.now() + 30, expected_owner=app.engine().owner)
        assert [r.id for r in await app.interrupted()] == [run_id]
    finally:
        child.wait()
