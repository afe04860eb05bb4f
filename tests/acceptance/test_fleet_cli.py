"""The fleet from the command line: run --submit, charter worker, charter workers, charter db upgrade."""

from __future__ import annotations

import json
import signal
import sqlite3

from .helpers import Workspace, wait_until


def plan(ws: Workspace) -> str:
    ws.write("plan.json", json.dumps({"goal": "fan out", "steps": [
        {"id": "l", "tool": "letters"},
        {"id": "up", "tool": "shout", "for_each": "${l}", "args": {"letter": "${item}"}},
        {"id": "all", "tool": "concat", "args": {"parts": "${up}"}},
    ]}))
    ws.write("fixed.flag", "")
    return "plan.json"


def test_a_submitted_run_is_run_by_a_worker_which_stops_cleanly_on_sigterm(ws: Workspace) -> None:
    res = ws("run", plan(ws), "--tools", ws.tools, "--submit", "--json")
    assert res.rc == 0, res
    run_id = json.loads(res.out)["id"]
    assert ws.status(run_id) == "running"
    assert ws.calls() == []  # recorded, not run
    res = ws("workers")
    assert res.rc == 0 and "no live workers" in res.out, res

    worker = ws.start("worker", "--concurrency", "2")
    wait_until(lambda: ws.status(run_id) == "succeeded", timeout=60, what="the worker to run it")
    assert ws.show(run_id)["output"] == "XYZ"
    live = json.loads(ws("workers", "--json").out)
    assert len(live) == 1 and live[0]["pid"] == worker.pid and live[0]["concurrency"] == 2

    worker.popen.send_signal(signal.SIGTERM)
    done = worker.wait(timeout=60)
    assert done.rc == 0, done
    assert "stopped" in done.err
    assert "no live workers" in ws("workers").out


def test_run_submit_says_how_to_follow_the_run(ws: Workspace) -> None:
    res = ws("run", plan(ws), "--tools", ws.tools, "--submit")
    assert res.rc == 0, res
    assert "submitted" in res.out and "charter watch" in res.out and "charter worker" in res.out


def test_db_upgrade_says_the_schema_version(ws: Workspace) -> None:
    res = ws("db", "upgrade", "--db", ws.db, db=False)
    assert res.rc == 0, res
    version, latest = [int(w.rstrip(")")) for w in res.out.split() if w.rstrip(")").isdigit()][:2]
    assert version == latest and latest >= 2


def test_a_store_newer_than_this_charter_is_refused_clearly(ws: Workspace) -> None:
    assert ws("db", "upgrade", "--db", ws.db, db=False).rc == 0
    if "://" in ws.db:
        import psycopg

        with psycopg.connect(ws.db, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    else:
        with sqlite3.connect(ws.db) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    for args in (("runs",), ("worker",), ("db", "upgrade", "--db", ws.db)):
        res = ws(*args, db=args[0] != "db")
        assert res.rc == 2, res
        assert "newer than this Charter understands" in res.err and "Traceback" not in res.err, res


def test_a_worker_given_a_store_it_cannot_reach_says_so(ws: Workspace) -> None:
    res = ws("worker", "--db", "postgresql://nobody@127.0.0.1:1/nothing", db=False, timeout=60)
    assert res.rc == 2, res
    assert "cannot reach store" in res.err and "Traceback" not in res.err, res
    res = ws("worker", "--concurrency", "0")
    assert res.rc == 2 and "Traceback" not in res.err, res


def test_the_workspace_file_names_the_store(ws: Workspace) -> None:
    (ws.root / "stores").mkdir()
    ws.write("charter.yaml", f"tools: [{ws.tools.name}]\ndb: stores/team.db\n")
    res = ws("run", plan(ws), db=False)  # no --db, no $CHARTER_DB: the file's
    assert res.rc == 0, res
    assert (ws.root / "stores" / "team.db").exists() and not (ws.root / "charter.db").exists()
    listed = ws("runs", "--json", db=False)
    assert listed.rc == 0 and len(json.loads(listed.out)) == 1, listed
    other = ws.root / "other.db"
    env_run = ws("run", plan(ws), "--db", other, db=False)  # --db (or $CHARTER_DB) wins
    assert env_run.rc == 0 and other.exists(), env_run


def test_decisions_on_a_fleet_run_say_the_workers_go_on_with_it(ws: Workspace) -> None:
    ws.write("ask.json", json.dumps({"goal": "ask first", "steps": [
        {"id": "ok", "approval": {"message": "go?"}},
        {"id": "after", "tool": "hold", "args": {"name": "after"}, "needs": ["ok"]},
    ]}))
    ws.write("gate", "")  # `after` holds until it goes
    res = ws("run", "ask.json", "--tools", ws.tools, "--submit", "--json")
    assert res.rc == 0, res
    run_id = json.loads(res.out)["id"]
    worker = ws.start("worker")
    wait_until(lambda: ws.status(run_id) == "awaiting", timeout=60, what="the approval to be asked")
    res = ws("pause", run_id)
    assert res.rc == 0, res
    res = ws("resume", run_id)  # resumed: it still waits for the decision
    assert res.rc == 3 and "waits for a decision" in res.out and "ended" not in res.err, res
    res = ws("approve", run_id, "ok")
    assert res.rc == 0 and "run by the workers" in res.out, res
    (ws.root / "gate").unlink()
    wait_until(lambda: ws.status(run_id) == "succeeded", timeout=60, what="the workers to finish it")
    assert [c["name"] for c in ws.calls(run=run_id)] == ["after"]
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60).rc == 0
