"""Shared fixtures: a fresh store, fake clocks, and tools that record what they did."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from charter import Charter, SQLiteStore
from charter.testing import FakeClock

#: which store the suite runs on: ``sqlite`` (the default) or ``postgresql``
STORE = os.environ.get("CHARTER_TEST_STORE", "sqlite")


@pytest.fixture(scope="session", autouse=STORE == "postgresql")
def pg_server() -> Iterator[str]:
    """A PostgreSQL server for the whole session (a throwaway cluster, or ``CHARTER_TEST_PG_URL``);
    its URL is also left in ``CHARTER_TEST_PG_URL`` for helpers that make databases."""
    from tests.pg import cluster

    with cluster() as url:
        before = os.environ.get("CHARTER_TEST_PG_URL")
        os.environ["CHARTER_TEST_PG_URL"] = url
        try:
            yield url
        finally:
            if before is None:
                os.environ.pop("CHARTER_TEST_PG_URL", None)


@pytest.fixture
def db_path(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """The test's own empty store: a SQLite file, or a fresh PostgreSQL database (``CHARTER_TEST_STORE``)."""
    if STORE != "postgresql":
        return tmp_path / "charter.db"
    from tests.pg import new_database

    return new_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(db_path)
    yield s
    s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(auto_advance=True)


@pytest.fixture
def make_app(db_path: Path, clock: FakeClock) -> Iterator[object]:
    """Build a Charter on the test's store with the fake clock."""
    apps: list[Charter] = []

    def make(tools: object = None, **kw: object) -> Charter:
        app = Charter(db_path, tools=tools, clock=kw.pop("clock", clock), **kw)  # type: ignore[arg-type]
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


class Tracker:
    """Counts calls and the most calls in flight at once."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def enter(self, name: str, arg: object, delay: float = 0.01) -> None:
        self.calls.append((name, arg))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
