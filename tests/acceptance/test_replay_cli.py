"""`charter replay RUN` in a subprocess: the report, --json, --live-reads, exit codes, nothing written."""

from __future__ import annotations

import json

from .helpers import Workspace

PLAN = """\
goal: Shout every letter and keep the result
steps:
  - id: abc
    tool: letters
  - id: loud
    tool: shout
    for_each: ${abc}
    args: {letter: "${item}"}
  - id: joined
    tool: concat
    args: {parts: "${loud}"}
  - id: keep
    tool: write_file
    args: {path: out.txt, text: "${joined}"}
"""


def test_replay_reports_in_text_and_json_and_calls_no_write(ws: Workspace) -> None:
    ws.write("fixed.flag", "")
    ws.write("plan.yaml", PLAN)
    run = ws("run", "plan.yaml", "--tools", ws.tools, "--json")
    assert run.rc == 0, run
    run_id = json.loads(run.out)["id"]
    (ws.root / "out.txt").write_text("edited by hand")
    logged = len(ws.calls())

    same = ws("replay", run_id[:6])
    assert same.rc == 0, same
    assert f"replay of run {run_id}: ✓ no divergence" in same.out and "1 write(s) answered from the log" in same.out
    assert len(ws.calls()) == logged  # no tool ran: every result came from the log

    data = ws("replay", run_id, "--json")
    assert data.rc == 0, data
    report = json.loads(data.out)
    assert report["diverged"] is False and report["divergences"] == []
    assert report["fed"] == {"attempts": 6, "model_answers": 0, "tool_results": 6, "writes_withheld": 1,
                             "live_calls": 0}

    live = ws("replay", run_id, "--live-reads", "--json")
    assert live.rc == 0, live
    assert sorted(c["name"] for c in ws.calls()[logged:]) == ["x", "y", "z"]  # the reads, called for real
    assert json.loads(live.out)["fed"]["writes_withheld"] == 1

    # Today's shout is another: its outputs, and the arguments of what uses them, now differ.
    ws.tools.write_text(ws.tools.read_text().replace("return letter.upper()", "return letter * 2"))
    changed = ws("replay", run_id, "--live-reads")
    assert changed.rc == 1, changed
    assert "✗ 6 divergences" in changed.out  # 3 outputs of loud, joined's arguments and output, keep's arguments
    assert "loud[0] attempt 1 · output: its output differs" in changed.out
    assert "joined attempt 1 · arguments: its arguments differ (parts)" in changed.out
    assert 'recorded: {"parts": ["X", "Y", "Z"]}' in changed.out and 'today:    {"parts": ["xx", "yy", "zz"]}' in changed.out
    assert not any(c["name"] == "out.txt" for c in ws.calls()[logged:])  # the write ran once, when recorded
    assert (ws.root / "out.txt").read_text() == "edited by hand"
    assert [r["id"] for r in ws.runs()] == [run_id]  # the store gained no run

    # effect="write" dropped from write_file: the log holds its effect, so it is still a write here, never called
    ws.tools.write_text(ws.tools.read_text().replace('@tool(effect="write")\ndef write_file', "@tool\ndef write_file"))
    dropped = ws("replay", run_id, "--live-reads")
    assert dropped.rc == 1, dropped
    assert "keep attempt 1 · effect: write_file: recorded write, now read" in dropped.out
    assert "1 write(s) answered from the log" in dropped.out and "5 read(s) called for real" in dropped.out
    assert not any(c["name"] == "out.txt" for c in ws.calls()[logged:])
    assert (ws.root / "out.txt").read_text() == "edited by hand"


def test_replay_of_an_unknown_run_is_bad_input(ws: Workspace) -> None:
    ws.write("plan.yaml", "goal: g\nsteps:\n  - id: a\n    tool: add\n    args: {a: 1, b: 2}\n")
    assert ws("run", "plan.yaml", "--tools", ws.tools).rc == 0
    missing = ws("replay", "nope")
    assert missing.rc == 2 and "no run 'nope'" in missing.err


SECRET_TOOLS = '''\
import os
from pathlib import Path

from charter import tool


@tool
def api_key() -> str:
    """The key the service is called with, and the service's version."""
    version = (Path(__file__).parent / "version.txt").read_text().strip()
    return f"key={os.environ['MY_API_KEY']} v={version}"
'''


def test_replay_masks_the_workspaces_secrets_in_text_and_json(ws: Workspace) -> None:
    ws.write("secret_tools.py", SECRET_TOOLS)
    ws.write("version.txt", "1")
    ws.write("charter.yaml", "tools: [secret_tools.py]\n")
    ws.write("plan.yaml", "goal: Read the key\nsteps:\n  - id: key\n    tool: api_key\n")
    ws.env["MY_API_KEY"] = "first-key-4711"
    run = ws("run", "plan.yaml", "--json")
    assert run.rc == 0, run
    run_id = json.loads(run.out)["id"]
    assert "key=first-key-4711 v=1" in json.dumps(ws.show(run_id))  # no secret was named yet: logged in full

    # The workspace file names it now, and the service changed: the read's output diverges, its key masked
    # on both sides (the log's value too, since today's variable holds it).
    ws.write("charter.yaml", "tools: [secret_tools.py]\n"
                             "email: {host: localhost, from: a@example.com, password: '${env:MY_API_KEY}'}\n")
    ws.write("version.txt", "2")
    text = ws("replay", run_id, "--live-reads")
    assert text.rc == 1, text
    assert "key attempt 1 · output: its output differs" in text.out
    assert "recorded: key=*** v=1" in text.out and "today:    key=*** v=2" in text.out
    data = ws("replay", run_id, "--live-reads", "--json")
    assert data.rc == 1, data
    first = json.loads(data.out)["divergences"][0]
    assert (first["recorded"], first["replayed"]) == ("key=*** v=1", "key=*** v=2")
    assert "first-key-4711" not in text.out + text.err + data.out + data.err

    ws.env["MY_API_KEY"] = "other-key-4712"  # another key today: today's is masked (the log's is not known)
    other = ws("replay", run_id, "--live-reads", "--json")
    assert other.rc == 1, other
    assert json.loads(other.out)["divergences"][0]["replayed"] == "key=*** v=2"
    assert "other-key-4712" not in other.out + other.err
