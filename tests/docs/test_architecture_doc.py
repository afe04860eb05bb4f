"""docs/architecture.md and the tree tell the same story: every module of the package is on the page,
and every path the page names exists."""

from __future__ import annotations

import re
from pathlib import Path

import charter

PACKAGE = Path(charter.__file__).parent
PAGE = PACKAGE.parent / "docs" / "architecture.md"


def test_the_page_names_every_module() -> None:
    text = PAGE.read_text(encoding="utf-8")
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        folder = f"charter/{rel.parent.as_posix()}/" if rel.parent != Path(".") else ""
        if rel.name == "__main__.py":
            continue
        named = f"{rel.as_posix()}`" in text or (folder and folder in text and (
            rel.name == "__init__.py" or f"`{rel.name}`" in text or f"`{rel.stem}`" in text))
        if not named:
            missing.append(rel.as_posix())
    assert missing == []


def test_every_path_on_the_page_exists() -> None:
    text = PAGE.read_text(encoding="utf-8")
    named = set(re.findall(r"`(charter/[\w/.]+)`", text)) | set(re.findall(r"`(tests/[\w/.]+)`", text))
    assert named, "the page names no path"
    gone = sorted(p for p in named if not (PACKAGE.parent / p.rstrip("/")).exists())
    assert gone == []
