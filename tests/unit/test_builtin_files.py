"""The built-in file tools: real files, confined to the workspace root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from charter import Charter, ToolContext, load_tools
from charter.builtins.files import list_files, read_file, search_files, write_file
from charter.errors import PermanentError

CTX = ToolContext("r", "s", None, 1, "r/s")


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ws"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.md").write_text("# A\nTODO: call Bo\n")
    (root / "notes" / "b.txt").write_text("nothing here\n")
    (root / "bin.dat").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "secret.txt").write_text("outside")
    monkeypatch.setenv("CHARTER_WORKSPACE", str(root))
    return root


async def test_read_list_search(ws: Path) -> None:
    assert await read_file.invoke({"path": "notes/a.md"}, CTX) == "# A\nTODO: call Bo\n"
    assert await list_files.invoke({"path": "notes"}, CTX) == ["notes/a.md", "notes/b.txt"]
    assert await list_files.invoke({"pattern": "*.md", "recursive": True}, CTX) == ["notes/a.md"]
    assert await search_files.invoke({"query": "todo"}, CTX) == [{"path": "notes/a.md", "line": 2, "text": "TODO: call Bo"}]
    with pytest.raises(PermanentError, match="not UTF-8"):
        await read_file.invoke({"path": "bin.dat"}, CTX)
    with pytest.raises(PermanentError, match="more than max_bytes=3"):
        await read_file.invoke({"path": "notes/a.md", "max_bytes": 3}, CTX)
    with pytest.raises(PermanentError, match="no such file"):
        await read_file.invoke({"path": "nope.md"}, CTX)


async def test_writing_the_same_content_again_changes_nothing(ws: Path) -> None:
    first = await write_file.invoke({"path": "out/report.md", "content": "hello"}, CTX)
    assert first == {"path": "out/report.md", "written": True, "bytes": 5}
    mtime = os.stat(ws / "out" / "report.md").st_mtime_ns
    again = await write_file.invoke({"path": "out/report.md", "content": "hello"}, CTX)
    assert again["written"] is False and os.stat(ws / "out" / "report.md").st_mtime_ns == mtime
    assert sorted(p.name for p in (ws / "out").iterdir()) == ["report.md"]  # no temporary file left


@pytest.mark.parametrize("path", ["../secret.txt", "notes/../../secret.txt", "/etc/passwd", "link_out", "dir_out/secret.txt"])
async def test_paths_that_lead_out_are_refused(ws: Path, path: str) -> None:
    (ws / "link_out").symlink_to(ws.parent / "secret.txt")
    (ws / "dir_out").symlink_to(ws.parent)
    with pytest.raises(PermanentError, match="outside the workspace"):
        await read_file.invoke({"path": path}, CTX)
    with pytest.raises(PermanentError, match="outside the workspace"):
        await write_file.invoke({"path": path, "content": "x"}, CTX)
    assert (ws.parent / "secret.txt").read_text() == "outside"
    assert "link_out" not in await list_files.invoke({}, CTX)  # a link leading out is not listed


async def test_the_module_loads_as_tools_and_runs_in_a_plan(ws: Path, tmp_path: Path) -> None:
    registry = load_tools(["charter.builtins.files"])
    assert registry.names() == ["list_files", "read_file", "search_files", "write_file"]
    assert registry.get("write_file").effect == "write"  # type: ignore[union-attr]
    app = Charter(tmp_path / "c.db", tools=registry)
    report = await app.run({"goal": "copy", "steps": [
        {"id": "read", "tool": "read_file", "args": {"path": "notes/a.md"}},
        {"id": "write", "tool": "write_file", "args": {"path": "copy.md", "content": "${read}"}},
    ]})
    assert report.status == "succeeded" and (ws / "copy.md").read_text() == "# A\nTODO: call Bo\n"
    bad = await app.run({"goal": "escape", "steps": [{"id": "r", "tool": "read_file", "args": {"path": "../secret.txt"}}]})
    assert bad.status == "failed" and len(bad.step("r").attempts) == 1


@pytest.mark.parametrize("path", [".git/hooks/pre-commit", "repo/.git/config", "repo/sub/../.git/HEAD"])
async def test_writing_into_a_git_folder_is_refused(ws: Path, path: str) -> None:
    # a hook written there would run as code at the next commit
    with pytest.raises(PermanentError, match=r"inside a \.git folder is refused"):
        await write_file.invoke({"path": path, "content": "#!/bin/sh\necho owned\n"}, CTX)
    assert not list(ws.rglob("pre-commit")) and not (ws / "repo").exists()


def test_email_recipients_and_copies_are_all_targets() -> None:
    from charter.builtins.email import send_email

    args = {"to": ["a@example.com"], "cc": ["b@other.test"], "subject": "s", "body": "b"}
    assert send_email.targets_of(args) == ["a@example.com", "b@other.test"]
