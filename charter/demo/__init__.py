"""`charter demo`: a complete run, offline, with the scripted model and real local tools.

No key and no network are needed. The model is charter.testing's scripted model,
and says so: it answers with a prepared plan, and writes the summary from the
action items it is given. Everything else is real: files are read and written,
steps run in parallel, a flaky step is retried, every transition is in the log.
"""

from __future__ import annotations

import json
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RetryableError
from ..models.base import ModelRequest
from ..models.scripted import ScriptedModel
from ..tools import Registry, ToolContext, tool

REQUEST = "Collect the open action items from our meeting notes, summarise them per person, and write a report."
ACTION = re.compile(r"^\s*(?:- \[ \]\s*|TODO:\s*|ACTION:\s*)(?P<text>.+?)\s*$")
OWNER = re.compile(r"^(?P<owner>[A-Z][a-z]+)(?::| to )\s*(?P<task>.+)$")


@tool
def list_notes(folder: str) -> list[str]:
    """List the Markdown notes in a folder."""
    return [str(p) for p in sorted(Path(folder).glob("*.md"))]


@tool
def extract_actions(path: str) -> dict[str, Any]:
    """Read one note; return its title and open action items (owner, task)."""
    text = Path(path).read_text(encoding="utf-8")
    headings = [line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")]
    actions = []
    for line in text.splitlines():
        m = ACTION.match(line)
        if m:
            who = OWNER.match(m.group("text"))
            actions.append({"owner": who.group("owner") if who else "unassigned",
                            "task": who.group("task") if who else m.group("text")})
    return {"note": Path(path).name, "title": headings[0] if headings else Path(path).stem, "actions": actions}


@tool
def team_directory(folder: str, ctx: ToolContext) -> dict[str, str]:
    """Look up the team's e-mail addresses. Simulates a flaky service: the first try always fails."""
    if ctx.attempt == 1:
        raise RetryableError("the directory service is busy (simulated on the first try)", next_retry_delay=0.5)
    people = json.loads((Path(folder) / "team.json").read_text(encoding="utf-8"))
    return dict(people)


@tool(effect="write")
def write_report(summary: str, notes: list[dict[str, Any]], team: dict[str, str], path: str,
                 ctx: ToolContext) -> dict[str, Any]:
    """Write the report. A write tool: a report already written under this idempotency key is left alone."""
    target = Path(path)
    marker = f"<!-- charter:{ctx.idempotency_key} -->"
    if target.exists() and marker in target.read_text(encoding="utf-8"):
        return {"path": str(target), "written": False}
    lines = ["# Open action items", "", summary, ""]
    for note in notes:
        for a in note["actions"]:
            contact = team.get(a["owner"], "")
            lines.append(f"- [ ] **{a['owner']}**{f' <{contact}>' if contact else ''}: {a['task']} ({note['title']})")
    lines += ["", marker, ""]
    tmp = target.with_suffix(".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(target)
    return {"path": str(target), "written": True, "actions": sum(len(n["actions"]) for n in notes)}


def registry() -> Registry:
    return Registry([list_notes, extract_actions, team_directory, write_report], sources=[__name__])


def demo_plan(folder: str, report: str) -> dict[str, Any]:
    """The plan the scripted model proposes for :data:`REQUEST`."""
    return {
        "goal": "Report the open action items of the meeting notes, per person",
        "assumptions": [
            f"The notes are the Markdown files in {folder}",
            "Open action items are lines like '- [ ] Name: task', 'TODO: ...' or 'ACTION: ...'",
            "team.json in the same folder maps people to e-mail addresses",
        ],
        "steps": [
            {"id": "find_notes", "title": "Find the notes", "why": "Every note may hold action items.",
             "tool": "list_notes", "args": {"folder": folder}},
            {"id": "extract", "title": "Extract action items", "why": "Notes are independent: read them in parallel.",
             "tool": "extract_actions", "for_each": "${find_notes}", "args": {"path": "${item}"}},
            {"id": "team", "title": "Look up the team", "why": "The report should say how to reach each owner.",
             "tool": "team_directory", "args": {"folder": folder}, "retry": {"max_attempts": 3}},
            {"id": "summarize", "title": "Summarise per person", "why": "A short paragraph reads faster than a list.",
             "llm": {"prompt": "Summarise these action items per person, in two sentences:\n${extract}"}},
            {"id": "report", "title": "Write the report", "why": "One file the team can read.",
             "tool": "write_report",
             "args": {"summary": "${summarize}", "notes": "${extract}", "team": "${team}", "path": report}},
        ],
    }


def summarise(request: ModelRequest) -> str:
    """The scripted model's summary, computed from the action items in the prompt."""
    prompt = request.messages[-1].content
    notes = json.loads(prompt.split("\n", 1)[1])
    counts: dict[str, int] = {}
    for note in notes:
        for a in note["actions"]:
            counts[a["owner"]] = counts.get(a["owner"], 0) + 1
    people = sorted((o for o in counts if o != "unassigned"), key=lambda o: (-counts[o], o))
    parts = [f"{o} has {counts[o]}" for o in people]
    text = f"{sum(counts.values())} open action items across {len(notes)} notes: " + ", ".join(parts) + "."
    if counts.get("unassigned"):
        text += f" {counts['unassigned']} have no owner yet."
    return text


def scripted_model(folder: str, report: str) -> ScriptedModel:
    return ScriptedModel([demo_plan(folder, report), summarise], name="demo")


def prepare(workdir: Path) -> tuple[Path, Path]:
    """Copy the demo notes into ``workdir/notes``; return (notes folder, report path)."""
    notes = workdir / "notes"
    notes.mkdir(parents=True, exist_ok=True)
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".md"):
            (notes / entry.name).write_text(entry.read_text(encoding="utf-8"), encoding="utf-8")
    team = {"Ana": "ana@example.com", "Bo": "bo@example.com", "Chidi": "chidi@example.com"}
    (notes / "team.json").write_text(json.dumps(team, indent=2), encoding="utf-8")
    return notes, workdir / "action-items.md"


#: what a demo folder holds: the only names :func:`reset` will delete
DEMO_FILES = frozenset({"notes", "charter.db", "charter.db-wal", "charter.db-shm", "action-items.md",
                        "action-items.tmp"})


def reset(workdir: Path) -> None:
    """Empty ``workdir`` of an earlier demo; a folder holding anything else is left alone and refused."""
    if not workdir.exists():
        return
    if not workdir.is_dir():
        raise ConfigError(f"cannot use {workdir} for the demo: it is a file, not a folder")
    others = sorted(p.name for p in workdir.iterdir() if p.name not in DEMO_FILES)
    notes = workdir / "notes"
    if notes.is_dir():  # the notes folder too holds only what the demo put there
        ours = {e.name for e in resources.files(__name__).iterdir() if e.name.endswith(".md")} | {"team.json"}
        others += sorted(f"notes/{p.name}" for p in notes.iterdir() if p.name not in ours or not p.is_file())
    if others:
        raise ConfigError(f"{workdir} holds files that are not the demo's ({', '.join(others[:3])}"
                          f"{', ...' if len(others) > 3 else ''}): give the demo an empty or new folder with --dir")
    shutil.rmtree(workdir)
