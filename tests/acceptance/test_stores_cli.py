"""Stores from the command line: inspected in a read-only folder, never created by a typo, and a run
stopped by a full disk finished once a little more room than its data needs is freed."""

from __future__ import annotations

import json
import re

from tests.volumes import read_only_folder, small_volume

from .helpers import Workspace, wait_until

WRITES = """\
goal: Write a file
steps:
  - id: save
    tool: write_file
    args: {path: out.txt, text: hello}
"""

HELD = """\
goal: Wait at a gate
steps:
  - id: wait
    tool: hold
    args: {name: wait}
"""

INSPECT = ("runs", "runs --json", "show {run}", "show {run} --json --events", "effects", "effects {run} --json")


def chain(n: int) -> str:
    lines = ["goal: A long chain", "steps:"]
    for i in range(n):
        lines += [f"  - id: s{i}", "    tool: echo", f"    args: {{name: s{i}, value: {'x' * 300}}}"]
        if i:
            lines.append(f"    needs: [s{i - 1}]")
    return "\n".join(lines) + "\n"


def test_a_store_in_a_read_only_folder_can_be_inspected(ws: Workspace) -> None:
    shelf = ws.root / "shelf"
    shelf.mkdir()
    db = str(shelf / "charter.db")
    done = ws("run", ws.write("writes.yaml", WRITES), "--tools", ws.tools, "--db", db, db=False)
    assert done.rc == 0, done
    run_id = re.findall(r"\brun ([0-9a-f]{12})\b", done.out)[0]
    assert sorted(p.name for p in shelf.iterdir()) == ["charter.db"]  # closed: no log, no shared memory

    with read_only_folder(shelf):
        for command in INSPECT:
            res = ws(*command.format(run=run_id).split(), "--db", db, db=False)
            assert res.rc == 0, (command, res)
        assert json.loads(ws("show", run_id, "--json", "--db", db, db=False).out)["status"] == "succeeded"
        assert run_id in ws("effects", "--db", db, db=False).out
        refused = ws("resume", run_id, "--db", db, db=False)  # it would have to write
        assert refused.rc == 2 and "Traceback" not in refused.err and "error:" in refused.err, refused

    # A process killed mid-run leaves its log beside the store: reading in a read-only folder uses it.
    ws.write("gate", "closed")
    proc = ws.start("run", ws.write("held.yaml", HELD), "--tools", ws.tools, "--db", db, db=False)
    wait_until(lambda: ws.calls("wait"), what="the `wait` step to start")
    proc.popen.kill()
    proc.popen.wait()
    assert (shelf / "charter.db-wal").exists()
    with read_only_folder(shelf):
        listed = json.loads(ws("runs", "--json", "--db", db, db=False).out)
        killed = listed[0]
        assert (killed["goal"], killed["status"], killed["interrupted"]) == ("Wait at a gate", "running", True)
        table = ws("runs", "--db", db, db=False)
        assert table.rc == 0 and re.search(rf"^{killed['id']}\s+interrupted", table.out, re.M), table


def test_commands_that_only_read_create_no_store(ws: Workspace) -> None:
    typo = ws.root / "typo.db"
    for command in ("runs", "show abc", "effects", "resume abc", "pause abc", "approve abc"):
        res = ws(*command.split(), "--db", typo, db=False)
        assert res.rc == 2 and f"no store at {typo}: the file does not exist" in res.err, (command, res)
    assert not typo.exists()


def test_a_run_stopped_by_a_full_disk_finishes_once_a_little_room_is_freed(ws: Workspace) -> None:
    plan = ws.write("chain.yaml", chain(400))
    reference = ws.root / "reference.db"
    done = ws("run", plan, "--tools", ws.tools, "--db", reference, db=False)
    assert done.rc == 0, done
    data = reference.stat().st_size  # the whole run's data, its log folded in (the process has ended)
    (ws.root / "calls.log").unlink()

    vol = ws.root / "vol"
    with small_volume(vol, data) as resize:  # room for the data, not for the log too
        db = vol / "charter.db"
        full = ws("run", plan, "--tools", ws.tools, "--db", db, db=False)
        assert full.rc == 2 and "Traceback" not in full.err, full
        found = re.search(r"the disk is full .*needs at least ([0-9.]+) KiB free.*nothing committed was lost",
                          full.err)
        assert found, full
        [row] = json.loads(ws("runs", "--json", "--db", db, db=False).out)
        assert row["interrupted"] and 0 < row["steps_done"] < 400, row

        resize(data + int(float(found.group(1)) * 1024) + 16 * 4096)  # a little more than the data needs
        resumed = ws("resume", "--all", "--db", db, db=False)
        assert resumed.rc == 0, resumed
        shown = ws("show", row["id"], "--json", "--db", db, db=False)
        assert json.loads(shown.out)["status"] == "succeeded"
        ran = [c["step"] for c in ws.calls(run=row["id"])]
        assert sorted(set(ran)) == sorted(f"s{i}" for i in range(400))
        assert len(ran) - len(set(ran)) <= 1  # at most the step in flight when the disk filled ran again
