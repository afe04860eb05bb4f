"""Chaos: kill `charter` between a write's effect and the commit of its step's result; resume; count effects.

A plan writes a file, commits it with git and mails the team through a real
SMTP server (aiosmtpd) on loopback, with the built-in tools. Each case kills
the process with SIGKILL at an exact place (tests/chaos/killpoint.py):

* right after a write was recorded in the effect ledger, before the step's
  result was committed: the resumed run finds the ledger entry and does not
  act again;
* right after the tool returned, before even the ledger entry: the file and
  git tools check for themselves (the same content is there; a commit with
  the key's trailer exists).

Either way the world ends with exactly one file write, one commit, one email.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from tests.acceptance.helpers import cli_env
from tests.pg import store_for

pytestmark = pytest.mark.chaos

KILLPOINT = Path(__file__).resolve().parent / "killpoint.py"

PLAN = {"goal": "publish the weekly report", "steps": [
    {"id": "write", "tool": "write_file", "args": {"path": "repo/report.md", "content": "# Weekly report\n"}},
    {"id": "commit", "tool": "git_commit", "needs": ["write"],
     "args": {"repo": "repo", "message": "Add the weekly report", "paths": ["report.md"]}},
    {"id": "mail", "tool": "send_email", "needs": ["commit"],
     "args": {"to": ["team@example.com"], "subject": "Weekly report", "body": "Committed ${commit.commit}"}},
]}


class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def workspace(tmp_path: Path, port: int) -> Path:
    ws = tmp_path / "ws"
    repo = ws / "repo"
    repo.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.com"], ["config", "user.name", "T"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    (ws / "charter.yaml").write_text(yaml.safe_dump({
        "tools": ["charter.builtins.files", "charter.builtins.git", "charter.builtins.email"],
        "email": {"host": "127.0.0.1", "port": port, "from": "charter@example.com", "tls": "none"},
    }))
    (ws / "plan.yaml").write_text(yaml.safe_dump(PLAN, sort_keys=False))
    return ws


def charter(ws: Path, *args: str, killpoint: tuple[str, int] | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["-m", "charter"] if killpoint is None else [str(KILLPOINT), killpoint[0], str(killpoint[1]), "after"]
    return subprocess.run([sys.executable, *prefix, *args, "--db", store_for(ws, "c.db")], cwd=ws, env=cli_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("killpoint", [
    ("charter.engine.attempts:call_tool", 1),  # the file written and in the ledger, its step's result not committed
    ("charter.engine.attempts:call_tool", 2),  # the same for the commit
    ("charter.engine.attempts:call_tool", 3),  # and for the email
    ("charter.tools:Tool.invoke", 1),  # the file written, not even in the ledger yet
    ("charter.tools:Tool.invoke", 2),  # the commit made, not even in the ledger yet
], ids=["file-ledgered", "commit-ledgered", "email-ledgered", "file-unledgered", "commit-unledgered"])
def test_a_kill_between_effect_and_result_leaves_exactly_one_of_each(
    tmp_path: Path, smtp: tuple[Inbox, int], killpoint: tuple[str, int]
) -> None:
    inbox, port = smtp
    ws = workspace(tmp_path, port)
    killed = charter(ws, "run", "plan.yaml", killpoint=killpoint)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    [run] = json.loads(charter(ws, "runs", "--json").stdout)
    assert run["status"] == "running"  # as the dead process left it
    resumed = charter(ws, "resume", run["id"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    assert (ws / "repo" / "report.md").read_text() == "# Weekly report\n"
    log = subprocess.run(["git", "log", "--format=%H %(trailers:key=Charter-Key,valueonly)"], cwd=ws / "repo",
                         capture_output=True, text=True, check=True).stdout.split()
    assert log == [log[0], f"{run['id']}/commit"]  # one commit, carrying the step's key
    assert len(inbox.messages) == 1
    mail = message_from_bytes(inbox.messages[0])
    assert mail["Subject"] == "Weekly report" and log[0] in mail.get_payload()

    effects = json.loads(charter(ws, "effects", run["id"], "--json").stdout)
    assert [(e["step_id"], e["tool"]) for e in effects] == [
        ("write", "write_file"), ("commit", "git_commit"), ("mail", "send_email")]
    assert effects[2]["target"] == ["team@example.com"]
    assert effects[2]["result"]["message_id"] == mail["Message-ID"]

    events = json.loads(charter(ws, "show", run["id"], "--json", "--events").stdout)["events"]
    killed_step = {1: "write", 2: "commit", 3: "mail"}[killpoint[1]]
    starts = [e for e in events if e["type"] == "StepStarted" and e["step"] == killed_step]
    assert len(starts) == 2  # the step did run again, and its repeat changed nothing
