"""The built-in git tools against real repositories made with ``git init``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from charter import Charter, ToolContext, load_tools, workspace
from charter.builtins.git import (
    git_branches,
    git_commit,
    git_create_branch,
    git_diff,
    git_log,
    git_status,
)
from charter.errors import PermanentError, RetryableError
from charter.workspace import Workspace, WorkspaceConfig

CTX = ToolContext("run1", "step1", None, 1, "run1/step1")


def ctx(key: str) -> ToolContext:
    return ToolContext("run1", key, None, 1, key)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def make_repo(path: Path, identity: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    if identity:
        git(path, "config", "user.name", "Test")
        git(path, "config", "user.email", "test@example.com")
    return path


@pytest.fixture(autouse=True)
def clean_git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine's git configuration (signing, hooks, identity) must not leak into the tests.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_DIR", "EMAIL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "ws"
    root.mkdir()
    token = workspace.activate(Workspace(root, WorkspaceConfig.model_validate({})))
    yield root
    workspace._current.reset(token)


@pytest.fixture
def repo(ws: Path) -> Path:
    r = make_repo(ws / "proj")
    (r / "README.md").write_text("# Proj\n")
    git(r, "add", "README.md")
    git(r, "commit", "-q", "-m", "first")
    return r


async def test_status_diff_log_and_branches(repo: Path) -> None:
    (repo / "README.md").write_text("# Proj\nmore\n")
    (repo / "staged.txt").write_text("s\n")
    git(repo, "add", "staged.txt")
    (repo / "new file.txt").write_text("n\n")
    status = await git_status.invoke({"repo": "proj"}, CTX)
    assert status["branch"] == "main" and len(status["commit"]) == 40
    assert status["staged"] == [{"path": "staged.txt", "change": "added"}]
    assert status["unstaged"] == [{"path": "README.md", "change": "modified"}]
    assert status["untracked"] == ["new file.txt"]
    assert status["clean"] is False and status["truncated"] is False

    diff = await git_diff.invoke({"repo": "proj"}, CTX)
    assert "+more" in diff["diff"] and "staged.txt" not in diff["diff"] and diff["truncated"] is False
    cached = await git_diff.invoke({"repo": "proj", "staged": True}, CTX)
    assert "+s" in cached["diff"] and "README" not in cached["diff"]
    assert (await git_diff.invoke({"repo": "proj", "path": "staged.txt"}, CTX))["diff"] == ""
    cut = await git_diff.invoke({"repo": "proj", "max_bytes": 10}, CTX)
    assert cut == {"diff": diff["diff"][:10], "truncated": True}

    [entry] = await git_log.invoke({"repo": "proj"}, CTX)
    assert entry["subject"] == "first" and entry["author"] == "Test <test@example.com>"
    assert entry["commit"] == status["commit"] and entry["date"][:2] == "20"
    assert await git_log.invoke({"repo": "proj", "path": "staged.txt"}, CTX) == []

    git(repo, "branch", "feature")
    assert await git_branches.invoke({"repo": "proj"}, CTX) == {"current": "main", "branches": ["feature", "main"]}
    git(repo, "checkout", "-q", "--detach")
    assert (await git_branches.invoke({"repo": "proj"}, CTX))["current"] is None


async def test_status_shows_renames_and_conflicts(repo: Path) -> None:
    git(repo, "mv", "README.md", "READ ME.md")
    status = await git_status.invoke({"repo": "proj"}, CTX)
    assert status["staged"] == [{"path": "READ ME.md", "change": "renamed", "from": "README.md"}]
    git(repo, "commit", "-q", "-m", "rename")
    git(repo, "checkout", "-q", "-b", "side")
    (repo / "READ ME.md").write_text("side\n")
    git(repo, "commit", "-q", "-am", "side")
    git(repo, "checkout", "-q", "main")
    (repo / "READ ME.md").write_text("main\n")
    git(repo, "commit", "-q", "-am", "main")
    subprocess.run(["git", "merge", "-q", "side"], cwd=repo, capture_output=True)
    status = await git_status.invoke({"repo": "proj"}, CTX)
    assert status["conflicted"] == ["READ ME.md"] and status["clean"] is False


async def test_an_empty_repository(ws: Path) -> None:
    make_repo(ws)
    status = await git_status.invoke({}, CTX)
    assert status["branch"] == "main" and status["commit"] is None and status["clean"] is True
    assert await git_log.invoke({}, CTX) == []
    assert await git_branches.invoke({}, CTX) == {"current": "main", "branches": []}
    with pytest.raises(PermanentError, match="no commits yet"):
        await git_create_branch.invoke({"repo": ".", "name": "x"}, CTX)


async def test_commit_carries_the_key_and_a_repeat_commits_nothing(repo: Path) -> None:
    (repo / "a.txt").write_text("a\n")
    first = await git_commit.invoke({"repo": "proj", "message": "Add a\n\nSigned-off-by: T <t@x>"}, CTX)
    assert first["created"] is True and first["branch"] == "main"
    assert git(repo, "rev-parse", "HEAD").strip() == first["commit"]
    body = git(repo, "log", "-1", "--format=%B")
    assert body == "Add a\n\nSigned-off-by: T <t@x>\nCharter-Key: run1/step1\n\n"  # one trailer block

    (repo / "b.txt").write_text("b\n")  # new changes present: still the same step, so no second commit
    again = await git_commit.invoke({"repo": "proj", "message": "Add a"}, CTX)
    assert again == {"commit": first["commit"], "created": False, "branch": "main"}
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "2"
    assert "b.txt" in git(repo, "status", "--porcelain")  # not even staged

    git(repo, "checkout", "-q", "-b", "other", "HEAD~1")  # found on any branch, not only the current one
    elsewhere = await git_commit.invoke({"repo": "proj", "message": "Add a"}, CTX)
    assert elsewhere["commit"] == first["commit"] and elsewhere["created"] is False
    git(repo, "checkout", "-q", "main")

    other = await git_commit.invoke({"repo": "proj", "message": "Add b"}, ctx("run1/step10"))  # a key that extends
    assert other["created"] is True and other["commit"] != first["commit"]
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "3"
    nothing = await git_commit.invoke({"repo": "proj", "message": "again"}, ctx("run1/step11"))
    assert nothing == {"commit": None, "created": False, "branch": "main", "reason": "nothing to commit"}


async def test_commit_of_some_paths_leaves_the_rest(repo: Path) -> None:
    (repo / "docs").mkdir()
    (repo / "docs" / "x.md").write_text("x\n")
    (repo / "other.txt").write_text("o\n")
    (repo / "README.md").unlink()
    git(repo, "add", "other.txt")  # staged by someone else: not part of this commit
    done = await git_commit.invoke({"repo": "proj", "message": "Docs", "paths": ["docs", "README.md"]}, CTX)
    files = git(repo, "show", "--name-status", "--format=", done["commit"]).split("\n")
    assert sorted(f for f in files if f) == ["A\tdocs/x.md", "D\tREADME.md"]
    assert git(repo, "status", "--porcelain").strip() == "A  other.txt"
    with pytest.raises(PermanentError, match="did not match"):
        await git_commit.invoke({"repo": "proj", "message": "m", "paths": ["missing.txt"]}, ctx("k2"))
    with pytest.raises(PermanentError, match="Charter adds it"):
        await git_commit.invoke({"repo": "proj", "message": "m\n\nCharter-Key: forged"}, ctx("k3"))


async def test_a_default_identity_when_none_is_configured(ws: Path) -> None:
    r = make_repo(ws / "bare", identity=False)
    (r / "f").write_text("f\n")
    done = await git_commit.invoke({"repo": "bare", "message": "init"}, CTX)
    assert done["created"] is True
    assert git(r, "log", "-1", "--format=%an <%ae>").strip() == "Charter <charter@localhost>"


@pytest.mark.parametrize("where", ["..", "proj/../..", "/tmp", "link_out", "not_a_repo", "missing"])
async def test_repositories_outside_the_workspace_or_not_repositories_are_refused(
    repo: Path, ws: Path, tmp_path: Path, where: str
) -> None:
    outside = make_repo(tmp_path / "outside")
    (ws / "link_out").symlink_to(outside)
    (ws / "not_a_repo").mkdir()
    expected = {"not_a_repo": "is not a git repository", "missing": "no such folder"}.get(where, "outside the workspace")
    with pytest.raises(PermanentError, match=expected):
        await git_status.invoke({"repo": where}, CTX)
    with pytest.raises(PermanentError, match=expected):
        await git_commit.invoke({"repo": where, "message": "m"}, CTX)


async def test_a_workspace_inside_a_repository_does_not_reach_it(tmp_path: Path) -> None:
    outer = make_repo(tmp_path / "outer")
    (outer / "inner").mkdir()
    (outer / "x").write_text("x")
    token = workspace.activate(Workspace(outer / "inner"))
    try:
        with pytest.raises(PermanentError, match="not a git repository"):
            await git_commit.invoke({"repo": ".", "message": "m"}, CTX)
    finally:
        workspace._current.reset(token)
    assert git(outer, "status", "--porcelain").strip() == "?? x"


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "link_out", "sub/../../x"])
async def test_paths_outside_the_repository_are_refused(repo: Path, ws: Path, path: str) -> None:
    (ws / "outside.txt").write_text("o")
    (repo / "link_out").symlink_to(ws / "outside.txt")
    with pytest.raises(PermanentError, match="outside the repository"):
        await git_commit.invoke({"repo": "proj", "message": "m", "paths": [path]}, CTX)
    with pytest.raises(PermanentError, match="outside the repository"):
        await git_diff.invoke({"repo": "proj", "path": path}, CTX)
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "1"


async def test_create_branch_is_idempotent(repo: Path) -> None:
    made = await git_create_branch.invoke({"repo": "proj", "name": "feature/x"}, CTX)
    head = git(repo, "rev-parse", "HEAD").strip()
    assert made == {"branch": "feature/x", "commit": head, "created": True}
    assert git(repo, "branch", "--show-current").strip() == "main"  # not checked out
    assert (await git_create_branch.invoke({"repo": "proj", "name": "feature/x"}, CTX))["created"] is False
    # The same step again after the start moved: its own branch, so still done.
    (repo / "n").write_text("n")
    git(repo, "add", "n")
    git(repo, "commit", "-q", "-m", "second")
    again = await git_create_branch.invoke({"repo": "proj", "name": "feature/x"}, CTX)
    assert again == {"branch": "feature/x", "commit": head, "created": False}
    with pytest.raises(PermanentError, match="already exists"):  # another step's branch elsewhere
        await git_create_branch.invoke({"repo": "proj", "name": "feature/x"}, ctx("run1/other"))
    at_start = await git_create_branch.invoke({"repo": "proj", "name": "feature/x", "start": head}, ctx("run1/other"))
    assert at_start["created"] is False
    with pytest.raises(PermanentError, match="not a valid branch name"):
        await git_create_branch.invoke({"repo": "proj", "name": "bad..name"}, CTX)
    with pytest.raises(PermanentError, match="no commit 'nope'"):
        await git_create_branch.invoke({"repo": "proj", "name": "y", "start": "nope"}, CTX)


async def test_a_locked_index_is_retryable(repo: Path) -> None:
    (repo / ".git" / "index.lock").write_text("")
    (repo / "c.txt").write_text("c")
    with pytest.raises(RetryableError, match="locked by another git process") as info:
        await git_commit.invoke({"repo": "proj", "message": "c"}, CTX)
    assert info.value.next_retry_delay == 2.0
    assert (await git_status.invoke({"repo": "proj"}, CTX))["untracked"] == ["c.txt"]  # reads take no lock


async def test_the_module_loads_as_tools_and_commits_in_a_plan(repo: Path, tmp_path: Path) -> None:
    registry = load_tools(["charter.builtins.git"])
    assert registry.names() == ["git_branches", "git_commit", "git_create_branch", "git_diff", "git_log", "git_status"]
    assert registry.get("git_commit").effect == "write"  # type: ignore[union-attr]
    (repo / "p.txt").write_text("p")
    app = Charter(tmp_path / "c.db", tools=registry)
    try:
        report = await app.run({"goal": "commit", "steps": [
            {"id": "commit", "tool": "git_commit", "args": {"repo": "proj", "message": "From a plan"}},
        ]})
    finally:
        app.close()
    assert report.status == "succeeded"
    assert f"Charter-Key: {report.id}/commit" in git(repo, "log", "-1", "--format=%B")
