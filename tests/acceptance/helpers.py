"""Helpers for driving the `charter` command in subprocesses.

Every test gets a :class:`Workspace` (the ``ws`` fixture): a folder under ``tmp_path`` holding the
store, the plans and a tools file (:data:`TOOLS`) whose tools log each call to
``calls.log`` there. Processes started in the background are stopped when the
test ends. Nothing waits a fixed time for a state: :func:`wait_until` polls
with a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Commands that take --db.
DB_COMMANDS = {"run", "resume", "retry", "rerun", "pause", "cancel", "runs", "show", "do", "approve", "reject",
               "watch", "worker", "workers", "prune", "replay", "ui"}

TOOLS = '''\
"""Tools for Charter's acceptance tests: each call is logged to calls.log beside this file."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from charter import PermanentError, RetryableError, ToolContext, tool

HERE = Path(__file__).resolve().parent


def _log(name: str, ctx: ToolContext) -> None:
    line = json.dumps({"name": name, "run": ctx.run_id, "step": ctx.step_id, "item": ctx.item,
                       "attempt": ctx.attempt, "key": ctx.idempotency_key, "pid": os.getpid()})
    with (HERE / "calls.log").open("a", encoding="utf-8") as f:
        f.write(line + "\\n")


@tool
def echo(name: str, ctx: ToolContext, value: Any = None) -> Any:
    """Return the name (and the value, if given)."""
    _log(name, ctx)
    return name if value is None else {"name": name, "value": value}


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def gated(name: str, ctx: ToolContext) -> str:
    """Fail for good unless the file fixed.flag exists."""
    _log(name, ctx)
    if not (HERE / "fixed.flag").exists():
        raise PermanentError(f"{name}: fixed.flag is missing")
    return name


@tool
def flaky(name: str, fails: int, ctx: ToolContext) -> str:
    """Fail with a retryable error on the first `fails` attempts."""
    _log(name, ctx)
    if ctx.attempt <= fails:
        raise RetryableError(f"{name}: transient failure {ctx.attempt}", next_retry_delay=0.05)
    return name


@tool
async def hold(name: str, ctx: ToolContext) -> str:
    """Wait while the file `gate` exists (at most a minute), then return the name."""
    _log(name, ctx)
    deadline = time.monotonic() + 60
    while (HERE / "gate").exists():
        if time.monotonic() > deadline:
            raise PermanentError("the gate never opened")
        await asyncio.sleep(0.02)
    return name


@tool
def block(name: str, ctx: ToolContext) -> str:
    """Like hold, but synchronous (so it runs in a worker thread); notes attempts that overlap."""
    _log(name, ctx)
    marker = HERE / f"inflight-{ctx.step_id}"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        mine = True
    except FileExistsError:
        mine = False
        with (HERE / "overlaps.log").open("a", encoding="utf-8") as f:
            f.write(f"{ctx.idempotency_key} attempt {ctx.attempt}\\n")
    try:
        deadline = time.monotonic() + 20
        while (HERE / "gate").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        if mine:
            marker.unlink()
    return name


@tool
def letters() -> list[str]:
    """Three letters to fan out over."""
    return ["x", "y", "z"]


@tool
def shout(letter: str, ctx: ToolContext) -> str:
    """Upper-case a letter; 'y' fails for good unless fixed.flag exists."""
    _log(letter, ctx)
    if letter == "y" and not (HERE / "fixed.flag").exists():
        raise PermanentError("y is broken")
    return letter.upper()


@tool
def concat(parts: list[str]) -> str:
    """Join strings."""
    return "".join(parts)


@tool(effect="write")
def write_file(path: str, text: str, ctx: ToolContext) -> dict[str, Any]:
    """Write text to a file, once per idempotency key."""
    _log(path, ctx)
    target = HERE / path
    marker = f"key={ctx.idempotency_key}"
    if target.exists() and marker in target.read_text(encoding="utf-8"):
        return {"written": False}
    target.write_text(f"{text}\\n{marker}\\n", encoding="utf-8")
    return {"written": True}
'''


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.rc}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


class Proc:
    """A `charter` process running in the background, its output going to files."""

    def __init__(self, popen: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.popen = popen
        self.out_path = out
        self.err_path = err

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float = 30) -> Result:
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"charter did not exit within {timeout}s\n{self.result()}") from None
        return Result(rc, *self.output())

    def output(self) -> tuple[str, str]:
        return (self.out_path.read_text(encoding="utf-8", errors="replace"),
                self.err_path.read_text(encoding="utf-8", errors="replace"))

    def result(self) -> Result:
        return Result(self.popen.returncode if self.popen.returncode is not None else -1, *self.output())

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def wait_until(predicate: Callable[[], T], timeout: float = 20, what: str = "a condition",
               interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARTER_")}
    env["COLUMNS"] = "250"  # wide enough that Rich wraps nothing we look for
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    return env


class Workspace:
    """A folder with a store and a tools file, and the `charter` command run inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        if os.environ.get("CHARTER_TEST_STORE") == "postgresql":
            from tests.pg import new_database

            self.db = new_database()
        else:
            self.db = str(root / "charter.db")
        self.tools = root / "tools.py"
        self.tools.write_text(TOOLS, encoding="utf-8")
        self.env = cli_env()
        self._procs: list[Proc] = []
        self._n = 0

    def _argv(self, args: tuple[str, ...], db: bool) -> list[str]:
        argv = [sys.executable, "-m", "charter", *map(str, args)]
        if db and args and args[0] in DB_COMMANDS:
            argv += ["--db", self.db]
        return argv

    def __call__(self, *args: Any, db: bool = True, timeout: float = 60, cwd: Path | None = None) -> Result:
        """Run `charter ARGS` (with this workspace's --db) in the workspace (or ``cwd``) and wait for it."""
        done = subprocess.run(self._argv(args, db), cwd=cwd or self.root, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        return Result(done.returncode, done.stdout, done.stderr)

    def start(self, *args: Any, db: bool = True) -> Proc:
        """Start `charter ARGS` in the background."""
        self._n += 1
        out, err = self.root / f"proc{self._n}.out", self.root / f"proc{self._n}.err"
        with out.open("wb") as fo, err.open("wb") as fe:
            popen = subprocess.Popen(self._argv(args, db), cwd=self.root, env=self.env,
                                     stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        proc = Proc(popen, out, err)
        self._procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self._procs:
            p.stop()

    # --- files -----------------------------------------------------------------------

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def calls(self, name: str | None = None, run: str | None = None) -> list[dict[str, Any]]:
        """The tool calls logged so far (optionally of one name, or one run)."""
        log = self.root / "calls.log"
        if not log.exists():
            return []
        rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]
        return [r for r in rows if (name is None or r["name"] == name) and (run is None or r["run"] == run)]

    # --- the store, through the CLI ----------------------------------------------------

    def runs(self) -> list[dict[str, Any]]:
        if "://" not in self.db and not Path(self.db).exists():  # `charter runs` creates no store
            return []
        res = self("runs", "--json")
        if res.rc == 2 and "has no Charter tables yet" in res.err:  # the same, on a server: nothing stored
            return []
        assert res.rc == 0, res
        return json.loads(res.out)

    def show(self, run_id: str) -> dict[str, Any]:
        res = self("show", run_id, "--json")
        assert res.rc == 0, res
        return json.loads(res.out)

    def status(self, run_id: str) -> str | None:
        for r in self.runs():
            if r["id"] == run_id:
                return r["status"]
        return None

    def only_run_id(self) -> str:
        runs = self.runs()
        assert len(runs) == 1, runs
        return runs[0]["id"]


def step(report: dict[str, Any], step_id: str) -> dict[str, Any]:
    """One step of a `charter show --json` report."""
    for s in report["steps"]:
        if s["id"] == step_id:
            return s
    raise KeyError(step_id)
