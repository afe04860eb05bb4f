"""Workers on a shared store: fleet runs executed step by step by any worker (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from charter import Charter

TOOLS = '''
import json, os, time
from charter import tool

SIDE = os.environ.get("FLEET_SIDE_FILE", "side.jsonl")

@tool
def numbers(n: int) -> list:
    return list(range(n))

@tool
def square(n: int) -> int:
    return n * n

@tool
def total(values: list) -> int:
    return sum(values)

@tool(effect="write")
def write(text: str) -> str:
    with open(SIDE, "a") as f:
        f.write(json.dumps({"text": text}) + "\\n")
    return text
'''


def plan(n: int) -> dict[str, Any]:
    return {
        "goal": "squares, summed, written",
        "steps": [
            {"id": "numbers", "tool": "numbers", "args": {"n": n}},
            {"id": "squares", "tool": "square", "for_each": "${numbers}", "args": {"n": "${item}"}},
            {"id": "sum", "tool": "total", "args": {"values": "${squares}"}},
            {"id": "note", "tool": "write", "args": {"text": "sum ${sum}"}},
        ],
    }


@pytest.fixture
def tools_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fleet_tools.py"
    path.write_text(TOOLS)
    monkeypatch.setenv("FLEET_SIDE_FILE", str(tmp_path / "side.jsonl"))
    return path


async def _until(predicate: Any, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_workers_run_a_submitted_fan_out(db_path: Any, tools_file: Path, tmp_path: Path) -> None:
    submitter = Charter(db_path, tools=[str(tools_file)])
    runs = [await submitter.submit(plan(6)) for _ in range(3)]
    assert {(await submitter.store.get_run(r)).status for r in runs} == {"running"}  # recorded, not run here
    apps = [Charter(db_path) for _ in range(2)]
    workers = [a.worker(concurrency=3, lease_seconds=5) for a in apps]
    tasks = [asyncio.ensure_future(w.run()) for w in workers]
    try:
        async def done() -> bool:
            return [(await submitter.store.get_run(r)).status for r in runs] == ["succeeded"] * len(runs)
        await _until(done)
        assert len(await submitter.workers()) == 2
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
    for r in runs:
        report = await submitter.report(r)
        assert report.output == "sum 55"
        started = [e for e in await submitter.store.events(r) if e.type == "StepStarted"]
        assert len(started) == 9  # each unit once: nothing ran twice
    side = [json.loads(line) for line in (tmp_path / "side.jsonl").read_text().splitlines()]
    assert side == [{"text": "sum 55"}] * 3
    assert await submitter.workers() == []  # a worker that stopped cleanly leaves the list
    for a in [submitter, *apps]:
        a.close()
