"""The embedded store: one SQLite file in WAL mode.

Queries run on the event loop's thread: a commit here takes tens of
microseconds, far less than a hop to a worker thread would. With the default
``synchronous=NORMAL`` a committed transition survives the death of the
process; ``synchronous=FULL`` (``CHARTER_SQLITE_SYNCHRONOUS=FULL``) also
survives losing power, at the cost of an fsync per commit.

The write-ahead log is bounded by the free space: SQLite's default lets it grow
to 1000 pages (about 4 MB) before it is reused, which on a nearly full disk is
more than the data. Here it is folded into the file once it holds a sixteenth
of the space that was free when the store was opened (at least
:data:`MIN_LOG_PAGES` pages, at most SQLite's 1000), cut back to that size when
it is reused, and truncated to nothing when the disk is full and when this
process holds no run any more (then on a thread of its own, so that a run's
end does not wait for it; :meth:`SQLiteStore.tidied` waits for it).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Coroutine, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from ..clock import Clock
from ..errors import StoreError
from .sql import SQLStore

T = TypeVar("T")

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
#: how to open a store: read, write and create if missing; read and write an existing store; only read
MODES = ("rwc", "rw", "ro")
#: the fewest and most pages the write-ahead log may hold before it is folded into the file
MIN_LOG_PAGES, MAX_LOG_PAGES = 32, 1000
BUSY_MS = 10_000
#: how long the truncation of an idle store's log waits for the readers of the moment
TIDY_WAIT = 2.0
#: how often a waiter looks whether another process wrote (one ``PRAGMA data_version``, microseconds)
POLL_SECONDS = 0.05


def now(coro: Coroutine[Any, Any, T]) -> T:
    """The result of one of this store's coroutines, which never suspend (statements run on the
    calling thread), from code that is not async: opening and migrating a store."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a SQLite store operation suspended")


class _Changes:
    """Who in this process waits for a change to one database file, and how many commits it saw."""

    def __init__(self) -> None:
        self.commits = 0
        self.waiters: set[asyncio.Future[None]] = set()

    def committed(self) -> None:
        self.commits += 1
        for fut in self.waiters:
            if not fut.done():
                fut.get_loop().call_soon_threadsafe(_wake, fut)
        self.waiters.clear()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_changes: dict[str, _Changes] = {}


class SQLiteStore(SQLStore):
    """Events and state in one SQLite file (or ``:memory:``).

    A change is learnt at once from writers in this process, and from other
    processes by SQLite's ``data_version``, looked at every :data:`POLL_SECONDS`.

    ``mode`` is ``"rwc"`` (the default: create the store if it is missing), ``"rw"``
    (the store must exist) or ``"ro"`` (only read: nothing is created or written,
    and a store in a folder one may not write to can still be inspected).
    """

    def __init__(self, path: str | Path = "charter.db", *, synchronous: str | None = None,
                 mode: str = "rwc") -> None:
        super().__init__()
        self.dialect = "sqlite"
        self.path = str(path)
        self.location = self.path
        sync = (synchronous or os.environ.get("CHARTER_SQLITE_SYNCHRONOUS") or "NORMAL").upper()
        if sync not in SYNCHRONOUS_MODES:
            raise StoreError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {sync!r}")
        if mode not in MODES:
            raise StoreError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.synchronous = sync
        self.mode = mode
        self.read_only = mode == "ro"
        self._file = None if self.path == ":memory:" else Path(self.path).expanduser().resolve()
        if self._file is not None:
            _check_path(self.path, self._file, mode)
        try:
            self._conn = self._connect()
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
            self.log_pages, self._page = 0, 4096
            if not self.read_only:
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._bound_log()
            self._conn.execute(f"PRAGMA synchronous = {sync}")
            self._conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from None
        self._in_transaction = False
        self._tidying: threading.Thread | None = None
        key = str(self._file) if self._file is not None else f":memory:{id(self)}"
        self._changes = _changes.setdefault(key, _Changes())
        now(self._check_charter_store())
        now(self.migrate())

    def _connect(self) -> sqlite3.Connection:
        if self._file is None:
            return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        uri = f"file:{quote(str(self._file))}?mode={self.mode}"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        if not self.read_only:
            return conn
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            return conn
        except sqlite3.Error as exc:
            conn.close()
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY):
                raise
            if _size(Path(f"{self._file}-wal")):
                raise StoreError(
                    f"cannot read store {self.path}: it has a write-ahead log ({self._file.name}-wal) that "
                    f"SQLite can only read with write access to {self._file.parent}"
                ) from None
        # A store in WAL mode needs its shared-memory file (-shm), which a folder one may not
        # write to cannot hold. With no log on disk, every committed transaction is in the
        # file itself, so it can be read as an unchanging file.
        return sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)

    def _bound_log(self) -> None:
        """Let the write-ahead log take at most a sixteenth of the free space (see the module's docstring)."""
        free = _free_space(self._file.parent) if self._file is not None else None
        self._page = self._conn.execute("PRAGMA page_size").fetchone()[0]
        pages = MAX_LOG_PAGES if free is None else max(MIN_LOG_PAGES, min(MAX_LOG_PAGES, free // 16 // self._page))
        if pages != self.log_pages:
            self.log_pages = pages
            self._conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
            self._conn.execute(f"PRAGMA journal_size_limit = {pages * self._page}")

    async def migrate(self) -> None:
        # SQLite's way to rebuild a table that others refer to: foreign keys off (outside the
        # transaction, where the pragma works), every key checked before the commit (_migrated).
        self._conn.execute("PRAGMA foreign_keys = OFF")
        try:
            await super().migrate()
        finally:
            self._conn.execute("PRAGMA foreign_keys = ON")

    async def _migrated(self) -> None:
        broken = await self._fetchall("PRAGMA foreign_key_check")
        if broken:
            raise StoreError(f"store {self.path}: upgrading it would break {len(broken)} reference(s) "
                             f"(first: table {broken[0][0]}); nothing was changed")

    async def _check_charter_store(self) -> None:
        """Refuse a SQLite database that is not a Charter store (only an empty one becomes one)."""
        tables = {r[0] for r in await self._fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_migrations" in tables:
            return
        if tables:
            raise StoreError(f"{self.path} is a SQLite database but not a Charter store "
                             f"(its tables: {', '.join(sorted(tables)[:5])})")
        if self.mode != "rwc":
            raise StoreError(f"{self.path} is not a Charter store (it is empty)")

    async def _execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        try:
            cur = self._conn.execute(sql, params or {})
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc
        return cur.rowcount

    async def _executemany(self, sql: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    async def _fetchall(self, sql: str, params: dict[str, Any] | None = None) -> list[Sequence[Any]]:
        try:
            return self._conn.execute(sql, params or {}).fetchall()
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    # No statement here suspends, so no other task can run between BEGIN and COMMIT:
    # the one connection needs no lock.
    async def _begin(self) -> None:
        if self.read_only:
            raise StoreError(f"store {self.path} is open only to read (mode 'ro'): open it with mode 'rw' to change it")
        if self._in_transaction:
            raise RuntimeError("transactions of a store do not nest")
        await self._execute("BEGIN IMMEDIATE")
        self._in_transaction = True

    def _active(self) -> bool:
        return self._in_transaction  # nothing suspends inside one: the caller is the task that began it

    async def _commit(self) -> None:
        self._in_transaction = False
        await self._execute("COMMIT")

    async def _rollback(self, exc: BaseException) -> None:
        self._in_transaction = False
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if _disk_full(exc):
            raise self._out_of_space() from exc

    def _committed(self) -> None:
        self._changes.committed()

    async def change(self) -> Hashable:
        try:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc
        return (self._changes.commits, version)

    async def wait_for_change(self, seen: Hashable, timeout: float, clock: Clock) -> Hashable:
        deadline = clock.now() + timeout
        while True:
            token = await self.change()
            left = deadline - clock.now()
            if token != seen or left <= 0:
                return token
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._changes.waiters.add(fut)
            try:
                await clock.wait_for(fut, min(POLL_SECONDS, left))
            except TimeoutError:
                pass
            finally:
                self._changes.waiters.discard(fut)

    def _out_of_space(self) -> StoreError:
        """The error for a full disk, after giving back the log's space: how much the store needs."""
        self._truncate_log()
        # With this little space the log is bounded to MIN_LOG_PAGES pages, and may hold one
        # transaction more before it is reused; the shared-memory file takes 32 KiB. What the
        # runs still write comes on top.
        need = 2 * MIN_LOG_PAGES * self._page + 32 * 1024
        if self._file is not None:  # a log that could not be folded in yet needs that much room in the file
            need += _size(Path(f"{self._file}-wal"))
        where = self._file.parent if self._file is not None else Path(".")
        free = _free_space(where)
        return StoreError(
            f"store {self.path}: the disk is full ({'?' if free is None else _human(free)} free in {where}); "
            f"the store needs at least {_human(need)} free to go on, plus room for what its runs still "
            "write. Free space and resume: nothing committed was lost"
        )

    async def _disk_size(self) -> int | None:
        if self._file is None:
            return None
        return sum(_size(Path(f"{self._file}{suffix}")) for suffix in ("", "-wal"))

    def _idle(self) -> None:
        if self.read_only:
            return
        try:
            self._bound_log()  # the free space may have changed since the store was opened
        except sqlite3.Error:
            pass
        if self._file is not None and (self._tidying is None or not self._tidying.is_alive()):
            # On a thread and a connection of its own: the run's last commit does not wait for it.
            # Not a daemon: a process that ends right after its run waits the moment it takes, and
            # its last connection then removes the log files as SQLite does.
            self._tidying = threading.Thread(target=self._truncate_elsewhere, name="charter-log")
            self._tidying.start()

    def _truncate_elsewhere(self) -> None:
        """The truncation of an idle store's log. It waits a moment for readers to finish (a report
        read just after the run) and gives up after that: the log is then left for later."""
        try:
            conn = sqlite3.connect(str(self._file), timeout=TIDY_WAIT, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            pass

    def tidied(self, timeout: float | None = 10.0) -> bool:
        """Wait until an idle store's log has been folded in and truncated; ``False`` on timeout."""
        if self._tidying is not None:
            self._tidying.join(timeout)
            return not self._tidying.is_alive()
        return True

    def _truncate_log(self) -> None:
        """Fold the write-ahead log into the file and cut it to nothing, unless someone is using it
        right now (then it is left for later: this must never wait)."""
        if self.read_only or self._in_transaction:
            return
        try:
            self._conn.execute("PRAGMA busy_timeout = 0")
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                self._conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        except sqlite3.Error:
            pass

    def close(self) -> None:
        self.tidied()
        self._conn.close()


def _check_path(given: str, file: Path, mode: str) -> None:
    if file.is_dir():
        raise StoreError(f"cannot open store {given}: it is a folder, not a store file")
    if mode == "rwc":
        if not file.parent.is_dir():
            raise StoreError(f"cannot open store {given}: folder {file.parent} does not exist")
    elif not file.exists():
        raise StoreError(f"no store at {given}: the file does not exist")


def _free_space(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _disk_full(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    return isinstance(cause, sqlite3.Error) and (cause.sqlite_errorcode & 0xFF) == sqlite3.SQLITE_FULL


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
    elif "unable to open" in text:
        hint = "the file or its folder cannot be read or written"
    else:
        hint = ""
    return StoreError(f"store {path}: {text}" + (f" ({hint})" if hint else ""))


def open_store(url: str | Path | None = None, *, mode: str = "rwc") -> SQLStore:
    """Open the store at ``url``: a file path, ``sqlite:///path`` or ``:memory:``.

    Defaults to ``$CHARTER_DB`` or ``charter.db`` in the current directory.
    ``mode``: ``"rwc"`` creates a missing store, ``"rw"`` wants an existing one,
    ``"ro"`` only reads (see :class:`SQLiteStore`).
    """
    target = str(url or os.environ.get("CHARTER_DB") or "charter.db")
    if target.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(target, mode=mode)
    if target.startswith("sqlite:///"):
        target = target[len("sqlite:///"):]
    elif "://" in target:
        raise StoreError(f"unsupported store {target!r}: use a SQLite file path or a postgresql:// URL")
    return SQLiteStore(target, mode=mode)
