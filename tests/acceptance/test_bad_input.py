"""Every command, given a user's mistake, says what is wrong in a line and exits 2: never a traceback.

The commands are read from the Typer app, so a new command is covered as soon
as it exists. Each gets the mistakes that fit its parameters (chosen by their
names): a store path that is missing, a folder, garbage or another program's
database; an unknown run or step; a plan file that is missing, a folder or
garbage; a tools file that does not exist; a folder that cannot be written.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import typer.main

from charter.cli import app

from .helpers import Workspace


def _commands() -> dict[str, Any]:
    """Every command by the words that call it (a group's commands too: ``db upgrade``)."""
    out = {}
    for name, cmd in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        for sub, subcmd in getattr(cmd, "commands", {name: cmd}).items():
            out[name if sub == name else f"{name} {sub}"] = subcmd
    return out


COMMANDS = _commands()

# The commands that create a store when there is none: for every other one, a store path that does
# not exist is a mistake (a typo), and the command must not create a store there.
CREATES_STORE = {"run", "do", "db upgrade"}
# A mistake a command does not treat as one, and why.
EXPECTED: dict[tuple[str, str], int] = {}

SIMPLE = """\
goal: Add two numbers
steps:
  - id: sum
    tool: add
    args: {a: 1, b: 2}
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, str]]:
    """A workspace with a store holding one succeeded run, and the bad files the cases point at."""
    ws = Workspace(tmp_path_factory.mktemp("bad-input"))
    res = ws("run", ws.write("simple.yaml", SIMPLE), "--tools", ws.tools)
    assert res.rc == 0, res
    ws.write("garbage.db", "\x00not a database\x00" * 200)
    ws.write("garbage.yaml", "\x00\x01\x02 : : [ {")
    foreign = sqlite3.connect(ws.root / "foreign.db")
    foreign.execute("CREATE TABLE contacts (name TEXT)")
    foreign.commit()
    foreign.close()
    (ws.root / "not-a-demo").mkdir()
    ws.write("not-a-demo/thesis.tex", "years of work")
    try:
        yield ws, ws.only_run_id()
    finally:
        ws.stop_all()


def cases(name: str, ws: Workspace, run_id: str) -> dict[str, list[str]]:
    """The mistakes that fit command ``name``: label -> its arguments."""
    params = {p.name: p for p in COMMANDS[name].params}
    good: dict[str, list[str]] = {}  # parameter -> good tokens, so that each case has one mistake only
    for p in COMMANDS[name].params:
        if p.name == "run_id":
            good[p.name] = [run_id]
        elif p.name == "plan" and p.param_type_name == "argument":
            good[p.name] = [str(ws.root / "simple.yaml")]
        elif p.name == "request":
            good[p.name] = ["add one and two"]
        elif p.name in ("step", "from_step") and p.required:
            good[p.name] = ["sum"] if p.param_type_name == "argument" else [p.opts[0], "sum"]
        elif p.name == "tools":
            good[p.name] = ["--tools", str(ws.tools)]
        elif p.name == "db":
            good[p.name] = ["--db", ws.db]
        elif p.name == "older_than":
            good[p.name] = ["--older-than", "30d"]
        elif p.required:
            good[p.name] = ["x"] if p.param_type_name == "argument" else [p.opts[0], "x"]

    def with_(param: str, tokens: list[str]) -> list[str]:
        given = {**good, param: tokens}
        order = [p.name for p in COMMANDS[name].params if p.param_type_name == "argument"]
        args = [t for n in order for t in given.get(n, [])]
        return [*name.split(), *args, *(t for n, ts in given.items() if n not in order for t in ts)]

    out: dict[str, list[str]] = {}
    if "db" in params:
        out["db in a missing folder"] = with_("db", ["--db", str(ws.root / "nowhere" / "x.db")])
        out["db is a folder"] = with_("db", ["--db", str(ws.root)])
        out["db is garbage"] = with_("db", ["--db", str(ws.root / "garbage.db")])
        out["db is another program's database"] = with_("db", ["--db", str(ws.root / "foreign.db")])
        if name not in CREATES_STORE:
            out["db is a typo"] = with_("db", ["--db", str(ws.root / "typo.db")])
    if "run_id" in params:
        out["unknown run"] = with_("run_id", ["feedc0ffee00"])
    if "step" in params or "from_step" in params:
        key = "step" if "step" in params else "from_step"
        p = params[key]
        out["unknown step"] = with_(key, ["nosuchstep"] if p.param_type_name == "argument"
                                    else [p.opts[0], "nosuchstep"])
    if "plan" in params:
        p = params["plan"]
        flag = [] if p.param_type_name == "argument" else [p.opts[0]]
        out["plan missing"] = with_("plan", [*flag, str(ws.root / "nowhere.yaml")])
        out["plan is a folder"] = with_("plan", [*flag, str(ws.root)])
        out["plan is garbage"] = with_("plan", [*flag, str(ws.root / "garbage.yaml")])
    if "tools" in params:
        out["tools file missing"] = with_("tools", ["--tools", str(ws.root / "nowhere.py")])
    if "inputs" in params:
        out["input without a value"] = with_("inputs", ["--input", "novalue"])
    if "folder" in params:  # demo --dir
        out["folder under a file"] = with_("folder", ["--dir", str(ws.tools / "demo")])
        out["folder holds other files"] = with_("folder", ["--dir", str(ws.root / "not-a-demo")])
    if "save" in params:
        out["save under a file"] = with_("save", ["--save", str(ws.tools / "plan.yaml")])
    if "older_than" in params:
        out["age without a unit"] = with_("older_than", ["--older-than", "30"])
        out["age that is negative"] = with_("older_than", ["--older-than", "-3d"])
    if "since" in params:
        out["since is no age"] = with_("since", ["--since", "yesterday"])
    if "status" in params:
        out["status unknown"] = with_("status", ["--status", "done"])
    return out


def test_every_command_is_covered() -> None:
    ws = Workspace.__new__(Workspace)
    ws.root, ws.db, ws.tools = Path("/w"), "/w/charter.db", Path("/w/tools.py")
    uncovered = [name for name in COMMANDS if not cases(name, ws, "r")]
    assert uncovered == [], f"commands no mistake is tried on: {uncovered}; add the mistakes their inputs allow"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_mistake_is_one_clear_error(shop: tuple[Workspace, str], command: str) -> None:
    ws, run_id = shop
    tried = cases(command, ws, run_id)
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(tried, pool.map(lambda args: ws(*args, db=False), tried.values()), strict=True))
    wrong = []
    for label, res in results.items():
        expected = EXPECTED.get((command, label), 2)
        said = res.err.strip()
        if res.rc != expected or "Traceback" in res.out + res.err or (expected == 2 and "error" not in said):
            wrong.append(f"charter {' '.join(tried[label])}  [{label}]: expected exit {expected}\n{res}")
    assert not wrong, "\n\n".join(wrong)
    assert not (ws.root / "typo.db").exists(), "a command created a store at a mistyped path"
    assert (ws.root / "not-a-demo" / "thesis.tex").exists(), "the demo deleted a folder that was not its own"


def test_the_demo_starts_again_in_its_own_folder_and_leaves_any_other_alone(ws: Workspace) -> None:
    demo = ws.root / "demo"
    for _ in range(2):  # the second time, the first demo's folder is replaced
        res = ws("demo", "--dir", demo, timeout=120)
        assert res.rc == 0, res
    assert len(json.loads(ws("runs", "--db", demo / "charter.db", "--json", db=False).out)) == 1

    mine = ws.root / "mine"
    mine.mkdir()
    ws.write("mine/notes.md", "my own notes")
    refused = ws("demo", "--dir", mine)
    assert refused.rc == 2 and "holds files that are not the demo's (notes.md)" in refused.err, refused
    assert (mine / "notes.md").read_text(encoding="utf-8") == "my own notes"

    ws.write("demo/notes/mine.md", "a note of mine, among the demo's")  # inside the demo's own folder
    refused = ws("demo", "--dir", demo)
    assert refused.rc == 2 and "(notes/mine.md)" in refused.err, refused
    assert (demo / "notes" / "mine.md").exists()
