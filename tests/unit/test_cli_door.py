"""The CLI goes through the one door: it uses ``Charter`` and never reaches the engine or the store.

Read from the CLI's source (its syntax tree), so a shortcut fails here the day it
is written: no import from ``charter.engine`` or ``charter.store`` but the records
the CLI prints, no ``Charter.engine()`` nor ``Charter.store``, no private
attribute of another object, no ``time.sleep`` to wait for a run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import charter.cli

CLI = Path(charter.cli.__file__).parent
MODULES = sorted(CLI.glob("*.py"))

# What the CLI may take from below the facade: the records it prints and the pure functions
# that format them. Everything that acts goes through `Charter`.
ALLOWED = {
    "charter.engine.report": {"RunReport", "StepReport", "ModelCall", "preview"},
    "charter.engine.watchers": {"RunSnapshot"},
    "charter.store": {"RunRow", "EffectRow"},
}
BELOW = ("charter.engine", "charter.store")
# Attributes that lead around the facade: its engine, its store.
AROUND = {"engine", "store", "_engine", "_own_tools"}


def imported(module: Path, node: ast.ImportFrom) -> str:
    """The absolute name of the module ``node`` imports from."""
    if not node.level:
        return node.module or ""
    package = ["charter", "cli"]  # every module checked sits in charter/cli
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def mistakes(module: Path) -> list[str]:
    """Each shortcut in ``module``, as ``file:line: what``, in the order of the source."""
    tree = ast.parse(module.read_text(encoding="utf-8"), str(module))
    modules = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    found = []
    for node in sorted(ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))):
        where = f"{module.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.startswith(BELOW)]
        elif isinstance(node, ast.ImportFrom):
            source = imported(module, node)
            names = {a.name for a in node.names}
            if source.startswith(BELOW) and not names <= ALLOWED.get(source, set()):
                found.append(f"{where}: from {source} import {', '.join(sorted(names - ALLOWED.get(source, set())))}")
            if source in ("charter", "charter.engine", "charter.store") and names & {"engine", "store", "Engine"}:
                found.append(f"{where}: from {source} import {', '.join(sorted(names))}")
            if source in ("time", "asyncio") and "sleep" in names:
                found.append(f"{where}: from {source} import sleep")
        elif isinstance(node, ast.Attribute):
            base = node.value.id if isinstance(node.value, ast.Name) else None
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            if node.attr in AROUND or (private and base not in ("self", "cls", *modules)):  # os._exit is public
                found.append(f"{where}: .{node.attr}")
            if node.attr == "sleep" and base in ("time", "asyncio"):  # waiting for a run is Charter.wait's
                found.append(f"{where}: {base}.sleep")
    return found


def test_the_cli_is_all_here() -> None:
    assert {"__init__.py", "shared.py", "drive.py", "runs.py", "console.py"} <= {m.name for m in MODULES}


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_the_cli_uses_only_the_facade(module: Path) -> None:
    assert mistakes(module) == []


def test_the_check_finds_each_kind_of_shortcut(tmp_path: Path) -> None:
    shortcuts = tmp_path / "shortcuts.py"
    shortcuts.write_text(
        "import time\n"
        "from ..engine.core import Engine\n"
        "from ..store import RunRow, SQLStore\n"
        "from ..engine.report import RunReport\n"
        "def f(charter):\n"
        "    charter.engine().approve('r')\n"
        "    charter.store.get_run('r')\n"
        "    charter._own_tools()\n"
        "    time.sleep(1)\n",
        encoding="utf-8",
    )
    assert [m.split(": ", 1)[1] for m in mistakes(shortcuts)] == [
        "from charter.engine.core import Engine", "from charter.store import SQLStore",
        ".engine", ".store", "._own_tools", "time.sleep",
    ]


def test_every_module_of_the_cli_is_under_500_lines() -> None:
    long = {m.name: n for m in MODULES if (n := len(m.read_text(encoding="utf-8").splitlines())) > 500}
    assert long == {}
