"""The write-ahead log stays small: bounded by the free space, truncated when a run ends and when
the disk is full, so that a store on a nearly full disk needs little more room than its data."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from charter import Charter, StoreError, tool
from charter.store.sqlite import MAX_LOG_PAGES, MIN_LOG_PAGES
from tests.volumes import small_volume

PAGE = 4096


@tool
def link(n: int, prev: Any = None) -> dict[str, Any]:
    return {"n": n, "text": "x" * 300}


def chain(n: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"id": "s0", "tool": "link", "args": {"n": 0}}]
    steps += [{"id": f"s{i}", "tool": "link", "args": {"n": i, "prev": f"${{s{i - 1}.n}}"}} for i in range(1, n)]
    return {"goal": f"a chain of {n}", "steps": steps}


class LogWatcher:
    """Notes the largest size the write-ahead log reached, right after each commit of a store."""

    def __init__(self, db: Path, store: Any) -> None:
        self.wal = Path(f"{db}-wal")
        self.largest = 0
        append = store.append

        async def append_and_look(*args: Any, **kwargs: Any) -> None:
            await append(*args, **kwargs)
            if self.wal.exists():
                self.largest = max(self.largest, self.wal.stat().st_size)

        store.append = append_and_look


def run_chain(db: Path, n: int) -> tuple[Charter, LogWatcher, Any]:
    app = Charter(db, tools=[link])
    watcher = LogWatcher(db, app.store)
    return app, watcher, app.run_sync(chain(n))


def test_the_log_is_truncated_when_the_run_ends(tmp_path: Path) -> None:
    db = tmp_path / "charter.db"
    app, watcher, report = run_chain(db, 400)
    assert report.status == "succeeded"
    assert watcher.largest > 0
    assert app.store.tidied()  # type: ignore[attr-defined] - the run's end does not wait for the truncation
    assert Path(f"{db}-wal").stat().st_size == 0  # the store is still open: the log is empty, not deleted
    assert watcher.largest <= (app.store.log_pages + 64) * PAGE  # type: ignore[attr-defined]
    app.close()


def test_on_a_small_volume_the_log_stays_small(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    with small_volume(vol, 4 * 1024 * 1024):
        db = vol / "charter.db"
        app, watcher, report = run_chain(db, 1500)  # about 2.5 MB of data in a 4 MB volume
        assert report.status == "succeeded", report.reason
        pages = app.store.log_pages  # type: ignore[attr-defined]
        assert MIN_LOG_PAGES <= pages < MAX_LOG_PAGES
        assert watcher.largest <= (pages + 64) * PAGE, (watcher.largest, pages)
        assert app.store.tidied()  # type: ignore[attr-defined]
        assert Path(f"{db}-wal").stat().st_size == 0
        app.close()


def test_a_full_disk_gives_the_log_back_and_says_how_much_room_is_needed(tmp_path: Path) -> None:
    reference, _, _ = run_chain(tmp_path / "reference.db", 400)
    reference.close()
    data = (tmp_path / "reference.db").stat().st_size  # what the whole run keeps, once the log is folded in
    vol = tmp_path / "vol"
    with small_volume(vol, data) as resize:  # too small once the log is counted: it fails on the way
        db = vol / "charter.db"
        app = Charter(db, tools=[link])
        with pytest.raises(StoreError) as caught:
            app.run_sync(chain(400))
        message = str(caught.value)
        found = re.search(r"the disk is full .* needs at least ([0-9.]+) KiB free", message)
        assert found, message
        need = int(float(found.group(1)) * 1024)
        [run] = asyncio.run(app.runs())
        assert run.status == "running" and 0 < run.steps_done < 400

        # Room for the whole run's data, plus what the message asked for: enough to finish.
        resize(data + need + 16 * PAGE)
        report = app.resume_sync(run.id)
        assert report.status == "succeeded", report.reason
        assert report.steps[-1].output == {"n": 399, "text": "x" * 300}
        app.close()
