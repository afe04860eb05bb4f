"""Tools for the SIGKILL chaos test; the test copies this file next to its store.

Every time a tool's body runs, it appends a line to ``executions.log`` (pid,
run, step, item, attempt, idempotency key). Every tool then has an effect that
it applies at most once per idempotency key, checking ``effects.log`` before
acting, the way a mail tool checks a Message-ID before sending.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from charter import ToolContext, tool

HERE = Path(__file__).resolve().parent
EXECUTIONS = HERE / "executions.log"
EFFECTS = HERE / "effects.log"


def digest(name: str, prev: Any) -> str:
    """A little real work: a chain of hashes over the step's name and its input."""
    data = f"{name}|{json.dumps(prev, sort_keys=True)}".encode()
    for _ in range(500):
        data = hashlib.sha256(data).digest()
    return data.hex()[:16]


def _append(path: Path, line: str) -> None:
    # One write(2) on an O_APPEND file: a line is in the file whole or not at all.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _executed(ctx: ToolContext) -> None:
    _append(EXECUTIONS, json.dumps({"pid": os.getpid(), "run": ctx.run_id, "step": ctx.step_id,
                                    "item": ctx.item, "attempt": ctx.attempt, "key": ctx.idempotency_key}))


def _effect_once(key: str) -> None:
    done = EFFECTS.read_text(encoding="utf-8").splitlines() if EFFECTS.exists() else []
    if key not in done:
        _append(EFFECTS, key)


@tool
def compute(name: str, ms: int, ctx: ToolContext, prev: Any = None) -> str:
    """Hash the input, take ``ms`` milliseconds, record the effect once."""
    _executed(ctx)
    out = digest(name, prev)
    time.sleep(ms / 1000)
    _effect_once(ctx.idempotency_key)
    return out


@tool
def listing(n: int, ctx: ToolContext, prev: Any = None) -> list[str]:
    """``n`` items derived from the input."""
    _executed(ctx)
    base = digest("listing", prev)
    _effect_once(ctx.idempotency_key)
    return [f"{base[:6]}-{i}" for i in range(n)]


@tool(effect="write")
async def publish(name: str, ms: int, ctx: ToolContext, prev: Any = None) -> str:
    """Publish once per idempotency key (a repeat with the same key changes nothing)."""
    _executed(ctx)
    await asyncio.sleep(ms / 1000)
    _effect_once(ctx.idempotency_key)
    return digest(name, prev)
