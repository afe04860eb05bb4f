"""The package's layering: no import circles between Charter's modules.

Imports are read from the source (``ast``), at module level and inside
functions alike: an import hidden in a function is still a dependency, only a
later one. A package's ``__init__`` importing its own submodules is not a
circle (a submodule importing its parent package is not counted, since Python
imports the parent first anyway), and ``from pkg import name`` counts as
importing the submodule ``pkg.name`` when there is one, else ``pkg`` itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import charter

PACKAGE = Path(charter.__file__).parent


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it."""
    me = module_name(root, path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name in a module: the module
                target = target.rpartition(".")[0]
            if target and target != me and not me.startswith(target + "."):
                found.add(target)
    return found


def import_circles(root: Path) -> list[list[str]]:
    """Groups of modules of the package at ``root`` that import each other, directly or not."""
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    graph = {m: sorted(imports_of(root, p, set(files))) for m, p in files.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components (depth: at most the modules)
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(group) > 1:
                circles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_charter_has_no_import_circles() -> None:
    assert import_circles(PACKAGE) == []


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_circle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    pkg = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\n",
        "pkg/b.py": "def later():\n    from .c import thing\n",
        "pkg/c.py": "from .a import x\n",
        "pkg/d.py": "from .a import x\n",
    })
    assert import_circles(pkg) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_a_circle_through_a_packages_init_is_found(tmp_path: Path) -> None:
    pkg = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/tools/__init__.py": "from .registry import Registry\n",
        "pkg/tools/registry.py": "import typing\nif typing.TYPE_CHECKING:\n    from ..workspace import Workspace\n",
        "pkg/workspace.py": "from .tools import Registry\n",
    })
    assert import_circles(pkg) == [["pkg.tools", "pkg.tools.registry", "pkg.workspace"]]


def test_a_package_importing_its_own_submodules_is_no_circle(tmp_path: Path) -> None:
    pkg = write_package(tmp_path, {
        "pkg/__init__.py": "from .tools import tool\nfrom . import tools\n",
        "pkg/tools/__init__.py": "from .tool import tool\nfrom .registry import Registry\n",
        "pkg/tools/tool.py": "from .. import errors\n",
        "pkg/tools/registry.py": "from .tool import tool\nfrom . import tool as t\n",
        "pkg/errors.py": "",
    })
    assert import_circles(pkg) == []


def test_no_module_of_the_package_is_over_500_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert long == {}


def test_the_rules_and_the_store_know_nothing_above_them() -> None:
    """The pure rules import only data and each other; the store imports neither the engine nor the
    interfaces (it is handed records, never the engine's state)."""
    files = {module_name(PACKAGE, p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    for name, path in files.items():
        deps = imports_of(PACKAGE, path, modules)
        if name.startswith("charter.store"):
            above = {d for d in deps if d.startswith(("charter.engine", "charter.app", "charter.reader",
                                                      "charter.cli", "charter.planning"))}
            assert above == set(), f"{name} imports {sorted(above)}"


# What the web interface may take from the package: the facade, the report types it shows, the
# events, the errors, and the workspace's redaction. Everything that acts goes through `Charter`.
WEB_ALLOWED = {
    "charter.app": None,  # any name: the facade
    "charter.errors": None,
    "charter.events": None,
    "charter.engine.report": {"Attempt", "ModelCall", "RunReport", "StepReport"},
    "charter.store": {"RunRow", "EffectRow"},  # the rows the facade returns, as types
    "charter.workspace": {"Workspace"},
    "charter.workspace.secrets": {"ENV_REF", "redact_data", "register"},
}


def web_shortcuts(path: Path, package: str = "charter.web") -> list[str]:
    """Each import of ``path`` (a module of charter/web) that reaches around the facade, and each use
    of the facade's engine or store."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith("charter") or base.startswith("charter.web"):
                continue
            names = {a.name for a in node.names}
            allowed = WEB_ALLOWED.get(base, set())
            if allowed is not None and not names <= allowed:
                found.append(f"{path.name}:{node.lineno}: from {base} import {', '.join(sorted(names - allowed))}")
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name.startswith("charter") and not a.name.startswith("charter.web")]
        elif isinstance(node, ast.Attribute) and node.attr in ("engine", "store", "_engine", "_own_tools"):
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return sorted(found, key=lambda m: int(m.split(":")[1]))  # in the order of the source


def test_the_web_goes_through_the_facade() -> None:
    web = sorted((PACKAGE / "web").glob("*.py"))
    assert {p.name for p in web} >= {"__init__.py", "server.py", "live.py", "actions.py", "safety.py"}
    assert [m for p in web for m in web_shortcuts(p)] == []


def test_the_web_check_finds_shortcuts(tmp_path: Path) -> None:
    shortcut = tmp_path / "shortcut.py"
    shortcut.write_text("from ..engine.core import Engine\nfrom ..store import SQLStore, RunRow\nimport charter.engine\n"
                        "from ..app import Charter\n\ndef f(app):\n    app.engine().control()\n    app.store.get_run('r')\n")
    assert [m.split(": ", 1)[1] for m in web_shortcuts(shortcut)] == [
        "from charter.engine.core import Engine", "from charter.store import SQLStore", "import charter.engine",
        ".engine", ".store"]
