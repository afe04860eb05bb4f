"""Runs whose process died: shown as interrupted, continued only by `charter resume`.

A run killed with SIGKILL stays `running` in its log. Nobody runs it any more,
so `charter runs` and `charter show` say it is interrupted and how to go on;
`charter run` of another plan leaves it alone (it only says that it exists),
and `charter resume RUN` or `charter resume --all` continues it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .helpers import Proc, Workspace, step, wait_until

KILLED = """\
goal: Wait at a gate, then write a file
steps:
  - id: first
    tool: echo
    args: {name: first}
  - id: wait
    tool: hold
    args: {name: wait}
    needs: [first]
  - id: save
    tool: write_file
    args: {path: saved.txt, text: "${wait}"}
"""

OTHER = """\
goal: Something else entirely
steps:
  - id: hello
    tool: echo
    args: {name: hello}
"""


def start_killable(ws: Workspace, name: str = "killed.yaml", tools: Path | None = None) -> tuple[Proc, str]:
    """Start a run of KILLED and wait until its `wait` step executes; returns the process and run id."""
    ws.write("gate", "closed")
    proc = ws.start("run", ws.write(name, KILLED), "--tools", tools or ws.tools)

    def waiting() -> str | None:
        if not proc.alive():
            raise AssertionError(f"charter run exited early\n{proc.result()}")
        mine = [c for c in ws.calls("wait") if c["pid"] == proc.pid]
        return mine[0]["run"] if mine else None

    return proc, wait_until(waiting, what="the `wait` step to start")


def kill(proc: Proc) -> None:
    proc.popen.kill()  # SIGKILL: no handler runs, the log still says `running`
    proc.popen.wait()


def row(ws: Workspace, run_id: str) -> dict:
    [r] = [r for r in ws.runs() if r["id"] == run_id]
    return r


def test_a_killed_run_is_shown_as_interrupted_with_how_to_resume_it(ws: Workspace) -> None:
    proc, run_id = start_killable(ws)
    live = row(ws, run_id)
    assert (live["status"], live["interrupted"]) == ("running", False)  # its process is alive
    assert ws.show(run_id)["interrupted"] is False
    kill(proc)

    r = row(ws, run_id)
    assert (r["status"], r["interrupted"]) == ("running", True)  # the logged status, and who runs it: nobody
    shown = ws.show(run_id)
    assert (shown["status"], shown["interrupted"]) == ("running", True)

    table = ws("runs")
    assert table.rc == 0, table
    [line] = [ln for ln in table.out.splitlines() if ln.startswith(run_id)]
    assert "interrupted" in line and "running" not in line, table.out
    assert "charter resume RUN" in table.out and "charter resume --all" in table.out, table.out
    # as a filter too: interrupted, not running
    assert run_id in ws("runs", "--status", "interrupted").out
    assert run_id not in (only_running := ws("runs", "--status", "running")).out
    assert "no runs match" in only_running.out, only_running

    text = ws("show", run_id)
    assert text.rc == 0, text
    assert f"run {run_id} · interrupted" in text.out, text.out
    assert f"charter resume {run_id}" in text.out, text.out

    (ws.root / "gate").unlink()
    done = ws("resume", run_id)
    assert done.rc == 0, done
    r = row(ws, run_id)
    assert (r["status"], r["interrupted"]) == ("succeeded", False)


def test_run_leaves_a_killed_run_alone_and_resume_all_finishes_it(ws: Workspace) -> None:
    proc, run_id = start_killable(ws)
    kill(proc)
    (ws.root / "gate").unlink()  # whoever continues the killed run now goes on to its write step
    before = ws.calls(run=run_id)

    res = ws("run", ws.write("other.yaml", OTHER), "--tools", ws.tools)
    assert res.rc == 0, res
    assert ws.calls(run=run_id) == before  # none of its steps ran again
    assert ws.calls("saved.txt") == [] and not (ws.root / "saved.txt").exists()  # its write did not happen
    hint = [ln for ln in res.err.splitlines() if "interrupted" in ln]
    assert len(hint) == 1, res.err
    assert f"1 interrupted run on this store ({run_id})" in hint[0], hint
    assert "charter resume RUN" in hint[0] and "charter resume --all" in hint[0], hint
    assert row(ws, run_id)["interrupted"] is True

    resumed = ws("resume", "--all")
    assert resumed.rc == 0, resumed
    assert f"resuming 1 interrupted run: {run_id}" in resumed.err, resumed
    shown = ws.show(run_id)
    assert (shown["status"], shown["interrupted"]) == ("succeeded", False)
    assert [a["outcome"] for a in step(shown, "wait")["attempts"]] == ["interrupted", "succeeded"]
    assert len(ws.calls("saved.txt", run=run_id)) == 1
    assert len(ws.calls("first", run=run_id)) == 1  # finished before the kill: never again

    again = ws("resume", "--all")  # nothing left
    assert again.rc == 0 and "no interrupted runs" in again.out, again
    assert "interrupted" not in ws("run", ws.root / "other.yaml", "--tools", ws.tools).err


def test_resume_all_takes_every_interrupted_run_and_nothing_else(ws: Workspace) -> None:
    first, a = start_killable(ws, "a.yaml")
    kill(first)
    second, b = start_killable(ws, "b.yaml")
    kill(second)
    paused, c = start_killable(ws, "c.yaml")
    assert ws("pause", c).rc == 0  # a person paused it: not interrupted, --all leaves it
    assert paused.wait().rc == 3
    (ws.root / "gate").unlink()

    note = ws("run", ws.write("other.yaml", OTHER), "--tools", ws.tools)
    assert note.rc == 0 and "2 interrupted runs on this store" in note.err, note

    res = ws("resume", "--all", "--json")
    assert res.rc == 0, res
    reports = json.loads(res.out)
    assert sorted(r["id"] for r in reports) == sorted([a, b])
    assert all(r["status"] == "succeeded" for r in reports)
    assert ws.status(c) == "paused"


def test_resume_wants_a_run_or_all(ws: Workspace) -> None:
    assert ws("run", ws.write("other.yaml", OTHER), "--tools", ws.tools).rc == 0
    for args in (("resume",), ("resume", "abc", "--all")):
        res = ws(*args)
        assert res.rc == 2 and "give a run id, or --all" in res.err, (args, res)


def test_resume_all_goes_on_when_one_run_cannot_be_taken_over(ws: Workspace) -> None:
    first, good = start_killable(ws, "a.yaml")
    kill(first)
    other_tools = ws.root / "other_tools.py"
    shutil.copy(ws.tools, other_tools)
    second, broken = start_killable(ws, "b.yaml", tools=other_tools)
    kill(second)
    other_tools.write_text("raise ImportError('the SDK is gone')\n", encoding="utf-8")
    (ws.root / "gate").unlink()

    res = ws("resume", "--all")
    assert res.rc == 2, res
    assert f"cannot resume run {broken}" in res.err and "the SDK is gone" in res.err, res
    assert "Traceback" not in res.err
    assert ws.status(good) == "succeeded"
    assert row(ws, broken)["interrupted"] is True  # left as it was, for when its tools are back
