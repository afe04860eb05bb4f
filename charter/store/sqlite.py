"""The embedded store: one SQLite file in WAL mode.

Queries run on the event loop's thread: a commit here takes tens of
microseconds, far less than a hop to a worker thread would. With the default
``synchronous=NORMAL`` a committed transition survives the death of the
process; ``synchronous=FULL`` (``CHARTER_SQLITE_SYNCHRONOUS=FULL``) also
survives losing power, at the cost of an fsync per commit.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .sql import SQLStore

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


class SQLiteStore(SQLStore):
    """Events and state in one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str | Path = "charter.db", *, synchronous: str | None = None) -> None:
        self.path = str(path)
        self.location = self.path
        mode = (synchronous or os.environ.get("CHARTER_SQLITE_SYNCHRONOUS") or "NORMAL").upper()
        if mode not in SYNCHRONOUS_MODES:
            raise StoreError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {mode!r}")
        self.synchronous = mode
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(f"cannot open store {self.path}: folder {parent} does not exist")
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout = 10000")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(f"PRAGMA synchronous = {mode}")
            self._conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from None
        self._depth = 0
        self.migrate()

    def _execute(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        try:
            cur = self._conn.execute(sql, params or {})
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc
        return cur.rowcount

    def _executemany(self, sql: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    def _fetchall(self, sql: str, params: dict[str, Any] | None = None) -> list[Sequence[Any]]:
        try:
            return self._conn.execute(sql, params or {}).fetchall()
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        self._depth = 0
        try:
            self._execute("COMMIT")
        except BaseException:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    def close(self) -> None:
        self._conn.close()


def _store_error(path: str, exc: sqlite3.Error) -> StoreError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        hint = "another process holds it too long; try again"
    elif "full" in text:
        hint = "the disk is full; free space and resume: nothing committed was lost"
    elif "not a database" in text or "malformed" in text:
        hint = "the file is not a Charter store or is damaged"
    elif "readonly" in text:
        hint = "the file or its folder is not writable"
    else:
        hint = ""
    return StoreError(f"store {path}: {text}" + (f" ({hint})" if hint else ""))


def open_store(url: str | Path | None = None) -> SQLiteStore:
    """Open the store at ``url``: a file path, ``sqlite:///path`` or ``:memory:``.

    Defaults to ``$CHARTER_DB`` or ``charter.db`` in the current directory.
    """
    target = str(url or os.environ.get("CHARTER_DB") or "charter.db")
    if target.startswith("sqlite:///"):
        target = target[len("sqlite:///"):]
    elif "://" in target:
        raise StoreError(f"unsupported store {target!r}: use a SQLite file path")
    return SQLiteStore(target)
