"""Regressions for bugs found in review: each failed before its fix."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from charter import Charter, ConfigError, PlanError, RetryPolicy, RunStateError, ToolContext, tool
from charter.plan import Plan, load_plan
from charter.testing import FakeClock


async def test_a_value_that_is_not_utf8_is_stored_and_read_back(db_path: Path) -> None:
    @tool
    def listing() -> list[str]:
        return ["caf\udce9.txt"]  # what os.listdir gives for a Latin-1 file name

    app = Charter(db_path, tools=[listing])
    report = await app.run({"goal": "g", "steps": [{"id": "ls", "tool": "listing"}]})
    assert report.status == "succeeded" and (await app.report(report.id)).output == ["caf\udce9.txt"]


async def test_a_timed_out_sync_tool_is_not_overlapped_by_its_retry(db_path: Path) -> None:
    active = 0
    most = 0
    lock = threading.Lock()

    @tool(effect="write", timeout=0.05, retry=RetryPolicy(max_attempts=3, initial_interval=0))
    def slow_send(ctx: ToolContext) -> str:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.2)
        with lock:
            active -= 1
        return "sent"

    report = await Charter(db_path, tools=[slow_send]).run({"goal": "g", "steps": [{"id": "s", "tool": "slow_send"}]})
    assert report.status == "failed" and len(report.step("s").attempts) == 3
    assert most == 1


async def test_a_run_whose_tools_are_missing_is_not_taken_over(db_path: Path) -> None:
    @tool
    def here() -> int:
        return 1

    app = Charter(db_path, tools=[here])
    run_id = await app.start({"goal": "g", "steps": [{"id": "a", "tool": "here"}]})
    await app.engine()._release(run_id)
    other = Charter(db_path)  # no tools, and the run recorded no source it could load
    before = len(await other.store.events(run_id))
    with pytest.raises(ConfigError, match="needs tools that are not loaded: here"):
        await other.engine().adopt(run_id)
    assert len(await other.store.events(run_id)) == before and (await other.store.get_run(run_id)).owner is None  # type: ignore[union-attr]
    adopted, problems = await other.engine().adopt_orphans()
    assert adopted == [] and "needs tools that are not loaded" in str(problems[0])
    assert await other.pause(run_id) == "done"  # stopping needs no tools


async def test_a_cancelled_run_cannot_be_retried(db_path: Path) -> None:
    @tool(retry=RetryPolicy(max_attempts=1))
    def bad() -> None:
        raise RuntimeError("no")

    app = Charter(db_path, tools=[bad], clock=FakeClock(auto_advance=True))
    run_id = await app.start({"goal": "g", "steps": [{"id": "b", "tool": "bad"}, {"id": "c", "approval": {"message": "?"}}]})
    await app.engine().run_until_settled()
    await app.cancel(run_id)
    with pytest.raises(RunStateError, match="was cancelled: it does not run again"):
        await app.retry(run_id, "b")


async def test_a_tool_raising_cancelled_or_base_exceptions_fails_its_step(db_path: Path) -> None:
    @tool(retry=RetryPolicy(max_attempts=2, initial_interval=0))
    async def cancels() -> None:
        raise asyncio.CancelledError("mine")

    class Odd(BaseException):
        pass

    @tool(retry=RetryPolicy(max_attempts=2, initial_interval=0))
    def odd() -> None:
        raise Odd("strange")

    app = Charter(db_path, tools=[cancels, odd], clock=FakeClock(auto_advance=True))
    report = await asyncio.wait_for(app.run({"goal": "g", "steps": [
        {"id": "c", "tool": "cancels"}, {"id": "o", "tool": "odd"}]}), 10)
    assert report.status == "failed"
    assert len(report.step("c").attempts) == 2 and "CancelledError" in report.step("c").error["message"]  # type: ignore[index]
    assert len(report.step("o").attempts) == 2 and "Odd: strange" in report.step("o").error["message"]  # type: ignore[index]


def test_thousands_of_retries_do_not_overflow_the_backoff() -> None:
    assert RetryPolicy(initial_interval=1, backoff=2, max_interval=60, jitter=0).delay(5000, "k") == 60


async def test_escaped_dollars_are_literal_in_every_step(db_path: Path) -> None:
    @tool
    def echo(text: str) -> str:
        return text

    report = await Charter(db_path, tools=[echo]).run(
        {"goal": "g", "steps": [{"id": "e", "tool": "echo", "args": {"text": "price: $${price}"}}]})
    assert report.output == "price: ${price}"


def test_plans_hold_json_and_yaml_tricks_are_refused(tmp_path: Path) -> None:
    (tmp_path / "date.yaml").write_text("goal: g\ninputs: {when: 2024-01-01}\nsteps: [{id: a, tool: t}]\n")
    with pytest.raises(PlanError, match="a plan holds JSON data only"):
        load_plan(tmp_path / "date.yaml")
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\ngoal: g\nsteps: [{id: s, tool: t, args: {v: *b}}]\n"
    (tmp_path / "alias.yaml").write_text(bomb)
    with pytest.raises(PlanError, match=r"line 2.*aliases \(\*name\) are not allowed"):
        load_plan(tmp_path / "alias.yaml")
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(PlanError, match="nested too deeply"):
        Plan.from_dict({"goal": "g", "steps": [{"id": "a", "tool": "t", "args": {"v": deep}}]})


async def test_an_output_that_cannot_be_stored_fails_at_once(db_path: Path) -> None:
    sent: list[int] = []

    @tool(effect="write")
    def send() -> object:
        sent.append(1)
        return object()

    report = await Charter(db_path, tools=[send], clock=FakeClock(auto_advance=True)).run(
        {"goal": "g", "steps": [{"id": "s", "tool": "send"}]})
    assert report.status == "failed" and sent == [1]
    assert "cannot be stored as JSON" in report.step("s").error["message"]  # type: ignore[index]


async def test_rerun_with_an_edited_plan_keeps_only_inputs_it_declares(db_path: Path) -> None:
    @tool
    def show(v: Any) -> Any:
        return v

    app = Charter(db_path, tools=[show])
    first = await app.run({"goal": "g", "inputs": {"old": 1, "limit": 10},
                           "steps": [{"id": "a", "tool": "show", "args": {"v": "${inputs.limit}"}}]})
    second = await app.rerun(first.id, "a", plan={"goal": "g", "inputs": {"limit": 20},
                                                  "steps": [{"id": "a", "tool": "show", "args": {"v": "${inputs.limit}"}}]})
    assert second.status == "succeeded" and second.output == 20  # the new default, not the old one


async def test_state_and_report_accept_a_prefix(db_path: Path) -> None:
    @tool
    def one() -> int:
        return 1

    app = Charter(db_path, tools=[one])
    report = await app.run({"goal": "g", "steps": [{"id": "a", "tool": "one"}]})
    assert (await app.state(report.id[:5])).run_id == report.id
    from charter import RunNotFoundError

    with pytest.raises(RunNotFoundError):
        await app.resolve("\udcff")
