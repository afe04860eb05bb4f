"""A replay of a run that used every built-in write tool reaches nothing: no file, commit, branch,
HTTP request, email or Slack message, against real servers on loopback and a real repository."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from charter import Charter
from charter.testing import FakeClock
from tests.integration.test_builtin_email import Inbox, free_port
from tests.loopback_http import Reply, Seen, Server, json_reply

BUILTINS = ["charter.builtins.files", "charter.builtins.http", "charter.builtins.git", "charter.builtins.email",
            "charter.builtins.slack"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture(autouse=True)
def clean_git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_DIR", "EMAIL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def respond(req: Seen) -> Reply:
    if req.path.startswith("/api/"):  # Slack's Web API
        return json_reply({"ok": True, "channel": "C0123", "ts": "1700000000.000100"})
    return json_reply({"received": True})


def workspace(root: Path, smtp_port: int, url: str) -> Path:
    ws = root / "charter.yaml"
    ws.write_text(json.dumps({
        "http": {"allow_private": True, "timeout": 5},
        "email": {"host": "127.0.0.1", "port": smtp_port, "from": "Bot <bot@example.org>", "tls": "none",
                  "timeout": 5},
        "slack": {"token": "${env:TEST_SLACK_TOKEN}", "api_url": url + "/api/", "timeout": 5},
    }))
    return ws


def plan(url: str) -> dict[str, Any]:
    return {"goal": "tell everyone", "steps": [
        {"id": "note", "tool": "write_file", "args": {"path": "notes/report.md", "content": "all good"}},
        {"id": "hook", "tool": "http_post", "args": {"url": url + "/hook", "json": {"status": "ok"}}},
        {"id": "branch", "tool": "git_create_branch", "args": {"repo": "proj", "name": "feature"}},
        {"id": "commit", "tool": "git_commit", "args": {"repo": "proj", "message": "Record the work"}},
        {"id": "mail", "tool": "send_email", "args": {"to": ["ann@example.com"], "subject": "Done",
                                                       "body": "The hook answered ${hook.status}"}},
        {"id": "chat", "tool": "slack_post", "args": {"text": "Done: ${note.path}", "channel": "#ops"}},
    ]}


async def test_a_replay_reaches_no_server_file_or_repository(
        tmp_path: Path, db_path: Any, inbox: tuple[Inbox, int], serve: Callable[..., Server],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SLACK_TOKEN", "xoxb-test-4242-secret")
    smtp, port = inbox
    server = serve(respond)
    root = tmp_path / "ws"
    repo = root / "proj"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# Proj\n")
    git(repo, "add", "README.md")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "first")
    (repo / "work.txt").write_text("the work\n")
    ws = workspace(root, port, server.url)

    with Charter(db_path, tools=BUILTINS, workspace=ws, clock=FakeClock(auto_advance=True)) as app:
        recorded = await app.run(plan(server.url))
    assert recorded.status == "succeeded", recorded.reason
    assert len(smtp.envelopes) == 1 and [s.path for s in server.seen] == ["/hook", "/api/chat.postMessage"]
    assert "Record the work" in git(repo, "log", "-1", "--format=%B")

    # Undo what the run did where a repeat would show: a replay that called a write tool would do it again.
    report_md = root / "notes" / "report.md"
    report_md.write_text("edited by hand")
    git(repo, "reset", "-q", "--soft", "HEAD~1")
    git(repo, "branch", "-q", "-D", "feature")
    head = git(repo, "rev-parse", "HEAD")

    with Charter(db_path, mode="ro") as app:  # the tools the run recorded: the modules and charter.yaml
        replay = await app.replay(recorded.id)
        live = await app.replay(recorded.id, live_reads=True)  # there are only writes: still none is called
        effects = await app.effects(recorded.id)

    assert replay.divergences == [] and live.divergences == [], replay.divergences or live.divergences
    assert replay.writes_withheld == live.writes_withheld == 6 and replay.replayed_status == "succeeded"
    assert len(smtp.envelopes) == 1  # the SMTP server received no new message
    assert [s.path for s in server.seen] == ["/hook", "/api/chat.postMessage"]  # no HTTP or Slack request
    assert report_md.read_text() == "edited by hand"
    assert git(repo, "rev-parse", "HEAD") == head and "feature" not in git(repo, "branch")
    assert len(effects) == 6  # the ledger holds the run's six effects, none added
