"""A throwaway PostgreSQL cluster for tests: initdb, pg_ctl start on a free loopback port, stop.

Uses the machine's ``initdb`` and ``pg_ctl`` (as the ``postgres`` user when running
as root, which PostgreSQL requires), unless ``CHARTER_TEST_PG_URL`` names a server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")

    def demote() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return {"preexec_fn": demote}


@contextmanager
def cluster() -> Iterator[str]:
    """A running server with an empty database ``charter``; yields its URL."""
    given = os.environ.get("CHARTER_TEST_PG_URL")
    if given:
        yield given
        return
    for tool in ("initdb", "pg_ctl", "createdb"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"PostgreSQL's {tool} is not installed: install the server binaries, "
                               "or set CHARTER_TEST_PG_URL")
    root = Path(tempfile.mkdtemp(prefix="charter-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    run = _as_postgres()
    subprocess.run(["initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
                   check=True, capture_output=True, **run)  # type: ignore[arg-type]
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    subprocess.run(["pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                   check=True, capture_output=True, **run)  # type: ignore[arg-type]
    try:
        subprocess.run(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "charter"],
                       check=True, capture_output=True, **run)  # type: ignore[arg-type]
        yield f"postgresql://postgres@127.0.0.1:{port}/charter"
    finally:
        subprocess.run(["pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"],
                       check=False, capture_output=True, **run)  # type: ignore[arg-type]
        shutil.rmtree(root, ignore_errors=True)


def new_database(server: str | None = None) -> str:
    """A fresh, empty database on ``server`` (default: ``$CHARTER_TEST_PG_URL``); its URL."""
    import secrets

    import psycopg

    server = server or os.environ["CHARTER_TEST_PG_URL"]
    base, name = server.rsplit("/", 1)[0], f"t_{secrets.token_hex(6)}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return f"{base}/{name}"


_stores: dict[Path, str] = {}


def store_for(root: Path, name: str = "charter.db") -> str:
    """The store a test's folder uses: ``root/name``, or under ``CHARTER_TEST_STORE=postgresql`` a fresh
    database of its own (the same one for the same folder)."""
    if os.environ.get("CHARTER_TEST_STORE") != "postgresql":
        return str(root / name)
    key = root / name
    if key not in _stores:
        _stores[key] = new_database()
    return _stores[key]


@dataclass
class Server:
    """A PostgreSQL server on a network host (tests/netns.py)."""

    url: str  # of its `charter` database
    host: Any
    data: Path
    options: str
    log: Path

    def stop(self) -> None:
        self.host.run(["runuser", "-u", "postgres", "--", "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"],
                      check=True, capture_output=True)

    def start(self) -> None:
        self.host.run(["runuser", "-u", "postgres", "--", "pg_ctl", "-D", str(self.data), "-o", self.options,
                       "-l", str(self.log), "-w", "start"], check=True, capture_output=True)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is dropped, the data stays."""
        self.host.run(["runuser", "-u", "postgres", "--", "pg_ctl", "-D", str(self.data), "-o", self.options,
                       "-l", str(self.log), "-m", "fast", "-w", "restart"], check=True, capture_output=True)


@contextmanager
def cluster_on(host: Any) -> Iterator[Server]:
    """A server inside ``host``'s namespace, listening on its address, with fsync on; needs root."""
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="charter-pg-"))
    shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    subprocess.run(["initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
                   check=True, capture_output=True, **_as_postgres())  # type: ignore[arg-type]
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write("host all all 10.0.0.0/8 trust\n")
    options = f"-c listen_addresses={host.address} -p 5432 -k {root} -c max_connections=200"
    server = Server(f"postgresql://postgres@{host.address}:5432/charter", host, data, options, root / "log")
    host.run(["runuser", "-u", "postgres", "--", "pg_ctl", "-D", str(data), "-o", options, "-l", str(server.log),
              "-w", "start"], check=True, capture_output=True)
    try:
        with psycopg.connect(f"postgresql://postgres@{host.address}:5432/postgres", autocommit=True) as admin:
            admin.execute("CREATE DATABASE charter")
        yield server
    finally:
        host.run(["runuser", "-u", "postgres", "--", "pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"],
                 check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
