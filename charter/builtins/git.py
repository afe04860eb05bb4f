"""Git tools for repositories inside the workspace root.

They drive the ``git`` command line, so they behave as git does on the machine,
hooks and configuration included. A repository must lie inside the workspace
root: a folder that leads out, or one that belongs to a repository above the
root, is refused. Paths given to ``git_diff``, ``git_log`` and ``git_commit``
are relative to the repository's top folder (as ``git_status`` reports them)
and must stay inside it.

The write tools make a repeat harmless with the step's idempotency key:
``git_commit`` writes it as a ``Charter-Key`` trailer and, before committing,
returns the commit that already carries it (on any branch); ``git_create_branch``
writes it into the new branch's reflog and treats a branch created with it as
done.

Load with ``--tools charter.builtins.git``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pydantic

from ..errors import PermanentError, RetryableError
from ..tools import ToolContext, tool
from ..workspace import current
from .files import inside

KEY_TRAILER = "Charter-Key"
MAX_DIFF = 200_000
MAX_ENTRIES = 1000  # per list in git_status: an unignored build folder must not flood the output
_MAX_STDERR = 1000
# Variables that would point git at another repository or index than the one asked for.
_REDIRECTS = frozenset({"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                        "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX"})
_CHANGES = {"M": "modified", "A": "added", "D": "deleted", "R": "renamed", "C": "copied", "T": "type changed"}


@dataclass(frozen=True)
class _Result:
    code: int
    out: bytes
    err: str
    truncated: bool = False

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", errors="replace")


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REDIRECTS}
    env.update(
        GIT_TERMINAL_PROMPT="0",  # never wait for a password nobody will type
        GIT_OPTIONAL_LOCKS="0",  # a read must not take index.lock from under a concurrent writer
        GIT_LITERAL_PATHSPECS="1",  # a path is a path, not a glob or ':(magic)'
        GIT_CEILING_DIRECTORIES=str(root.parent),  # never find a repository above the workspace
        LC_ALL="C",  # English messages, which _failure recognises
    )
    return env


async def _exec(cwd: Path, root: Path, args: Sequence[str], stdin: bytes | None, limit: int | None) -> _Result:
    pipe = asyncio.subprocess.PIPE
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", *args, cwd=cwd, env=_env(root),
            stdin=pipe if stdin is not None else asyncio.subprocess.DEVNULL, stdout=pipe, stderr=pipe,
        )
    except FileNotFoundError:
        raise PermanentError("git is not installed (no 'git' on PATH)") from None
    err_read: asyncio.Future[bytes] | None = None
    try:
        if limit is None:
            out, err = await proc.communicate(stdin)
            return _Result(await proc.wait(), out, err.decode("utf-8", errors="replace"))
        assert proc.stdout is not None and proc.stderr is not None
        err_read = asyncio.ensure_future(proc.stderr.read())
        try:
            out = await proc.stdout.readexactly(limit + 1)
        except asyncio.IncompleteReadError as exc:
            out = exc.partial
        truncated = len(out) > limit
        if truncated:
            proc.kill()  # only read commands are limited; stopping one mid-way changes nothing
        err = await err_read
        code = await proc.wait()
        # Killed by us, git did not fail: what was read is the answer.
        return _Result(0 if truncated else code, out[:limit], err.decode("utf-8", errors="replace"), truncated)
    except BaseException:
        if err_read is not None:
            err_read.cancel()
        if proc.returncode is None:
            proc.terminate()  # SIGTERM lets git remove its lock files; SIGKILL would leave index.lock behind
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
        raise


def _failure(args: Sequence[str], result: _Result) -> Exception:
    detail = result.err.strip() or f"exit code {result.code}"
    if len(detail) > _MAX_STDERR:
        detail = detail[:_MAX_STDERR] + " ..."
    if "index.lock" in detail or (".lock" in detail and "File exists" in detail):
        return RetryableError(
            f"git {args[0]}: the repository is locked by another git process; if none is running, "
            f"remove the lock file named here: {detail}",
            next_retry_delay=2.0,
        )
    return PermanentError(f"git {args[0]} failed: {detail}")


@dataclass(frozen=True)
class _Repo:
    top: Path  # the repository's top folder
    root: Path  # the workspace root

    async def run(
        self, *args: str, config: Sequence[str] = (), stdin: bytes | None = None,
        ok: tuple[int, ...] = (0,), limit: int | None = None,
    ) -> _Result:
        result = await _exec(self.top, self.root, [*config, *args], stdin, limit)
        if result.code not in ok:
            raise _failure(args, result)
        return result

    def pathspec(self, path: str) -> str:
        """``path`` relative to the top folder, or a :class:`PermanentError` if it leads out of the repository."""
        if "\x00" in path:
            raise PermanentError("a path cannot contain a NUL byte")
        # git reads ".." lexically while the file system follows links: both readings must stay inside.
        lexical = Path(os.path.normpath(self.top / path))
        for p in (lexical, (self.top / path).resolve()):
            if p != self.top and not p.is_relative_to(self.top):
                raise PermanentError(f"{path!r} is outside the repository {self.top}")
        return lexical.relative_to(self.top).as_posix()

    async def commit_of(self, rev: str) -> str | None:
        if rev.startswith("-"):
            raise PermanentError(f"{rev!r} is not a revision")
        found = await self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", ok=(0, 1, 128))
        return found.text.strip() if found.code == 0 else None

    async def branch(self) -> str | None:
        """The checked-out branch (it may have no commits yet), or None when HEAD is detached."""
        ref = (await self.run("symbolic-ref", "--quiet", "HEAD", ok=(0, 1))).text.strip()
        return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None

    async def commit_with_key(self, key: str) -> str | None:
        """A commit on any branch whose ``Charter-Key`` trailer is exactly ``key``."""
        fmt = f"--format=%H%x1f%(trailers:key={KEY_TRAILER},valueonly,separator=%x1f)%x1e"
        # --grep narrows fast; the trailer check is exact (key r/s1 must not match r/s10).
        grep = f"--grep={KEY_TRAILER}: {key}"
        log = await self.run("log", "--all", "--no-show-signature", "--fixed-strings", grep, fmt)
        for record in log.text.split("\x1e"):
            sha, *values = record.strip().split("\x1f")
            if key in (v.strip() for v in values):
                return sha
        return None

    async def identity(self) -> list[str]:
        """``-c`` options giving a default identity where git has none, so that commits work on clean machines."""
        config: list[str] = []
        for name, default in (("user.name", "Charter"), ("user.email", "charter@localhost")):
            if not (await self.run("config", "--get", name, ok=(0, 1))).text.strip():
                config += ["-c", f"{name}={default}"]
        return config


async def _open(repo: str) -> _Repo:
    root = current().root
    folder = inside(repo, root)
    if not folder.is_dir():
        raise PermanentError(f"no such folder in the workspace: {repo}")
    found = await _exec(folder, root, ["rev-parse", "--show-toplevel"], None, None)
    if found.code != 0:
        if "not a git repository" in found.err:
            raise PermanentError(f"{repo!r} is not a git repository (or is not inside one within the workspace {root})")
        raise _failure(["rev-parse"], found)
    top = Path(found.text.strip()).resolve()
    if top != root and not top.is_relative_to(root):
        raise PermanentError(f"{repo!r} belongs to the repository {top}, outside the workspace {root}")
    return _Repo(top, root)


def _parse_status(text: str) -> dict[str, Any]:
    """``git status --porcelain=v2 --branch -z`` as data."""
    status: dict[str, Any] = {"branch": None, "commit": None, "upstream": None, "ahead": 0, "behind": 0,
                              "staged": [], "unstaged": [], "untracked": [], "conflicted": []}
    entries = iter(text.split("\0"))
    for entry in entries:
        kind, _, rest = entry.partition(" ")
        if kind == "#":
            header, _, value = rest.partition(" ")
            if header == "branch.head":
                status["branch"] = None if value == "(detached)" else value
            elif header == "branch.oid":
                status["commit"] = None if value == "(initial)" else value
            elif header == "branch.upstream":
                status["upstream"] = value
            elif header == "branch.ab":
                ahead, behind = value.split()
                status["ahead"], status["behind"] = int(ahead), -int(behind)
        elif kind in ("1", "2"):
            fields = rest.split(" ", 8 if kind == "2" else 7)
            xy, path = fields[0], fields[-1]
            origin = next(entries, "") if kind == "2" else ""  # -z puts a rename's old path in its own entry
            for code, bucket in ((xy[0], "staged"), (xy[1], "unstaged")):
                if code != ".":
                    item = {"path": path, "change": _CHANGES.get(code, code)}
                    if origin and code in "RC":
                        item["from"] = origin
                    status[bucket].append(item)
        elif kind == "u":
            status["conflicted"].append(rest.split(" ", 9)[-1])
        elif kind == "?":
            status["untracked"].append(rest)
    lists = ("staged", "unstaged", "untracked", "conflicted")
    status["truncated"] = any(len(status[k]) > MAX_ENTRIES for k in lists)
    for k in lists:
        del status[k][MAX_ENTRIES:]
    status["clean"] = not any(status[k] for k in lists)
    return status


@tool
async def git_status(repo: str = ".") -> dict[str, Any]:
    """A repository's branch, commit, and staged, unstaged, untracked and conflicted files."""
    r = await _open(repo)
    result = await r.run("status", "--porcelain=v2", "--branch", "-z", "--untracked-files=normal")
    return _parse_status(result.text)


@tool
async def git_diff(
    repo: str = ".", staged: bool = False, path: str | None = None,
    max_bytes: Annotated[int, pydantic.Field(gt=0)] = MAX_DIFF,
) -> dict[str, Any]:
    """The diff of the unstaged changes (with staged, of what the next commit holds), optionally for one path."""
    r = await _open(repo)
    args = ["diff", "--no-color", "--no-ext-diff", *(["--cached"] if staged else [])]
    if path is not None:
        args += ["--", r.pathspec(path)]
    result = await r.run(*args, limit=max_bytes)
    return {"diff": result.text, "truncated": result.truncated}


@tool
async def git_log(
    repo: str = ".", max_count: Annotated[int, pydantic.Field(ge=1, le=1000)] = 20, path: str | None = None
) -> list[dict[str, str]]:
    """The latest commits of the current branch (optionally touching one path): commit, author, date, subject."""
    r = await _open(repo)
    if await r.commit_of("HEAD") is None:
        return []  # a branch without commits yet
    args = ["log", f"--max-count={max_count}", "--no-show-signature", "--format=%H%x1f%an <%ae>%x1f%aI%x1f%s%x1e"]
    if path is not None:
        args += ["--", r.pathspec(path)]
    records = (await r.run(*args)).text.split("\x1e")
    keys = ("commit", "author", "date", "subject")
    return [dict(zip(keys, rec.strip("\n").split("\x1f"), strict=True)) for rec in records if rec.strip()]


@tool
async def git_branches(repo: str = ".") -> dict[str, Any]:
    """The current branch (None when HEAD is detached) and the names of all local branches."""
    r = await _open(repo)
    refs = (await r.run("for-each-ref", "--format=%(refname)", "refs/heads/")).text.split()
    return {"current": await r.branch(), "branches": [ref.removeprefix("refs/heads/") for ref in refs]}


@tool(effect="write", target="repo")
async def git_create_branch(repo: str, name: str, ctx: ToolContext, start: str | None = None) -> dict[str, Any]:
    """Create a branch at start (default: HEAD) without checking it out; a branch already there is left alone."""
    r = await _open(repo)
    if name.startswith("-") or (await r.run("check-ref-format", f"refs/heads/{name}", ok=(0, 1))).code:
        raise PermanentError(f"{name!r} is not a valid branch name")
    target = await r.commit_of(start or "HEAD")
    if target is None:
        raise PermanentError(f"no commit {start!r} in the repository" if start else "the repository has no commits yet")
    ref = f"refs/heads/{name}"
    note = f"branch: created by Charter ({KEY_TRAILER}: {ctx.idempotency_key})"
    # The empty old value makes git create the branch only if it does not exist, atomically.
    made = await r.run("update-ref", "--create-reflog", "-m", note, ref, target, "", ok=(0, 1, 128))
    if made.code == 0:
        return {"branch": name, "commit": target, "created": True}
    existing = await r.commit_of(ref)
    if existing is None:
        raise _failure(["update-ref"], made)
    reflog = await r.run("reflog", "show", "--format=%gs", ref, "--", ok=(0, 128))
    lines = reflog.text.strip().splitlines()
    # A repeat of this step finds its own branch even if start has moved since.
    if existing == target or (lines and lines[-1] == note):
        return {"branch": name, "commit": existing, "created": False}
    raise PermanentError(f"branch {name!r} already exists at {existing[:12]}, not at {start or 'HEAD'} ({target[:12]})")


@tool(effect="write", target="repo")
async def git_commit(repo: str, message: str, ctx: ToolContext, paths: list[str] | None = None) -> dict[str, Any]:
    """Stage paths (default: all changes) and commit them with a Charter-Key trailer; a repeat returns that commit.

    With paths, only those paths are committed; other staged changes stay staged.
    When nothing changed, nothing is committed and commit is None.
    """
    r = await _open(repo)
    if not message.strip() or "\x00" in message:
        raise PermanentError("the commit message is empty or contains a NUL byte")
    if any(line.lower().startswith(f"{KEY_TRAILER.lower()}:") for line in message.splitlines()):
        raise PermanentError(f"the message must not carry a {KEY_TRAILER} line; Charter adds it")
    if paths is not None and not paths:
        raise PermanentError("paths is empty: list the paths to commit, or leave it out to commit all changes")
    specs = ["--", *(r.pathspec(p) for p in paths)] if paths is not None else []
    key = ctx.idempotency_key
    branch = await r.branch()
    done = await r.commit_with_key(key)
    if done is not None:
        return {"commit": done, "created": False, "branch": branch}
    await r.run("add", "--all", *specs)
    if (await r.run("diff", "--cached", "--quiet", *specs, ok=(0, 1))).code == 0:
        return {"commit": None, "created": False, "branch": branch, "reason": "nothing to commit"}
    # interpret-trailers joins an existing trailer block (Signed-off-by) instead of starting a paragraph.
    text = await r.run(
        "interpret-trailers", "--no-divider", "--where", "end", "--if-exists", "add", "--if-missing", "add",
        "--trailer", f"{KEY_TRAILER}: {key}", stdin=message.strip().encode() + b"\n",
    )
    only = ["--only", *specs] if specs else []
    identity = await r.identity()
    await r.run("commit", "--quiet", "--cleanup=whitespace", "--file=-", *only, config=identity, stdin=text.out)
    return {"commit": await r.commit_of("HEAD"), "created": True, "branch": branch}
