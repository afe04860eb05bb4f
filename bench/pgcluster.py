#!/usr/bin/env python
"""A throwaway PostgreSQL cluster for the fleet benchmark, and what it can do at most.

* ``start [DIR]``: ``initdb`` + ``pg_ctl start`` in ``DIR`` on a free loopback port
  (as the ``postgres`` user when running as root, which PostgreSQL requires),
  durable as a production server is: ``fsync=on`` and the default
  ``synchronous_commit=on``. It loads ``pg_stat_statements`` when the machine has it
  and keeps commit timestamps (``track_commit_timestamp``: the latency measure reads
  the commit time of the event that made a step ready). Prints the server's URL and
  its folder (default: a new temporary one, which the postgres user can enter).
* ``stop DIR``: stop it and remove ``DIR``.
* ``commit-limit URL``: the most single-row commits a second one connection gets on
  this server (``INSERT`` one ~200-byte row + ``COMMIT`` in a loop): the ceiling of a
  durable chain, which must commit once per step.
* ``drop URL PREFIX``: drop the server's databases named ``PREFIX...`` (leftovers).
* ``top URL DB``: the statements of database ``DB`` by total time (pg_stat_statements).

Stdlib and psycopg only; fleet_bench.py imports it, run_pg.sh calls it.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "on",
    "synchronous_commit": "on",
    "max_connections": "200",  # 4 workers x (pool of 10 + a listener) + the bench, with room
    "track_commit_timestamp": "on",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")

    def demote() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return {"preexec_fn": demote}


def _bin(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    for version in ("17", "16", "15"):
        p = Path(f"/usr/lib/postgresql/{version}/bin/{tool}")
        if p.exists():
            return str(p)
    raise SystemExit(f"PostgreSQL's {tool} is not installed (the server binaries are needed)")


def has_pg_stat_statements() -> bool:
    out = subprocess.run([_bin("pg_config"), "--pkglibdir"], capture_output=True, text=True)
    return out.returncode == 0 and (Path(out.stdout.strip()) / "pg_stat_statements.so").exists()


def start(root: Path) -> str:
    """A running cluster in ``root`` (made empty first); returns the URL of its ``postgres`` database."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    run = _as_postgres()
    p = subprocess.run([_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
                       capture_output=True, text=True, **run)
    if p.returncode != 0:  # often: a parent folder the postgres user may not enter
        raise SystemExit(f"initdb failed in {root}: {p.stderr.strip()}")
    settings = dict(SETTINGS)
    if has_pg_stat_statements():
        settings["shared_preload_libraries"] = "pg_stat_statements"
        settings["pg_stat_statements.track"] = "all"
    with open(data / "postgresql.conf", "a") as conf:
        conf.write("\n# fleet benchmark\n")
        conf.writelines(f"{k} = '{v}'\n" for k, v in settings.items())
    p = subprocess.run([_bin("pg_ctl"), "-D", str(data), "-o", f"-p {port} -k {root}", "-l", str(root / "log"),
                        "-w", "start"], capture_output=True, text=True, **run)
    if p.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        raise SystemExit(f"pg_ctl start failed: {p.stderr}\n{log[-2000:]}")
    (root / "port").write_text(str(port))
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    if "shared_preload_libraries" in settings:
        import psycopg

        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return url


def stop(root: Path) -> None:
    data = root / "data"
    if data.exists():
        subprocess.run([_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, **_as_postgres())
    shutil.rmtree(root, ignore_errors=True)


def server_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[0]


def new_database(url: str, name: str) -> str:
    """A fresh, empty database ``name`` on ``url``'s server (dropped first if there); its URL."""
    import psycopg

    with psycopg.connect(f"{server_of(url)}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{server_of(url)}/{name}"


def drop_databases(url: str, prefix: str) -> list[str]:
    """Drop every database whose name starts with ``prefix`` (the benchmark's leftovers)."""
    import psycopg

    with psycopg.connect(f"{server_of(url)}/postgres", autocommit=True) as admin:
        names = [r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                             (prefix.replace("_", r"\_") + "%",))]
        for n in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
    return names


def commit_limit(url: str, seconds: float = 3.0) -> dict[str, Any]:
    """Single-row commits per second over one connection, on a fresh database of the server."""
    import psycopg

    db = new_database(url, "fleetbench_commit_limit")
    body = json.dumps({"type": "StepSucceeded", "step": "s", "output": {"v": 1}, "at": 0.0}) * 3
    try:
        with psycopg.connect(db, autocommit=True) as c:
            c.execute("CREATE TABLE e (run TEXT, seq INTEGER, body TEXT, PRIMARY KEY (run, seq))")
            n, t0 = 0, time.perf_counter()
            while (dt := time.perf_counter() - t0) < seconds:
                c.execute("BEGIN")
                c.execute("INSERT INTO e VALUES ('r', %s, %s)", (n, body))
                c.execute("COMMIT")
                n += 1
            settings = dict(c.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                      "('fsync', 'synchronous_commit', 'wal_sync_method', 'server_version')"))
    finally:
        drop_databases(url, "fleetbench_commit_limit")
    return {"workload": "commit_limit", "n": n, "seconds": round(dt, 3), "commits_per_s": round(n / dt),
            "us_per_commit": round(dt / n * 1e6, 1), "settings": settings}


def top_statements(url: str, db: str, limit: int = 15) -> list[dict[str, Any]]:
    """``db``'s statements by total execution time since the last reset (pg_stat_statements;
    none if the server does not have it in its ``postgres`` database)."""
    import psycopg

    with psycopg.connect(f"{server_of(url)}/postgres", autocommit=True) as c:
        if not has_statements(c):
            return []
        rows = c.execute(
            "SELECT s.calls, s.total_exec_time, s.mean_exec_time, s.rows, s.query "
            "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = %s ORDER BY s.total_exec_time DESC LIMIT %s", (db, limit)).fetchall()
    return [{"calls": r[0], "total_ms": round(r[1], 1), "mean_ms": round(r[2], 4), "rows": r[3],
             "query": " ".join(r[4].split())[:160]} for r in rows]


def has_statements(conn: Any) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()
    return bool(row and row[0])


def reset_statements(url: str) -> None:
    import psycopg

    with psycopg.connect(f"{server_of(url)}/postgres", autocommit=True) as c:
        if has_statements(c):
            c.execute("SELECT pg_stat_statements_reset()")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("start").add_argument("dir", nargs="?")
    sub.add_parser("stop").add_argument("dir")
    cl = sub.add_parser("commit-limit")
    cl.add_argument("url")
    cl.add_argument("--seconds", type=float, default=3.0)
    drop = sub.add_parser("drop")
    drop.add_argument("url")
    drop.add_argument("prefix")
    top = sub.add_parser("top")
    top.add_argument("url")
    top.add_argument("db")
    a = ap.parse_args()
    if a.cmd == "start":
        root = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="fleetbench-pg-"))
        print(start(root), root)
    elif a.cmd == "stop":
        stop(Path(a.dir))
    elif a.cmd == "commit-limit":
        print(json.dumps({"peer": "postgresql", **commit_limit(a.url, a.seconds)}), flush=True)
    elif a.cmd == "drop":
        drop_databases(a.url, a.prefix)
    elif a.cmd == "top":
        for r in top_statements(a.url, a.db):
            print(json.dumps(r))
    else:  # pragma: no cover
        sys.exit(2)


if __name__ == "__main__":
    main()
