"""File tools confined to a workspace root.

The root is the workspace's (``root:`` in ``charter.yaml``; without a file,
``$CHARTER_WORKSPACE``, else the current directory). A path that
leads outside it (``..``, an absolute path elsewhere, a symlink pointing out)
is refused with a clear error before anything is read or written.

Load with ``--tools charter.builtins.files``.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

from ..errors import PermanentError
from ..tools import ToolContext, tool
from ..workspace import current

MAX_READ = 1_000_000


def workspace_root() -> Path:
    return current().root


def inside(path: str, root: Path | None = None) -> Path:
    """``path`` resolved (symlinks followed) under the workspace root, or a :class:`PermanentError`."""
    root = root or workspace_root()
    if "\x00" in path:
        raise PermanentError("a path cannot contain a NUL byte")
    target = (root / path).resolve()
    if target != root and not target.is_relative_to(root):
        raise PermanentError(f"{path!r} is outside the workspace {root}")
    return target


def _rel(p: Path, root: Path) -> str:
    return str(p.relative_to(root)) if p != root else "."


@tool
def read_file(path: str, max_bytes: int = MAX_READ) -> str:
    """Read a UTF-8 text file in the workspace (at most max_bytes)."""
    target = inside(path)
    if not target.is_file():
        raise PermanentError(f"no such file in the workspace: {path}")
    size = target.stat().st_size
    if size > max_bytes:
        raise PermanentError(f"{path} is {size} bytes, more than max_bytes={max_bytes}")
    try:
        return target.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PermanentError(f"{path} is not UTF-8 text") from None


@tool
def list_files(path: str = ".", pattern: str = "*", recursive: bool = False) -> list[str]:
    """List files in a workspace folder whose names match a glob pattern, sorted, relative to the workspace."""
    root = workspace_root()
    folder = inside(path, root)
    if not folder.is_dir():
        raise PermanentError(f"no such folder in the workspace: {path}")
    found = folder.rglob(pattern) if recursive else folder.glob(pattern)
    out = []
    for p in found:
        try:
            real = inside(_rel(p, root), root)  # a symlink leading out is not listed
        except PermanentError:
            continue
        if real.is_file():
            out.append(_rel(p, root))
    return sorted(out)


@tool
def search_files(query: str, path: str = ".", pattern: str = "*", max_results: int = 100) -> list[dict[str, Any]]:
    """Find lines containing a text in the workspace's files (case-insensitive): path, line number, line."""
    if not query:
        raise PermanentError("the query is empty")
    root = workspace_root()
    needle = query.lower()
    results: list[dict[str, Any]] = []
    for rel in list_files.fn(path, "*", True):
        if not fnmatch.fnmatch(Path(rel).name, pattern):
            continue
        try:
            text = (root / rel).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary or unreadable: not searched
        for n, line in enumerate(text.splitlines(), 1):
            if needle in line.lower():
                results.append({"path": rel, "line": n, "text": line.strip()[:500]})
                if len(results) >= max_results:
                    return results
    return results


@tool(effect="write", target="path")
def write_file(path: str, content: str, ctx: ToolContext) -> dict[str, Any]:
    """Write a UTF-8 text file in the workspace, atomically. Writing the same content again changes nothing."""
    root = workspace_root()
    target = inside(path, root)
    if ".git" in target.relative_to(root).parts:
        # a hook or config written there would run as code at the next git command
        raise PermanentError(f"{path}: writing inside a .git folder is refused")
    if target.is_dir():
        raise PermanentError(f"{path} is a folder")
    if target.exists() and target.read_bytes() == content.encode("utf-8"):
        return {"path": path, "written": False, "bytes": len(content.encode("utf-8"))}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{ctx.idempotency_key.replace('/', '_')}.tmp")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, target)
    return {"path": path, "written": True, "bytes": len(content.encode("utf-8"))}
