"""Tools for the notes example: gather meeting notes, pull out the action items, write a report.

Everything is plain code on local files; no network, no model.
"""

from __future__ import annotations

import re
from pathlib import Path

from charter import PermanentError, ToolContext, tool

ACTION = re.compile(r"^\s*(?:- \[ \]\s*|TODO:\s*|ACTION:\s*)(?P<text>.+?)\s*$")
OWNER = re.compile(r"^(?P<owner>[A-Z][a-z]+)(?::| to )\s*(?P<task>.+)$")


@tool
def list_notes(folder: str, pattern: str = "*.md") -> list[str]:
    """List the note files in a folder, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise PermanentError(f"no such folder: {folder}")
    return [str(p) for p in sorted(root.glob(pattern))]


@tool
def extract_actions(path: str) -> dict[str, object]:
    """Read one note and return its title and its open action items (owner and task)."""
    text = Path(path).read_text(encoding="utf-8")
    headings = [line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")]
    title = headings[0] if headings else Path(path).stem
    actions = []
    for line in text.splitlines():
        m = ACTION.match(line)
        if not m:
            continue
        item = m.group("text")
        who = OWNER.match(item)
        actions.append({"owner": who.group("owner") if who else "unassigned",
                        "task": who.group("task") if who else item})
    return {"note": Path(path).name, "title": title, "actions": actions}


@tool(effect="write")
def write_report(notes: list[dict[str, object]], path: str, ctx: ToolContext) -> dict[str, object]:
    """Write the action items, grouped by owner, to a Markdown file.

    A write tool: the idempotency key goes into the file, and a report already
    written under the same key is left alone, so a repeated attempt changes nothing.
    """
    target = Path(path)
    marker = f"<!-- charter:{ctx.idempotency_key} -->"
    if target.exists() and marker in target.read_text(encoding="utf-8"):
        return {"path": str(target), "written": False}
    by_owner: dict[str, list[str]] = {}
    for note in notes:
        for action in note["actions"]:  # type: ignore[union-attr]
            by_owner.setdefault(action["owner"], []).append(f"{action['task']} ({note['title']})")
    lines = ["# Open action items", ""]
    for owner in sorted(by_owner):
        lines.append(f"## {owner}")
        lines.extend(f"- [ ] {task}" for task in by_owner[owner])
        lines.append("")
    lines.append(marker)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(target)  # atomic: a crash leaves the old file or the new one, never half
    total = sum(len(v) for v in by_owner.values())
    return {"path": str(target), "written": True, "actions": total, "owners": sorted(by_owner)}
