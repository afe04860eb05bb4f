"""MCP servers from a workspace file, against the real reference servers from PyPI and an SDK server over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from charter import Charter, ConfigError, PlanError, tool
from charter.errors import RetryableError
from charter.testing import ScriptedModel
from charter.tools import ToolContext
from charter.workspace import Workspace, load_workspace

HERE = Path(__file__).parent
TIME = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]
GATED = "mcp_gated_server.py"
T = TypeVar("T")
CTX = ToolContext("run", "step", None, 1, "run/step")


def write_workspace(folder: Path, config: dict[str, object]) -> Path:
    path = folder / "charter.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.com"], ["config", "user.name", "T"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


def children_running(pattern: str) -> list[int]:
    """Our own child processes whose command line contains ``pattern``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and pattern in cmdline:
            found.append(int(entry.name))
    return found


def test_time_server_tools_join_the_catalog_and_run_in_a_plan(tmp_path: Path) -> None:
    ws = load_workspace(write_workspace(tmp_path, {"mcp": {"time": {"command": TIME}}}))
    with Charter(tmp_path / "c.db", workspace=ws) as app:
        tool = app.registry.get("time.get_current_time")
        assert tool is not None and tool.effect == "read" and tool.required_args() == ["timezone"]
        assert "timezone" in tool.schema()["properties"]
        report = app.run_sync({"goal": "what time is it", "steps": [
            {"id": "now", "tool": "time.get_current_time", "args": {"timezone": "Europe/Paris"}},
            {"id": "tokyo", "tool": "time.convert_time",
             "args": {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}},
        ]})
        assert report.status == "succeeded", report.reason
        assert report.step("now").output["timezone"] == "Europe/Paris"
        assert report.step("tokyo").output["target"]["datetime"].endswith("21:00:00+09:00")


def test_plan_arguments_are_checked_against_the_servers_schema(tmp_path: Path) -> None:
    ws = load_workspace(write_workspace(tmp_path, {"mcp": {"time": {"command": TIME}}}))
    with Charter(tmp_path / "c.db", workspace=ws) as app:
        with pytest.raises(PlanError) as err:
            asyncio.run(app.load_plan({"goal": "g", "steps": [
                {"id": "a", "tool": "time.get_current_time", "args": {"timezone": 5, "extra": 1}},
                {"id": "b", "tool": "time.convert_time", "args": {"time": "12:00"}},
                {"id": "c", "tool": "time.no_such_tool"},
            ]}))
        text = str(err.value)
        assert "steps[0].args.timezone: 5 is not of type 'string'" in text
        assert "has no argument 'extra'" in text
        assert "steps[1].args.source_timezone: missing required argument" in text
        assert "unknown tool 'time.no_such_tool'" in text


def test_git_server_on_a_temporary_repository_commits_and_the_ledger_records_it(tmp_path: Path, repo: Path) -> None:
    (repo / "notes.md").write_text("hello\n")
    ws = load_workspace(write_workspace(tmp_path, {"mcp": {"git": {
        "command": [sys.executable, "-m", "mcp_server_git", "--repository", str(repo)],
        "targets": {"git_commit": "repo_path", "git_add": "repo_path"},
    }}}))
    with Charter(tmp_path / "c.db", workspace=ws) as app:
        # the server marks these destructive: they are writes without any declaration
        assert app.registry.get("git.git_commit").effect == "write"  # type: ignore[union-attr]
        assert app.registry.get("git.git_status").effect == "read"  # type: ignore[union-attr]
        report = app.run_sync({"goal": "commit the notes", "steps": [
            {"id": "add", "tool": "git.git_add", "args": {"repo_path": str(repo), "files": ["notes.md"]}},
            {"id": "commit", "tool": "git.git_commit", "needs": ["add"],
             "args": {"repo_path": str(repo), "message": "Add notes"}},
            {"id": "log", "tool": "git.git_log", "needs": ["commit"], "args": {"repo_path": str(repo)}},
        ]})
        assert report.status == "succeeded", report.reason
        log = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True).stdout
        assert log.split() == ["Add", "notes"]
        effects = asyncio.run(app.effects(report.id))
        assert [(e.step_id, e.tool, e.target) for e in effects] == [
            ("add", "git.git_add", [str(repo)]), ("commit", "git.git_commit", [str(repo)])]
        assert effects[1].key == f"{report.id}/commit"


def test_allowlist_per_server_hides_the_rest(tmp_path: Path, repo: Path) -> None:
    ws = load_workspace(write_workspace(tmp_path, {"mcp": {"git": {
        "command": [sys.executable, "-m", "mcp_server_git", "--repository", str(repo)],
        "allow": ["git_status", "git_log"],
    }}}))
    with Charter(tmp_path / "c.db", workspace=ws) as app:
        assert sorted(t.name for t in app.registry) == ["git.git_log", "git.git_status"]
        with pytest.raises(PlanError, match=r"unknown tool 'git\.git_commit'"):
            asyncio.run(app.load_plan({"goal": "g", "steps": [{"id": "c", "tool": "git.git_commit", "args": {}}]}))


def test_an_allowlist_naming_a_tool_the_server_lacks_is_a_config_error(tmp_path: Path) -> None:
    ws = load_workspace(write_workspace(tmp_path, {"mcp": {"time": {"command": TIME, "allow": ["get_weather"]}}}))
    with Charter(tmp_path / "c.db", workspace=ws) as app, pytest.raises(ConfigError, match="no tools named get_weather"):
        app.registry.get("time.get_current_time")


@tool
def plain() -> str:
    return "no server needed"


def test_servers_start_lazily_restart_after_dying_and_stop_at_close(tmp_path: Path) -> None:
    ws = load_workspace(write_workspace(tmp_path, {"mcp": {"time": {"command": TIME}}}))
    server = ws.servers()["time"]
    with Charter(tmp_path / "c.db", tools=[plain], workspace=ws) as app:
        report = app.run_sync({"goal": "no MCP here", "steps": [{"id": "a", "tool": "plain", "args": {}}]})
        assert report.status == "succeeded"
        assert server.starts == 0 and not children_running("mcp_server_time")

        tool = app.registry.get("time.get_current_time")
        assert tool is not None and server.starts == 1
        [pid] = children_running("mcp_server_time")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while children_running("mcp_server_time") and time.monotonic() < deadline:
            time.sleep(0.05)

        # a step whose server died is retried, and the retry starts the server again
        report = app.run_sync({"goal": "time", "steps": [
            {"id": "now", "tool": "time.get_current_time", "args": {"timezone": "UTC"},
             "retry": {"max_attempts": 3, "initial_interval": 0.01}}]})
        assert report.status == "succeeded", report.reason
        assert server.starts == 2
        assert len(children_running("mcp_server_time")) == 1
    assert children_running("mcp_server_time") == []


async def test_a_dead_server_makes_a_retryable_error_then_comes_back(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, load_workspace(write_workspace(tmp_path, {"mcp": {"time": {"command": TIME}}})).config)
    server = ws.servers()["time"]
    try:
        [tool] = [t for t in server.tools() if t.name == "time.get_current_time"]
        assert (await tool.invoke({"timezone": "UTC"}, CTX))["timezone"] == "UTC"
        [pid] = children_running("mcp_server_time")
        os.kill(pid, signal.SIGKILL)
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append((await tool.invoke({"timezone": "UTC"}, CTX))["timezone"])
            except RetryableError as exc:
                outcomes.append(type(exc).__name__)
        assert outcomes[-1] == "UTC" and set(outcomes) <= {"UTC", "RetryableError"}
        assert server.starts == 2
    finally:
        ws.close()
    assert children_running("mcp_server_time") == []


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    ws = load_workspace(write_workspace(tmp_path, {"mcp": {
        "broken": {"command": [sys.executable, "-c", "import sys; sys.stderr.write('no config here\\n'); sys.exit(3)"],
                   "start_timeout": 10},
        "missing": {"command": ["no-such-mcp-server-binary"]},
    }}))
    with Charter(tmp_path / "c.db", workspace=ws) as app:
        with pytest.raises(ConfigError) as err:
            app.registry.get("broken.anything")
        assert "MCP server 'broken'" in str(err.value) and "no config here" in str(err.value)
        with pytest.raises(ConfigError, match="MCP server 'missing' could not be started"):
            app.registry.get("missing.anything")


@pytest.mark.parametrize("config, message", [
    ({"mcp": {"x": {"command": ["a"], "url": "http://h/mcp"}}}, "either 'command'"),
    ({"mcp": {"x": {}}}, "either 'command'"),
    ({"mcp": {"bad name": {"command": ["a"]}}}, "use letters, digits"),
    ({"mcp": {"x": {"command": ["a"], "effects": {"t": "delete"}}}}, "mcp.x.effects.t"),
    ({"mcpp": {}}, "mcpp: unknown setting"),
])
def test_bad_workspace_files_get_specific_errors(tmp_path: Path, config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_workspace(write_workspace(tmp_path, config))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server() -> Iterator[tuple[str, str]]:
    port, token = free_port(), "tok-" + os.urandom(8).hex()
    proc = subprocess.Popen([sys.executable, str(HERE / "mcp_http_server.py"), str(port), token],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the MCP HTTP server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp", token
    finally:
        proc.terminate()
        proc.wait(10)


def test_streamable_http_server_with_a_secret_header(tmp_path: Path, http_server: tuple[str, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    url, token = http_server
    monkeypatch.setenv("NOTES_TOKEN", token)
    ws = load_workspace(write_workspace(tmp_path, {"mcp": {"notes": {
        "url": url, "headers": {"Authorization": "Bearer ${env:NOTES_TOKEN}"}, "effects": {"add_note": "write"},
    }}}))
    with Charter(tmp_path / "c.db", workspace=ws) as app:
        assert app.registry.get("notes.add_note").effect == "write"  # type: ignore[union-attr]
        report = app.run_sync({"goal": "notes", "steps": [
            {"id": "one", "tool": "notes.add_note", "args": {"text": "buy milk"}},
            {"id": "n", "tool": "notes.count_notes", "needs": ["one"], "args": {}},
        ]})
        assert report.status == "succeeded", report.reason
        assert report.step("one").output == {"count": 1}
        assert report.step("n").output == {"result": 1}  # the SDK wraps a non-object result
        shown = str(asyncio.run(app.store.events(report.id))) + str(asyncio.run(app.effects(report.id)))
        assert token not in shown


def test_streamable_http_server_refuses_a_wrong_token_clearly(tmp_path: Path, http_server: tuple[str, str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = http_server
    monkeypatch.setenv("NOTES_TOKEN", "wrong-token-value")
    ws = load_workspace(write_workspace(tmp_path, {"mcp": {"notes": {
        "url": url, "headers": {"Authorization": "Bearer ${env:NOTES_TOKEN}"}, "start_timeout": 10}}}))
    with Charter(tmp_path / "c.db", workspace=ws) as app, pytest.raises(ConfigError) as err:
        app.registry.get("notes.add_note")
    assert "MCP server 'notes'" in str(err.value)
    assert "wrong-token-value" not in str(err.value)


async def test_a_closed_server_starts_again_when_used_after_close(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, load_workspace(write_workspace(tmp_path, {"mcp": {"time": {"command": TIME}}})).config)
    server = ws.servers()["time"]
    try:
        [tool] = [t for t in server.tools() if t.name == "time.get_current_time"]
        await tool.invoke({"timezone": "UTC"}, CTX)
        ws.close()
        assert children_running("mcp_server_time") == []
        assert (await tool.invoke({"timezone": "Asia/Tokyo"}, CTX))["timezone"] == "Asia/Tokyo"
        assert server.starts == 2
    finally:
        ws.close()
    assert children_running("mcp_server_time") == []


# --- starting a server does not stall the event loop ------------------------------------


def gated_workspace(folder: Path, gate: Path) -> Path:
    """A workspace whose server ``gated`` starts only once ``gate`` exists."""
    return write_workspace(folder, {"mcp": {"gated": {
        "command": [sys.executable, str(HERE / GATED), str(gate)], "start_timeout": 20, "timeout": 10}}})


async def opening_the_gate(gate: Path, work: Awaitable[T]) -> T:
    """Do ``work`` while a task of this loop waits until the gated server is starting, then opens its gate.

    If starting the server blocked the loop, the task could not run: the gate
    would stay shut and the start would time out.
    """
    async def heartbeat() -> None:
        while not children_running(GATED):
            await asyncio.sleep(0.01)
        gate.touch()

    beat = asyncio.ensure_future(heartbeat())
    try:
        return await work
    finally:
        beat.cancel()


SAY_HI = {"goal": "say hi", "steps": [{"id": "say", "tool": "gated.echo", "args": {"text": "hi"}}]}


async def test_a_run_starts_its_server_while_the_loop_turns(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with Charter(tmp_path / "c.db", workspace=gated_workspace(tmp_path, gate)) as app:
        report = await opening_the_gate(gate, app.run(SAY_HI))
        assert report.status == "succeeded", report.reason
        assert report.step("say").output == {"result": "hi"}
        assert len(children_running(GATED)) == 1
    assert children_running(GATED) == []


async def test_a_resumed_run_starts_the_server_it_recorded_while_the_loop_turns(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    with Charter(tmp_path / "c.db", workspace=gated_workspace(tmp_path, gate)) as first:
        run_id = await first.start(SAY_HI)
        assert await first.pause(run_id) == "done"  # held here, not running: paused at once
        await first.engine().run_until_settled()
        assert (await first.report(run_id)).status == "paused"
    assert children_running(GATED) == []
    gate.unlink()
    with Charter(tmp_path / "c.db") as second:  # no tools given: the run loads the workspace it recorded
        report = await opening_the_gate(gate, second.resume(run_id))
        assert report.status == "succeeded", report.reason
        assert report.step("say").output == {"result": "hi"}
    assert children_running(GATED) == []


async def test_planning_starts_every_server_for_the_catalog_while_the_loop_turns(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    model = ScriptedModel([SAY_HI])
    with Charter(tmp_path / "c.db", workspace=gated_workspace(tmp_path, gate), model=model) as app:
        result = await opening_the_gate(gate, app.plan("say hi"))
        assert [s.tool for s in result.plan.steps] == ["gated.echo"]
        assert "gated.echo" in model.requests[0].messages[0].content  # the catalog showed the server's tool
    assert children_running(GATED) == []


async def test_looking_up_an_unstarted_servers_tool_on_the_loop_refuses_to_block_it(tmp_path: Path) -> None:
    ws = load_workspace(write_workspace(tmp_path, {"mcp": {"time": {"command": TIME}}}))
    registry = ws.registry()
    try:
        assert registry.unstarted == ["time"]
        with pytest.raises(RuntimeError, match=r"await registry\.start"):
            registry.get("time.get_current_time")
        assert ws.servers()["time"].starts == 0 and not children_running("mcp_server_time")
        await registry.start(["time.get_current_time"])
        assert registry.unstarted == []
        tool = registry.get("time.get_current_time")
        assert tool is not None and (await tool.invoke({"timezone": "UTC"}, CTX))["timezone"] == "UTC"
    finally:
        registry.close()
    assert children_running("mcp_server_time") == []


async def test_servers_start_at_once_and_only_those_named(tmp_path: Path) -> None:
    gates = [tmp_path / "gate-a", tmp_path / "gate-b"]
    ws = load_workspace(write_workspace(tmp_path, {"mcp": {
        name: {"command": [sys.executable, str(HERE / GATED), str(gate)], "start_timeout": 20, "timeout": 10}
        for name, gate in zip(["a", "b", "c"], [*gates, tmp_path / "gate-c"], strict=True)}}))
    registry = ws.registry()

    async def open_when_both_start() -> None:  # neither start waits for the other
        while len(children_running(GATED)) < 2:
            await asyncio.sleep(0.01)
        for gate in gates:
            gate.touch()

    try:
        opener = asyncio.ensure_future(open_when_both_start())
        await registry.start(["a.echo", "b.echo"])
        await opener
        assert registry.unstarted == ["c"]
        assert registry.get("a.echo") is not None and registry.get("b.echo") is not None
    finally:
        registry.close()
    assert children_running(GATED) == []
