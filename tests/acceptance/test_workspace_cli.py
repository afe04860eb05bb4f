"""Acceptance tests: the workspace file (``charter.yaml``) from the command line.

Each test works in its own folder (``ws``) and runs the real `charter` command
in a subprocess, its standard input closed (no terminal). Covered: which file
is used (``./charter.yaml``, ``--config``, ``$CHARTER_CONFIG``), MCP tools from
the file (and no server process left behind), a bad file refused before
anything is stored, secrets kept out of every output and out of the store, the
effect ledger, and ``charter do`` approving plans by the workspace policy.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.provider_server import ProviderServer, openai_reply, provider_server

from .helpers import Result, Workspace, step

TIME_SERVER = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]

GREET_TOOLS = '''\
"""Tools of the folder's own charter.yaml."""

from charter import tool


@tool
def greet(name: str) -> str:
    """Say hello to someone."""
    return f"hello {name}"
'''

OTHER_TOOLS = '''\
"""Tools of another workspace file."""

from charter import tool


@tool
def farewell(name: str) -> str:
    """Say goodbye to someone."""
    return f"goodbye {name}"
'''

SECRET_TOOLS = '''\
"""A tool that uses a configured secret, then fails with it in its message."""

from charter import PermanentError, tool
from charter.workspace import current


@tool
def call_service(what: str) -> str:
    """Call a service with the key from the environment."""
    key = current().secret("${env:MY_SERVICE_KEY}", "my.key")
    raise PermanentError(f"denied for key {key}")
'''


def charter(ws: Workspace, *args: Any, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> Result:
    """Run `charter ARGS` as given (no --db added) in ``cwd`` (default: the workspace), stdin closed."""
    done = subprocess.run([sys.executable, "-m", "charter", *map(str, args)], cwd=cwd or ws.root,
                          env=ws.env if env is None else env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)
    return Result(done.returncode, done.stdout, done.stderr)


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "charter.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_plan(ws: Workspace, plan: dict[str, Any], name: str = "plan.yaml") -> Path:
    return ws.write(name, yaml.safe_dump(plan, sort_keys=False))


def tool_names(res: Result) -> list[str]:
    assert res.rc == 0, res
    return [t["name"] for t in json.loads(res.out)]


def runs(ws: Workspace, cwd: Path | None = None) -> list[dict[str, Any]]:
    res = charter(ws, "runs", "--json", cwd=cwd)
    assert res.rc == 0, res
    return json.loads(res.out)


def only_run(ws: Workspace, cwd: Path | None = None) -> str:
    found = runs(ws, cwd)
    assert len(found) == 1, found
    return str(found[0]["id"])


def store_files(folder: Path) -> list[Path]:
    """The store's files: charter.db and its -wal / -shm / -journal companions, if any."""
    return sorted(folder.glob("charter.db*"))


def processes_in(pattern: str, folder: Path) -> list[int]:
    """Live processes whose command line contains ``pattern`` and whose working folder is ``folder``."""
    want = folder.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue  # gone, a zombie, or not ours to look at
        if pattern in cmdline and cwd == want:
            found.append(int(entry.name))
    return found


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- which workspace file ------------------------------------------------------------


def test_charter_yaml_in_the_current_folder_gives_its_tools(ws: Workspace) -> None:
    ws.write("tools.py", GREET_TOOLS)
    write_config(ws.root, {"tools": ["tools.py", "charter.builtins.files"]})

    res = charter(ws, "tools")
    assert res.rc == 0, res
    assert "greet(name) read  Say hello to someone." in res.out
    assert "write_file(path, content) write" in res.out

    listed = {t["name"]: t["effect"] for t in json.loads(charter(ws, "tools", "--json").out)}
    assert listed == {"greet": "read", "read_file": "read", "list_files": "read", "search_files": "read",
                      "write_file": "write"}

    # without the file, nothing is listed
    (ws.root / "charter.yaml").unlink()
    assert tool_names(charter(ws, "tools", "--json")) == []


def test_config_option_and_env_var_choose_another_file(ws: Workspace) -> None:
    ws.write("tools.py", GREET_TOOLS)
    write_config(ws.root, {"tools": ["tools.py"]})
    other = ws.root / "other"
    write_config(other, {"tools": ["tools.py"]})  # relative to other/, not to the current folder
    (other / "tools.py").write_text(OTHER_TOOLS, encoding="utf-8")

    assert tool_names(charter(ws, "tools", "--json")) == ["greet"]
    assert tool_names(charter(ws, "--config", "other/charter.yaml", "tools", "--json")) == ["farewell"]
    assert tool_names(charter(ws, "tools", "--json", env={**ws.env, "CHARTER_CONFIG": "other/charter.yaml"})) \
        == ["farewell"]
    # the option wins over the variable
    env = {**ws.env, "CHARTER_CONFIG": "missing.yaml"}
    assert tool_names(charter(ws, "--config", str(other / "charter.yaml"), "tools", "--json", env=env)) \
        == ["farewell"]

    # and the chosen file's tools run
    write_plan(ws, {"goal": "bye", "steps": [{"id": "bye", "tool": "farewell", "args": {"name": "Ana"}}]})
    res = charter(ws, "--config", "other/charter.yaml", "run", "plan.yaml", "--json")
    assert res.rc == 0, res
    assert json.loads(res.out)["output"] == "goodbye Ana"


def test_a_config_file_that_does_not_exist_is_an_error(ws: Workspace) -> None:
    res = charter(ws, "--config", "nowhere/charter.yaml", "tools")
    assert res.rc == 2, res
    assert "workspace file not found: nowhere/charter.yaml" in res.err
    res = charter(ws, "tools", env={**ws.env, "CHARTER_CONFIG": "nowhere/charter.yaml"})
    assert res.rc == 2 and "workspace file not found: nowhere/charter.yaml" in res.err, res


def test_a_plan_where_a_tools_or_workspace_file_belongs_is_named_as_a_plan(ws: Workspace) -> None:
    plan = ws.write("plan.yaml", "goal: g\nsteps:\n  - {id: a, tool: echo, args: {name: a}}\n")
    res = charter(ws, "run", ws.tools, "-t", str(plan))  # the two swapped
    assert res.rc == 2 and "plan.yaml is a plan, not a workspace file (charter.yaml) or a tools file" in res.err, res
    assert "Traceback" not in res.err and ws.calls() == []


# --- MCP servers from the file ---------------------------------------------------------


def test_mcp_tools_are_listed_and_run_and_no_server_is_left_running(ws: Workspace) -> None:
    write_config(ws.root, {"mcp": {"time": {"command": TIME_SERVER}}})
    assert processes_in("mcp_server_time", ws.root) == []

    res = charter(ws, "tools", "--json")
    assert res.rc == 0, res
    listed = {t["name"]: t for t in json.loads(res.out)}
    assert listed["time.get_current_time"]["effect"] == "read"
    assert listed["time.get_current_time"]["required"] == ["timezone"]
    assert processes_in("mcp_server_time", ws.root) == []

    write_plan(ws, {"goal": "What time is it?", "steps": [
        {"id": "now", "tool": "time.get_current_time", "args": {"timezone": "Europe/Paris"}}]})
    res = charter(ws, "run", "plan.yaml", "--json")
    assert res.rc == 0, res
    assert processes_in("mcp_server_time", ws.root) == []
    shown = charter(ws, "show", json.loads(res.out)["id"], "--json")
    assert shown.rc == 0, shown
    report = json.loads(shown.out)
    assert report["status"] == "succeeded"
    now = step(report, "now")["output"]
    assert now["timezone"] == "Europe/Paris" and now["datetime"].endswith(("+01:00", "+02:00")), now
    assert report["output"] == now


# --- a bad workspace file ------------------------------------------------------------

BAD_FILES = {
    "unknown setting": ("tools: [tools.py]\ncolour: blue\n", ["invalid workspace file", "colour: unknown setting"]),
    "unknown nested setting": (
        "email: {host: smtp.example.com, from: a@example.com, pasword: x}\n",
        ["invalid workspace file", "email.pasword: unknown setting"],
    ),
    "command and url": (
        'mcp:\n  time: {command: [python, -m, mcp_server_time], url: "http://127.0.0.1:9/mcp"}\n',
        ["invalid workspace file", "mcp.time:", "give either 'command' (stdio) or 'url'", "not both"],
    ),
    "invalid YAML": ("tools: [tools.py\npolicy: {\n", ["is not valid YAML", "line 1"]),
    "bad policy": ("policy: {approve: sometimes}\n", ["policy.approve:", "'never', 'reads' or 'policy'"]),
}


@pytest.mark.parametrize("command", ["run", "tools"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_workspace_file_is_refused_and_nothing_is_stored(ws: Workspace, case: str, command: str) -> None:
    text, expected = BAD_FILES[case]
    ws.write("tools.py", GREET_TOOLS)
    config = ws.write("charter.yaml", text)
    write_plan(ws, {"goal": "hi", "steps": [{"id": "hi", "tool": "greet", "args": {"name": "Bo"}}]})

    res = charter(ws, *(["run", "plan.yaml"] if command == "run" else ["tools"]))
    assert res.rc == 2, res
    assert "Traceback" not in res.err, res
    assert str(config.resolve()) in res.err, res
    for words in expected:
        assert words in res.err, res
    assert store_files(ws.root) == []

    # the same through --config, named as given
    res = charter(ws, "--config", "charter.yaml", *(["run", "plan.yaml"] if command == "run" else ["tools"]))
    assert res.rc == 2, res
    assert "charter.yaml" in res.err and all(words in res.err for words in expected), res
    assert store_files(ws.root) == []


# --- secrets -------------------------------------------------------------------------


def secret_run(ws: Workspace) -> tuple[str, Result]:
    """A failed run of a tool that put a secret from the environment in its error; (the secret, the run)."""
    secret = f"sk-live-{uuid.uuid4().hex}"
    ws.env["MY_SERVICE_KEY"] = secret
    ws.write("tools.py", SECRET_TOOLS)
    write_config(ws.root, {"tools": ["tools.py"]})
    write_plan(ws, {"goal": "Call the service", "steps": [
        {"id": "call", "tool": "call_service", "args": {"what": "status"}}]})
    res = charter(ws, "run", "plan.yaml")
    assert res.rc == 1, res
    return secret, res


def test_a_secret_in_an_error_is_masked_in_show_runs_and_the_store(ws: Workspace) -> None:
    secret, run = secret_run(ws)
    run_id = only_run(ws)
    shown = charter(ws, "show", run_id)
    assert shown.rc == 0, shown
    assert "PermanentError: denied for key ***" in shown.out, shown  # the error is there, masked
    outputs = [shown, charter(ws, "show", run_id, "--events"), charter(ws, "show", run_id, "--json", "--events"),
               charter(ws, "runs", "--json"), charter(ws, "runs"), charter(ws, "effects", "--json")]
    for res in outputs:
        assert res.rc == 0, res
        assert secret not in res.out and secret not in res.err, res
    report = json.loads(outputs[2].out)
    assert step(report, "call")["error"]["message"] == "denied for key ***"
    assert report["status"] == "failed"
    files = store_files(ws.root)
    assert ws.root / "charter.db" in files
    for f in files:
        assert secret.encode() not in f.read_bytes(), f
    # the final summary `charter run` printed is masked too
    assert "denied for key ***" in run.out, run


def test_a_secret_in_an_error_is_masked_in_the_output_of_run(ws: Workspace) -> None:
    secret, run = secret_run(ws)
    assert secret not in run.out and secret not in run.err, run
    json_run = charter(ws, "run", "plan.yaml", "--json")  # progress goes to stderr
    assert json_run.rc == 1, json_run
    assert secret not in json_run.out and secret not in json_run.err, json_run


def test_a_secret_the_workspace_names_is_masked_even_when_a_tool_reads_it_itself(ws: Workspace) -> None:
    secret = f"sk-live-{uuid.uuid4().hex}"
    ws.env["MY_SERVICE_KEY"] = secret
    ws.write("tools.py", """import os
from charter import tool


@tool
def leak() -> dict:
    return {"key": os.environ["MY_SERVICE_KEY"]}
""")
    write_config(ws.root, {"tools": ["tools.py"], "slack": {"token": "${env:MY_SERVICE_KEY}"}})
    write_plan(ws, {"goal": "Leak", "steps": [{"id": "leak", "tool": "leak"}]})
    run = charter(ws, "run", "plan.yaml")
    assert run.rc == 0, run
    shown = charter(ws, "show", only_run(ws), "--json", "--events")
    assert shown.rc == 0 and '"key": "***"' in shown.out, shown
    for res in (run, shown):
        assert secret not in res.out and secret not in res.err, res
    for f in store_files(ws.root):
        assert secret.encode() not in f.read_bytes(), f


def test_a_secret_logged_by_a_process_that_did_not_know_it_is_masked_where_the_workspace_names_it(
        ws: Workspace) -> None:
    secret = f"sk-live-{uuid.uuid4().hex}"
    ws.env["MY_SERVICE_KEY"] = secret
    elsewhere = ws.root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "tools.py").write_text("""import os
from charter import tool


@tool
def leak() -> dict:
    return {"key": os.environ["MY_SERVICE_KEY"]}
""")
    (elsewhere / "plan.yaml").write_text("goal: Leak\nsteps:\n  - id: leak\n    tool: leak\n")
    db = str(ws.root / "shared.db")
    run = charter(ws, "run", "plan.yaml", "--tools", "tools.py", "--db", db, cwd=elsewhere)  # no workspace there
    assert run.rc == 0, run
    write_config(ws.root, {"slack": {"token": "${env:MY_SERVICE_KEY}"}})
    run_id = json.loads(charter(ws, "runs", "--json", "--db", db).out)[0]["id"]
    for args in (("show", run_id), ("show", run_id, "--json", "--events")):
        shown = charter(ws, *args, "--db", db)
        assert shown.rc == 0 and "***" in shown.out, shown
        assert secret not in shown.out and secret not in shown.err, shown


def test_the_smtp_password_is_never_shown_nor_stored(ws: Workspace) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    ws.env["SMTP_PASSWORD"] = password
    port = closed_port()
    write_config(ws.root, {
        "tools": ["charter.builtins.email"],
        "email": {"host": "127.0.0.1", "port": port, "from": "a@example.com", "username": "u",
                  "password": "${env:SMTP_PASSWORD}", "tls": "none", "timeout": 5},
    })
    write_plan(ws, {"goal": "Mail Bo", "steps": [
        {"id": "mail", "tool": "send_email", "retry": {"max_attempts": 1},
         "args": {"to": ["bo@example.com"], "subject": "Hello", "body": "Hi Bo"}}]})

    run = charter(ws, "run", "plan.yaml")
    assert run.rc == 1, run
    run_id = only_run(ws)
    report = json.loads(charter(ws, "show", run_id, "--json").out)
    mail = step(report, "mail")
    assert mail["status"] == "failed" and len(mail["attempts"]) == 1, mail
    assert f"cannot reach the SMTP server 127.0.0.1:{port}" in mail["error"]["message"], mail

    outputs = [run, charter(ws, "show", run_id), charter(ws, "show", run_id, "--json", "--events"),
               charter(ws, "runs", "--json"), charter(ws, "effects", "--json")]
    for res in outputs:
        assert password not in res.out and password not in res.err, res
    assert json.loads(outputs[-1].out) == []  # nothing was sent
    files = store_files(ws.root)
    assert files
    for f in files:
        assert password.encode() not in f.read_bytes(), f


# --- the effect ledger ------------------------------------------------------------------


def test_effects_lists_the_write_a_run_made(ws: Workspace) -> None:
    none = charter(ws, "effects")
    assert none.rc == 2 and "no store at charter.db" in none.err, none  # and it creates none

    project = ws.root / "project"
    write_config(project, {"tools": ["charter.builtins.files"]})
    write_plan(ws, {"goal": "Keep a note", "steps": [
        {"id": "read", "tool": "list_files", "args": {}},
        {"id": "save", "tool": "write_file", "args": {"path": "notes/x.md", "content": "hello\n"}}]})
    # run from the parent folder: the root is the folder of charter.yaml, not the current one
    res = charter(ws, "--config", "project/charter.yaml", "run", "plan.yaml")
    assert res.rc == 0, res
    assert (project / "notes" / "x.md").read_text(encoding="utf-8") == "hello\n"
    assert not (ws.root / "notes").exists()
    run_id = only_run(ws)

    listed = charter(ws, "effects", "--json")
    assert listed.rc == 0, listed
    [entry] = json.loads(listed.out)
    assert entry["run_id"] == run_id and entry["step_id"] == "save" and entry["tool"] == "write_file"
    assert entry["target"] == ["notes/x.md"] and entry["key"] == f"{run_id}/save"
    assert entry["result"]["written"] is True
    assert json.loads(charter(ws, "effects", run_id, "--json").out) == [entry]
    assert json.loads(charter(ws, "effects", run_id[:6], "--json").out) == [entry]

    table = charter(ws, "effects", run_id)
    assert table.rc == 0, table
    rows = [line.split() for line in table.out.splitlines() if run_id in line]
    assert len(rows) == 1, table
    assert ["save", "write_file", "notes/x.md", f"{run_id}/save"] == rows[0][3:7], table

    unknown = charter(ws, "effects", "ffffffffffff")
    assert unknown.rc == 2 and "no run 'ffffffffffff'" in unknown.err, unknown


# --- charter do and the workspace policy --------------------------------------------------

POLICY = {"approve": "policy", "allow": [{"tool": "write_file", "target": "notes/*"}]}


@pytest.fixture
def model(ws: Workspace) -> Iterator[ProviderServer]:
    """An OpenAI-compatible server on loopback, chosen through CHARTER_MODEL."""
    with provider_server() as server:
        ws.env.update({"CHARTER_MODEL": "compat:planner", "CHARTER_BASE_URL": server.url + "/v1"})
        yield server


def plan_writing(path: str) -> dict[str, Any]:
    return {"goal": "Write a file", "steps": [
        {"id": "save", "why": "keep it", "tool": "write_file", "args": {"path": path, "content": "hello\n"}}]}


def events(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    res = charter(ws, "show", run_id, "--json", "--events")
    assert res.rc == 0, res
    return json.loads(res.out)["events"]


def test_do_runs_a_plan_whose_writes_the_policy_allows(ws: Workspace, model: ProviderServer) -> None:
    config = write_config(ws.root, {"tools": ["charter.builtins.files"], "policy": POLICY})
    model.reply(openai_reply(json.dumps(plan_writing("notes/x.md"))))
    res = charter(ws, "do", "Write a note")
    assert res.rc == 0, res
    assert "approved by policy" in res.out and "waits for review" not in res.out, res
    assert (ws.root / "notes" / "x.md").read_text(encoding="utf-8") == "hello\n"
    run_id = only_run(ws)
    [approved] = [e for e in events(ws, run_id) if e["type"] == "PlanApproved"]
    assert approved["by"] == f"policy: {config.resolve()}"
    [entry] = json.loads(charter(ws, "effects", "--json").out)
    assert entry["target"] == ["notes/x.md"] and entry["run_id"] == run_id


@pytest.mark.parametrize("path", ["secrets/x.md", "notes/../secrets/x.md"])
def test_do_waits_for_review_when_the_policy_does_not_allow_a_write(
    ws: Workspace, model: ProviderServer, path: str,
) -> None:
    write_config(ws.root, {"tools": ["charter.builtins.files"], "policy": POLICY})
    model.reply(openai_reply(json.dumps(plan_writing(path))))
    res = charter(ws, "do", "Write a secret")
    assert res.rc == 3, res
    assert "waits for review" in res.out and "approved by policy" not in res.out, res
    assert not (ws.root / "secrets").exists()
    run_id = only_run(ws)
    assert runs(ws)[0]["status"] == "created"
    assert "PlanApproved" not in [e["type"] for e in events(ws, run_id)]
    assert json.loads(charter(ws, "effects", "--json").out) == []


def test_do_without_a_policy_waits_for_review(ws: Workspace, model: ProviderServer) -> None:
    write_config(ws.root, {"tools": ["charter.builtins.files"]})
    model.reply(openai_reply(json.dumps(plan_writing("notes/x.md"))))
    res = charter(ws, "do", "Write a note")
    assert res.rc == 3, res
    assert "waits for review" in res.out and "approved by policy" not in res.out, res
    assert not (ws.root / "notes").exists()
    assert runs(ws)[0]["status"] == "created"
    assert len(model.received) == 1
