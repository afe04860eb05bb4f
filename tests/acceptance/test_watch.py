"""`charter watch RUN`: follow, from another terminal, a run that another process executes.

The run waits at a gate (a file the test removes) so the test decides when it
moves on; the watcher is a second `charter` process that only reads the store.
"""

from __future__ import annotations

import json
import signal

from .helpers import Proc, Workspace, step, wait_until
from .test_cli import HELD  # a run held at a gate the test opens


def start_held(ws: Workspace) -> tuple[Proc, str]:
    """`charter run` of HELD in the background, waiting at its gate; returns the process and the run id."""
    ws.write("gate", "closed")
    proc = ws.start("run", ws.write("held.yaml", HELD), "--tools", ws.tools)
    wait_until(lambda: ws.calls("wait") or not proc.alive(), what="the wait step to start")
    assert proc.alive(), proc.result()
    return proc, ws.only_run_id()


def attach(ws: Workspace, run_id: str, *args: str) -> Proc:
    """Start `charter watch` and wait until it has caught up with the run (the wait step is running)."""
    watcher = ws.start("watch", run_id, *args)
    wait_until(lambda: "▶ wait (attempt 1)" in "".join(watcher.output()) or not watcher.alive(),
               what="the watcher to catch up")
    assert watcher.alive(), watcher.result()
    return watcher


def event_count(ws: Workspace, run_id: str) -> int:
    res = ws("show", run_id, "--json", "--events")
    assert res.rc == 0, res
    return len(json.loads(res.out)["events"])


def test_watch_follows_a_run_another_process_executes_to_its_end(ws: Workspace) -> None:
    run, run_id = start_held(ws)
    watcher = attach(ws, run_id)

    (ws.root / "gate").unlink()
    watched = watcher.wait()
    assert watched.rc == 0, watched
    lines = watched.out.splitlines()
    assert lines[:4] == [f"run {run_id}: Wait at a gate (3 steps)", "  ▶ first (attempt 1)",
                         lines[2], "  ▶ wait (attempt 1)"], watched
    later = "\n".join(lines[4:])  # what happened after the watcher attached, as it happened
    assert "✓ wait" in later and "▶ last (attempt 1)" in later and "✓ last" in later, watched
    assert f"✓ run {run_id} succeeded" in later and '"value": "wait"' in later, watched

    assert run.wait().rc == 0
    shown = ws.show(run_id)
    assert [a["outcome"] for a in step(shown, "wait")["attempts"]] == ["succeeded"]  # never disturbed


def test_watch_ends_with_the_outcome_when_the_run_is_paused_elsewhere(ws: Workspace) -> None:
    run, run_id = start_held(ws)
    watcher = attach(ws, run_id, "--json")
    assert ws("pause", run_id, "--reason", "lunch").rc == 0
    watched = watcher.wait()
    assert watched.rc == 3, watched
    report = json.loads(watched.out)
    assert (report["status"], report["reason"], report["interrupted"]) == ("paused", "lunch", False)
    assert run.wait().rc == 3


def test_watch_a_run_that_has_ended_prints_its_outcome_at_once(ws: Workspace) -> None:
    plan = ws.write("gated.yaml", "goal: Gated\nsteps:\n  - {id: only, tool: gated, args: {name: only}}\n")
    assert ws("run", plan, "-t", ws.tools).rc == 1
    run_id = ws.only_run_id()
    res = ws("watch", run_id[:6])
    assert res.rc == 1, res
    assert f"✗ run {run_id} failed" in res.out and f"charter retry {run_id} only" in res.out, res


def test_watch_an_interrupted_run_says_how_to_resume_and_leaves_it_alone(ws: Workspace) -> None:
    run, run_id = start_held(ws)
    run.stop()  # kill -9: nobody runs it now
    before = event_count(ws, run_id)

    res = ws("watch", run_id, timeout=30)
    assert res.rc == 3, res
    assert res.out.splitlines()[-1] == (f"⏸ run {run_id} is interrupted: the process running it is gone. "
                                        f"Resume it with: charter resume {run_id}"), res
    assert event_count(ws, run_id) == before  # watching wrote nothing

    (ws.root / "gate").unlink()
    assert ws("resume", run_id).rc == 0


def test_ctrl_c_detaches_and_the_run_goes_on(ws: Workspace) -> None:
    run, run_id = start_held(ws)
    watcher = attach(ws, run_id)
    watcher.popen.send_signal(signal.SIGINT)
    detached = watcher.wait()
    assert detached.rc == 130, detached
    assert f"Detached; run {run_id} goes on. Follow it again with: charter watch {run_id}" in detached.err
    assert "Traceback" not in detached.err

    assert run.alive()
    (ws.root / "gate").unlink()
    assert run.wait().rc == 0
    assert ws.status(run_id) == "succeeded"
    assert [a["outcome"] for a in step(ws.show(run_id), "wait")["attempts"]] == ["succeeded"]


def test_watch_an_unknown_run(ws: Workspace) -> None:
    none = ws("watch", "nope")
    assert none.rc == 2 and "no store at" in none.err, none  # watching only reads: it creates no store
    plan = ws.write("gated.yaml", "goal: Gated\nsteps:\n  - {id: only, tool: gated, args: {name: only}}\n")
    assert ws("run", plan, "--tools", ws.tools).rc == 1
    res = ws("watch", "nope")
    assert res.rc == 2, res
    assert "no run 'nope'" in res.err
