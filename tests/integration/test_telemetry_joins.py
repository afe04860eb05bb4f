"""One run, one trace, whoever writes it: a run resumed by another app, and fleet workers, join the trace
the run was created with (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from charter import Charter
from charter.events import ApprovalRequested, RunCreated
from charter.telemetry import Tracer

TOOLS = '''
import asyncio, os
from charter import PermanentError, tool

SIDE = os.environ["OTEL_JOIN_SIDE"]

@tool
def numbers(n: int) -> list:
    return list(range(n))

@tool
async def held(i: int) -> int:
    open(SIDE + ".started." + str(i), "w").close()
    while not os.path.exists(SIDE + ".go"):
        await asyncio.sleep(0.01)
    return i

@tool
def total(values: list) -> int:
    return sum(values)

@tool
def once_down() -> str:
    if not os.path.exists(SIDE + ".up"):
        open(SIDE + ".up", "w").close()
        raise PermanentError("down this time")
    return "up"
'''


@pytest.fixture
def tools_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "join_tools.py"
    path.write_text(TOOLS)
    monkeypatch.setenv("OTEL_JOIN_SIDE", str(tmp_path / "side"))
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    return path


def traced(db: Any, exporter: InMemorySpanExporter, **kw: Any) -> Charter:
    return Charter(db, tracing=Tracer(exporter=exporter), **kw)


def finished(*exporters: InMemorySpanExporter) -> list[list[ReadableSpan]]:
    return [list(e.get_finished_spans()) for e in exporters]


def ids(created: RunCreated) -> tuple[int, int]:
    _, trace_id, root_id, _ = created.trace["traceparent"].split("-")
    return int(trace_id, 16), int(root_id, 16)


async def test_a_run_resumed_by_another_app_continues_its_trace(db_path: Any, tools_file: Path) -> None:
    plan = {"goal": "count, then ask", "steps": [
        {"id": "a", "tool": "numbers", "args": {"n": 3}},
        {"id": "gate", "approval": {"message": "go on?"}, "needs": ["a"]},
        {"id": "b", "tool": "total", "args": {"values": "${a}"}, "needs": ["gate"]},
    ]}
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    app = traced(db_path, first, tools=[str(tools_file)])
    run_id = await app.start(plan)
    await app.drive()
    assert (await app.report(run_id)).status == "awaiting"
    app.close()  # this "process" is gone; another one takes the decision and finishes the run
    later = traced(db_path, second)
    await later.approve(run_id, "gate")
    await later.drive()
    report = await later.report(run_id)
    later.close()
    assert report.status == "succeeded"
    trace_id, root_id = ids(next(e for e in report.events if isinstance(e, RunCreated)))
    before, after = finished(first, second)
    assert [s.name for s in before] == ["execute_tool numbers"]  # no root yet: the run had not ended
    assert sorted(s.name for s in after) == ["execute_tool total", "invoke_workflow count, then ask", "step gate"]
    assert {s.context.trace_id for s in before + after} == {trace_id}
    root = next(s for s in after if s.name.startswith("invoke_workflow"))
    assert root.context.span_id == root_id and root.parent is None
    assert all(s.parent.span_id == root_id for s in before + after if s is not root)
    asked = next(e for e in report.events if isinstance(e, ApprovalRequested))
    gate = next(s for s in after if s.name == "step gate")
    assert gate.start_time == int(asked.at * 1e9)  # asked in the first app, decided in the second
    created = next(e for e in report.events if isinstance(e, RunCreated))
    assert root.start_time == int(created.at * 1e9)


async def test_a_fleet_run_retried_by_a_person_sends_its_root_once(db_path: Any, tools_file: Path) -> None:
    plan = {"goal": "up at last", "steps": [{"id": "a", "tool": "once_down"}]}
    person_spans, worker_spans = InMemorySpanExporter(), InMemorySpanExporter()
    person = traced(db_path, person_spans, tools=[str(tools_file)])
    run_id = await person.submit(plan)
    app = traced(db_path, worker_spans)
    worker = app.worker(concurrency=1, lease_seconds=5)
    task = asyncio.ensure_future(worker.run())
    try:
        assert (await person.wait(run_id, timeout=60)).status == "failed"
        await person.start_retry(run_id, "a")  # the reopening is written here: the worker never sees it
        assert (await person.wait(run_id, timeout=60)).status == "succeeded"
    finally:
        worker.stop()
        await task
        app.close()
    report = await person.report(run_id)
    person.close()
    trace_id, root_id = ids(next(e for e in report.events if isinstance(e, RunCreated)))
    assert list(person_spans.get_finished_spans()) == []
    every = list(worker_spans.get_finished_spans())
    assert len({s.context.span_id for s in every}) == len(every) == 4  # no span id sent twice
    assert {s.context.trace_id for s in every} == {trace_id}
    root, again = sorted((s for s in every if s.name == "invoke_workflow up at last"), key=lambda s: s.start_time)
    assert root.context.span_id == root_id and root.attributes["charter.run.status"] == "failed"
    assert again.parent.span_id == root_id and again.attributes["charter.run.reopening"] == 1
    assert again.attributes["charter.run.status"] == "succeeded"
    first, retried = sorted((s for s in every if s.name == "execute_tool once_down"), key=lambda s: s.start_time)
    assert (first.parent.span_id, retried.parent.span_id) == (root_id, again.context.span_id)


async def _until(predicate: Any, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_two_workers_running_steps_of_one_run_join_its_trace(db_path: Any, tools_file: Path,
                                                                   tmp_path: Path) -> None:
    plan = {"goal": "numbers, held, summed", "steps": [
        {"id": "items", "tool": "numbers", "args": {"n": 2}},
        {"id": "hold", "tool": "held", "for_each": "${items}", "args": {"i": "${item}"}},
        {"id": "sum", "tool": "total", "args": {"values": "${hold}"}},
    ]}
    exporters = [InMemorySpanExporter() for _ in range(3)]
    submitter = traced(db_path, exporters[0], tools=[str(tools_file)])
    run_id = await submitter.submit(plan)
    apps = [traced(db_path, e) for e in exporters[1:]]
    workers = [a.worker(concurrency=1, lease_seconds=5) for a in apps]
    tasks = [asyncio.ensure_future(w.run()) for w in workers]
    try:
        # each worker runs one item at a time: both items held at once means one on each worker
        await _until(lambda: all((tmp_path / f"side.started.{i}").exists() for i in range(2)))
        (tmp_path / "side.go").touch()
        assert (await submitter.wait(run_id, timeout=60)).status == "succeeded"
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
        for a in apps:
            a.close()
    report = await submitter.report(run_id)
    submitter.close()
    trace_id, root_id = ids(next(e for e in report.events if isinstance(e, RunCreated)))
    mine, *theirs = finished(*exporters)
    assert mine == []  # submitting writes no span: the run's spans come from who runs it
    every = [s for spans in theirs for s in spans]
    assert {s.context.trace_id for s in every} == {trace_id}
    [root] = [s for s in every if s.name == "invoke_workflow numbers, held, summed"]
    assert root.context.span_id == root_id
    assert all(s.parent.span_id == root_id for s in every if s is not root)
    held = [[s for s in spans if s.name == "execute_tool held"] for spans in theirs]
    assert [len(h) for h in held] == [1, 1]  # one item on each worker, in one trace
    assert sorted(s.attributes["charter.step.item"] for h in held for s in h) == [0, 1]
    assert sorted(s.name for s in every) == sorted(["execute_tool numbers", "execute_tool held", "execute_tool held",
                                                   "execute_tool total", root.name])


async def test_a_fleet_run_cancelled_by_a_person_ends_its_trace(db_path: Any, tools_file: Path) -> None:
    plan = {"goal": "wait to be cancelled", "steps": [{"id": "gate", "approval": {"message": "go on?"}}]}
    submitted, cancelled = InMemorySpanExporter(), InMemorySpanExporter()
    app = traced(db_path, submitted, tools=[str(tools_file)])
    run_id = await app.submit(plan)
    app.close()
    person = traced(db_path, cancelled)  # no worker runs it: the person's process writes the end
    assert await person.cancel(run_id, "not needed") == "done"
    person.flush_watchers(10)
    report = await person.report(run_id)
    person.close()
    assert report.status == "cancelled"
    trace_id, root_id = ids(next(e for e in report.events if isinstance(e, RunCreated)))
    [root] = [s for s in cancelled.get_finished_spans() if s.name.startswith("invoke_workflow")]
    assert (root.context.trace_id, root.context.span_id) == (trace_id, root_id)
    assert root.attributes["charter.run.status"] == "cancelled"
