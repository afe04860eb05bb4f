"""The PostgreSQL store, through psycopg 3 (async) and a connection pool.

Only what differs from SQLite is here: connecting (lazily: the store is made
by a sync constructor, and connects on first use), the parameter style, error
messages, the migrations folder (``migrations/postgresql``, with its identity
columns), and the wake-up: every write transaction ends with
``NOTIFY charter``, and a listener on a connection of its own tells waiters.
A transaction holds one pooled connection, found by the task through a
context variable, so the shared layer's statements inside it go to it.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Hashable, Sequence
from typing import Any

from ..clock import Clock
from ..errors import StoreError
from .sql import QUERIES, SQLStore

CHANNEL = "charter"
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


def _pg(sql: str) -> str:
    """``:name`` parameters as psycopg's ``%(name)s`` (and a literal ``%`` doubled)."""
    return _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


class PostgresStore(SQLStore):
    """Events and state in a PostgreSQL database (``postgresql://user@host:port/db``)."""

    def __init__(self, url: str, *, mode: str = "rwc", min_size: int = 1, max_size: int = 10) -> None:
        super().__init__()
        self.dialect = "postgresql"
        self.read_only = mode == "ro"
        self.url = url
        self.location = re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", url)  # no password in messages
        self._pool: Any = None
        self._sizes = (min_size, max_size)
        self._tx: contextvars.ContextVar[Any] = contextvars.ContextVar(f"charter-pg-tx-{id(self)}", default=None)
        # the pool a transaction's connection came from (the store may have made a new one since)
        self._tx_pool: contextvars.ContextVar[Any] = contextvars.ContextVar(f"charter-pg-pool-{id(self)}", default=None)
        self._sql_cache: dict[str, str] = {}
        self._changes = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._opening: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the pool's connections belong to
        self._closing: set[asyncio.Future[None]] = set()  # pools let go of, closing

    # --- connecting ---------------------------------------------------------------

    async def _ready(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        if self._loop is not loop:  # a new event loop (another asyncio.run): the old one's connections are gone
            self._pool, self._listener, self._opening, self._loop = None, None, None, loop
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                import psycopg
                from psycopg_pool import AsyncConnectionPool

                try:  # one connection first: a wrong password or database fails now, saying why
                    probe = await psycopg.AsyncConnection.connect(self.url, autocommit=True, **_CONNECTION)
                except psycopg.Error as exc:
                    cause = " ".join(str(exc).split())
                    raise StoreError(f"cannot reach store {self.location}: {cause}") from None
                await probe.close()

                pool = AsyncConnectionPool(self.url, min_size=self._sizes[0], max_size=self._sizes[1],
                                           kwargs={"autocommit": True, **_CONNECTION}, open=False)
                try:
                    await pool.open(wait=True, timeout=10)
                except Exception as exc:
                    await pool.close()
                    raise StoreError(f"cannot reach store {self.location}: {exc}") from None
                self._pool = pool
                if self.read_only:
                    await self._check_charter_store()
                await self.migrate()
        return self._pool

    async def _check_charter_store(self) -> None:
        """A store opened only to read must have Charter's tables already (reading creates nothing)."""
        rows = await self._fetchall("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
        if not rows[0][0]:
            raise StoreError(f"no store at {self.location}: the database has no Charter tables yet")

    def _sql(self, name: str) -> str:
        text = self._sql_cache.get(name)
        if text is None:
            text = self._sql_cache[name] = _pg(QUERIES.get(name + ".postgresql") or QUERIES[name])
        return text

    # --- statements -----------------------------------------------------------------

    async def _run(self, sql: str, params: Any, many: bool = False, fetch: bool = False) -> Any:
        import psycopg
        from psycopg_pool import PoolTimeout

        conn = self._tx.get()
        try:
            if conn is not None:
                return await _on(conn, sql, params, many, fetch)
            pool = await self._ready()
            async with pool.connection() as c:
                return await _on(c, sql, params, many, fetch)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self._drop_pool()
            raise StoreError(f"store {self.location}: {str(exc).strip()}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"store {self.location}: {str(exc).strip()}") from exc

    def _drop_pool(self) -> None:
        """The server went away (a restart, a cut link): the next statement makes a new pool at
        once, instead of waiting out the old pool's growing delays between reconnection attempts."""
        pool, self._pool = self._pool, None
        if pool is not None:
            task = asyncio.ensure_future(pool.close(timeout=0))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        return int(await self._run(_raw(sql), params or None))

    async def _executemany(self, sql: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self._run(_raw(sql), rows, many=True)

    async def _fetchall(self, sql: str, params: dict[str, Any] | None = None) -> list[Sequence[Any]]:
        return list(await self._run(_raw(sql), params or None, fetch=True))

    # --- transactions -----------------------------------------------------------------

    def _active(self) -> bool:
        return self._tx.get() is not None

    def _locking(self, skip_locked: bool) -> str:
        return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"

    async def _begin(self) -> None:
        import psycopg
        from psycopg_pool import PoolTimeout

        if self._tx.get() is not None:
            raise RuntimeError("transactions of a store do not nest")
        pool = await self._ready()
        try:
            conn = await pool.getconn()
        except PoolTimeout as exc:
            self._drop_pool()
            raise StoreError(f"cannot reach store {self.location}: {exc}") from exc
        try:
            await conn.execute("BEGIN")
        except BaseException as exc:
            await pool.putconn(conn)
            if isinstance(exc, psycopg.Error):
                if isinstance(exc, psycopg.OperationalError):
                    self._drop_pool()
                raise StoreError(f"store {self.location}: {str(exc).strip()}") from exc
            raise
        self._tx.set(conn)
        self._tx_pool.set(pool)

    async def _commit(self) -> None:
        import psycopg

        conn = self._tx.get()
        try:
            await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))  # delivered at the commit
            await conn.execute("COMMIT")
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                self._drop_pool()
            # _rollback gives the connection back; whether the commit landed is unknown to this side
            raise StoreError(f"store {self.location}: the commit's outcome is unknown: {str(exc).strip()}") from exc
        self._tx.set(None)
        await self._tx_pool.get().putconn(conn)

    async def _rollback(self, exc: BaseException) -> None:
        conn = self._tx.get()
        self._tx.set(None)
        if conn is None:
            return
        try:
            await conn.execute("ROLLBACK")
        except Exception:
            pass
        try:
            await self._tx_pool.get().putconn(conn)
        except Exception:  # its pool was let go of meanwhile: the connection goes with it
            await conn.close()

    # --- changes ------------------------------------------------------------------------

    async def _disk_size(self) -> int | None:
        return int((await self._fetchall("SELECT pg_database_size(current_database())"))[0][0])

    async def change(self) -> Hashable:
        await self._ready()
        await self._listen()
        return self._changes

    async def wait_for_change(self, seen: Hashable, timeout: float, clock: Clock) -> Hashable:
        await self._ready()
        await self._listen()
        if self._changes != seen:
            return self._changes
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await clock.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(fut)
        return self._changes

    async def _listen(self) -> None:
        if self._listener is None or self._listener.done():
            ready = asyncio.get_running_loop().create_future()
            self._listener = asyncio.ensure_future(self._listening(ready))
            await ready

    async def _listening(self, ready: asyncio.Future[None]) -> None:
        import psycopg

        try:
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True, **_CONNECTION) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                ready.set_result(None)
                self._changes += 1  # what was written while nobody listened (a reconnection) is news
                async for _ in conn.notifies():
                    self._changes += 1
                    for fut in list(self._waiters):
                        if not fut.done():
                            fut.set_result(None)
        except Exception as exc:
            if not ready.done():
                ready.set_exception(StoreError(f"cannot listen on store {self.location}: {exc}"))
        for fut in list(self._waiters):  # the listener is gone: waiters look again (and listen anew)
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        """Let go of the connections: closed on their loop if it still runs, else dropped."""
        listener, pool, loop = self._listener, self._pool, self._loop
        self._listener = self._pool = self._loop = None
        if listener is not None and not listener.done():
            listener.cancel()
        if pool is None or loop is None or loop.is_closed():
            return
        if loop.is_running():
            loop.create_task(pool.close())
        else:
            try:
                loop.run_until_complete(pool.close())
            except RuntimeError:
                pass

    async def aclose(self) -> None:
        """:meth:`close`, awaited on the loop the connections belong to."""
        listener, pool = self._listener, self._pool
        self._listener = self._pool = self._loop = None
        if listener is not None:
            listener.cancel()
        if pool is not None:
            await pool.close()


#: every connection: a transaction left open by a client that went silent (a partition) is ended by
#: the server, so the rows it locked do not hold up the fleet; a dead peer is noticed in seconds
_CONNECTION: dict[str, Any] = {
    "connect_timeout": 10,
    "options": "-c idle_in_transaction_session_timeout=10000",
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": 15000,
}


def _raw(sql: str) -> str:
    """A statement as given: named queries come translated already; others (PRAGMA-free DDL) as is."""
    return sql if "%(" in sql or ":" not in sql else _pg(sql)


async def _on(conn: Any, sql: str, params: Any, many: bool, fetch: bool) -> Any:
    async with conn.cursor() as cur:
        if many:
            await cur.executemany(sql, params)
            return None
        await cur.execute(sql, params)
        if fetch:
            return await cur.fetchall()
        return cur.rowcount
