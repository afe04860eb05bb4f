"""Tools for the agent, llm and approval chaos tests; the tests copy this file next to their store.

The moment a tool's body starts, it appends one line to ``executions.log`` (pid,
tool, run, step, attempt, idempotency key, arguments), in one write(2) on an
O_APPEND file, so a line is there whole or not at all even if the process is
killed. The ``write`` tools apply their effect at most once per idempotency key,
checking ``effects.log`` before acting, the way a mail tool checks a Message-ID.
Every output is a pure function of the arguments, so a test can compute what an
uninterrupted run returns.
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
GATE = HERE / "gate"  # while this file exists, `crunch` keeps working


def fact(topic: str) -> str:
    return hashlib.sha256(f"fact|{topic}".encode()).hexdigest()[:12]


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _executed(name: str, ctx: ToolContext, **args: Any) -> None:
    _append(EXECUTIONS, json.dumps({
        "pid": os.getpid(), "tool": name, "run": ctx.run_id, "step": ctx.step_id, "attempt": ctx.attempt,
        "key": ctx.idempotency_key, "args": args,
    }))


def _effect_once(key: str) -> None:
    done = EFFECTS.read_text(encoding="utf-8").splitlines() if EFFECTS.exists() else []
    if key not in done:
        _append(EFFECTS, key)


@tool
async def lookup(topic: str, ms: int, ctx: ToolContext) -> dict[str, str]:
    """Look a topic up (takes ``ms`` milliseconds)."""
    _executed("lookup", ctx, topic=topic, ms=ms)
    await asyncio.sleep(ms / 1000)
    return {"topic": topic, "fact": fact(topic)}


@tool(effect="write")
def note(text: str, ms: int, ctx: ToolContext) -> str:
    """Write a note down, once per idempotency key (synchronous: it runs in a thread)."""
    _executed("note", ctx, text=text, ms=ms)
    time.sleep(ms / 1000)
    _effect_once(ctx.idempotency_key)
    return f"noted {text}"


@tool
async def fetch(ms: int, ctx: ToolContext) -> str:
    """Fetch the figures to be signed off (takes ``ms`` milliseconds)."""
    _executed("fetch", ctx, ms=ms)
    await asyncio.sleep(ms / 1000)
    return f"figures {fact('figures')}"


@tool
async def crunch(ctx: ToolContext) -> str:
    """Work while the file ``gate`` exists (at most a minute)."""
    _executed("crunch", ctx)
    deadline = time.monotonic() + 60
    while GATE.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return "crunched"


@tool(effect="write")
async def publish(text: str, ctx: ToolContext) -> str:
    """Publish the text, once per idempotency key."""
    _executed("publish", ctx, text=text)
    await asyncio.sleep(0.03)
    _effect_once(ctx.idempotency_key)
    return f"published {text}"


@tool
def record(label: str, score: float, ctx: ToolContext) -> str:
    """Keep the classification."""
    _executed("record", ctx, label=label, score=score)
    return f"{label}:{score}"
