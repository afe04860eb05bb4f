"""Replays and the workspace's secrets: a difference that vanishes once both sides are masked is none.

Secrets are registered for the whole process and never forgotten, so each test's value is its own,
named by no other test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from charter import Charter, PermanentError, tool
from charter.testing import FakeClock, ScriptedModel


@tool
def read_secret() -> str:
    """The service's key (as a careless tool might hand it back)."""
    return f"key={os.environ['S11_SECRET']}"


@tool
def echo(text: str) -> str:
    """The text, back."""
    return f"echo {text}"


@tool
def refuse() -> str:
    """Fails, naming the key in its message."""
    raise PermanentError(f"the service refused {os.environ['S11_SECRET']}")


TOOLS = [read_secret, echo, refuse]


def workspace(root: Path) -> Path:
    path = root / "charter.yaml"
    path.write_text("email: {host: localhost, from: a@example.com, password: '${env:S11_SECRET}'}\n")
    return path


def app(db: Path, ws: Path | None = None, model: ScriptedModel | None = None) -> Charter:
    return Charter(db, tools=TOOLS, clock=FakeClock(auto_advance=True), model=model, workspace=ws)


async def test_an_agents_tool_result_holding_a_secret_replays_without_divergence(
        db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S11_SECRET", "s11-agent-secret-5521")
    ws = workspace(tmp_path)
    plan = {"goal": "g", "steps": [{"id": "ask", "agent": {"prompt": "Read the key", "tools": ["read_secret", "echo"]}}]}
    # the model passes the key on: the call's key was taken on it, the log holds it masked
    model = ScriptedModel([ScriptedModel.call("read_secret", {}),
                           ScriptedModel.call("echo", {"text": "key=s11-agent-secret-5521"}), "Done."])
    with app(db_path, ws, model) as a:
        run_id = (await a.run(plan)).id
        # the model was sent the key (its digest taken so); the log holds it masked
        assert "s11-agent-secret-5521" not in str(await a.store.events(run_id))
    with app(db_path, ws) as a:
        report = await a.replay(run_id)
    assert report.divergences == [] and report.model_answers == 3 and report.tool_results == 2


async def test_a_secret_the_log_holds_in_full_is_no_divergence_once_the_workspace_names_it(
        db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S11_SECRET", "s11-full-secret-7730")
    plan = {"goal": "g", "steps": [
        {"id": "key", "tool": "read_secret"},
        {"id": "use", "tool": "echo", "args": {"text": "${key}"}},
        {"id": "bad", "tool": "refuse"},
    ]}
    with app(db_path) as a:  # no workspace names the secret: the log holds it in full
        run_id = (await a.run(plan)).id
        assert "s11-full-secret-7730" in str(await a.store.events(run_id))
    with app(db_path, workspace(tmp_path)) as a:
        fed = await a.replay(run_id)
        live = await a.replay(run_id, live_reads=True)
    assert fed.divergences == [] and live.divergences == []
    assert (fed.recorded_status, fed.replayed_status) == ("failed", "failed")
    assert live.live_calls == 3
