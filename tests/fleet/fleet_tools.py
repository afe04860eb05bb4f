"""Tools for the fleet tests; the test copies this file into its own folder, which every worker reads.

Every execution of a tool's body appends a line to ``executions.log`` when it starts
and when it ends (pid, run, step, item, attempt, idempotency key). ``send`` is a
write that delivers at most once per idempotency key, checking ``sent.log`` first,
the way a mail tool checks a Message-ID.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from charter import ToolContext, tool

HERE = Path(__file__).resolve().parent
EXECUTIONS = HERE / "executions.log"
SENT = HERE / "sent.log"


def _append(path: Path, line: str) -> None:
    # One write(2) on an O_APPEND file: a line is in the file whole or not at all.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _log(ctx: ToolContext, what: str) -> None:
    _append(EXECUTIONS, json.dumps({"what": what, "pid": os.getpid(), "run": ctx.run_id, "step": ctx.step_id,
                                    "item": ctx.item, "attempt": ctx.attempt, "key": ctx.idempotency_key,
                                    "at": time.time()}))


@tool
def numbers(n: int, ctx: ToolContext) -> list[int]:
    _log(ctx, "start")
    _log(ctx, "end")
    return list(range(n))


@tool
def square(x: int, ms: int, ctx: ToolContext) -> int:
    """Take ``ms`` milliseconds, then square."""
    _log(ctx, "start")
    time.sleep(ms / 1000)
    _log(ctx, "end")
    return x * x


@tool(effect="write")
def send(text: str, ctx: ToolContext) -> str:
    """Deliver ``text`` once per idempotency key."""
    _log(ctx, "start")
    done = SENT.read_text(encoding="utf-8").splitlines() if SENT.exists() else []
    if not any(json.loads(line)["key"] == ctx.idempotency_key for line in done):
        _append(SENT, json.dumps({"key": ctx.idempotency_key, "run": ctx.run_id, "text": text}))
    _log(ctx, "end")
    return text
