"""Reviewing a plan at a real terminal (a pseudo-terminal): approve, edit in $EDITOR, reject."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import sys
import time
from collections.abc import Iterator

import pytest

from tests.provider_server import ProviderServer, openai_reply, provider_server

from .helpers import Workspace

PLAN = {"goal": "Greet", "steps": [
    {"id": "hello", "why": "to greet", "tool": "echo", "args": {"name": "hello"}},
    {"id": "save", "why": "keep it", "tool": "write_file", "args": {"path": "out.txt", "text": "${hello}"}},
]}
EDITOR = """import pathlib, sys
p = pathlib.Path(sys.argv[1])
p.write_text(p.read_text().replace("name: hello", "name: edited"))
"""


STARTED: list[int] = []
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROMPT = "Approve this plan? [a]pprove / [e]dit / [r]eject: "


class Terminal:
    """`charter` on a pseudo-terminal: read what it prints, type answers."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: become charter
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "charter", *argv], env)
        self.pid, self.fd, self.seen = pid, fd, ""
        STARTED.append(pid)

    def expect(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw {pattern!r}; the terminal shows:\n{self.seen}")
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.seen += os.read(self.fd, 65536).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    break
        return self.seen

    @property
    def text(self) -> str:
        """What a person sees: the output without terminal control sequences."""
        return ANSI.sub("", self.seen)

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def exit_code(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    self.seen += os.read(self.fd, 65536).decode(errors="replace")
                except OSError:
                    pass
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"charter did not exit; the terminal shows:\n{self.seen}")


@pytest.fixture(autouse=True)
def _stop_terminals() -> Iterator[None]:
    before = set(STARTED)
    yield
    for pid in set(STARTED) - before:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.fixture
def model(ws: Workspace) -> Iterator[ProviderServer]:
    with provider_server() as server:
        ws.env.update({"CHARTER_MODEL": "compat:planner", "CHARTER_BASE_URL": server.url + "/v1",
                       "TERM": "xterm-256color", "EDITOR": f"{sys.executable} {ws.write('editor.py', EDITOR)}"})
        yield server


def test_edit_then_approve_at_the_terminal(ws: Workspace, model: ProviderServer) -> None:
    model.reply(openai_reply(json.dumps(PLAN)))
    term = Terminal(["do", "Greet me", "-t", str(ws.tools), "--db", ws.db], ws.env, str(ws.root))
    term.expect(re.escape(PROMPT))  # the choices as typed, not eaten as markup
    term.type("e\n")
    term.expect(r"\(edited\)[\s\S]*Approve this plan\?")
    term.type("a\n")
    assert term.exit_code() == 0, term.seen
    assert (ws.root / "out.txt").read_text().startswith("edited")
    run_id = ws.only_run_id()
    events = json.loads(ws("show", run_id, "--json", "--events").out)["events"]
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["RunCreated", "ModelCalled", "PlanRevised", "PlanApproved"]
    assert events[2]["by"] == "user" and events[2]["reason"] == "edited in review"


def test_reject_at_the_terminal(ws: Workspace, model: ProviderServer) -> None:
    model.reply(openai_reply(json.dumps(PLAN)))
    term = Terminal(["do", "Greet me", "-t", str(ws.tools), "--db", ws.db], ws.env, str(ws.root))
    term.expect(re.escape(PROMPT))
    term.type("r\n")
    term.expect(r"Why\?")
    term.type("too risky\n")
    assert term.exit_code() == 3, term.seen
    run_id = ws.only_run_id()
    report = json.loads(ws("show", run_id, "--json").out)
    assert report["status"] == "rejected" and report["reason"] == "too risky"
    assert ws.calls() == [] and not (ws.root / "out.txt").exists()
