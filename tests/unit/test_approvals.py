"""Approval steps: a durable wait for a person, decided from anywhere, with an optional timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from charter import Charter, PlanError, RunStateError, tool
from charter.engine import control
from charter.plan import Plan
from charter.testing import FakeClock, assert_events_in_order

ran: list[str] = []


@tool
def draft() -> str:
    ran.append("draft")
    return "Q3 report"


@tool
def send(doc: str) -> str:
    ran.append(f"send {doc}")
    return f"sent {doc}"


@tool
async def slow() -> str:
    await asyncio.sleep(0.2)
    ran.append("slow")
    return "slow done"


PLAN: dict[str, Any] = {"goal": "send after sign-off", "steps": [
    {"id": "draft", "tool": "draft"},
    {"id": "sign_off", "approval": {"message": "Send ${draft} to the team?"}},
    {"id": "send", "tool": "send", "args": {"doc": "${draft}"}, "needs": ["sign_off"]},
]}


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def make(db: Path, clock: FakeClock | None = None) -> Charter:
    return Charter(db, tools=[draft, send, slow], clock=clock or FakeClock(auto_advance=True))


async def test_the_run_waits_then_an_approval_lets_it_go_on(db_path: Path) -> None:
    first = make(db_path)
    report = await first.run(PLAN)
    assert report.status == "awaiting" and ran == ["draft"]
    sign = report.step("sign_off")
    assert sign.status == "awaiting" and sign.args == {"message": "Send Q3 report to the team?"}
    assert (await first.store.get_run(report.id)).owner is None  # type: ignore[union-attr]  # no process needed to wait
    first.close()

    second = make(db_path)  # another process, later
    assert await second.engine().control(report.id, control.ApproveStep("sign_off", by="ana", note="looks good")) == "done"
    await second.engine().run_until_settled()
    final = await second.report(report.id)
    assert final.status == "succeeded" and final.output == "sent Q3 report"
    assert final.step("sign_off").output == {"approved": True, "by": "ana", "comment": "looks good"}
    assert ran == ["draft", "send Q3 report"]
    assert_events_in_order(final.events, ["ApprovalRequested", "RunWaiting", ("StepSucceeded", {"step": "sign_off"}),
                                          ("StepSucceeded", {"step": "send"}), "RunSucceeded"])


async def test_a_rejection_fails_the_step_and_skips_what_needs_it(db_path: Path) -> None:
    app = make(db_path)
    report = await app.run(PLAN)
    await app.engine().control(report.id, control.RejectStep("sign_off", by="bo", reason="numbers are wrong"))
    await app.engine().run_until_settled()
    final = await app.report(report.id)
    assert final.status == "failed" and [s.status for s in final.steps] == ["succeeded", "failed", "skipped"]
    assert final.step("sign_off").error == {"type": "ApprovalRejected", "message": "rejected by bo: numbers are wrong",
                                            "retryable": False}
    assert ran == ["draft"]
    with pytest.raises(RunStateError, match="not waiting for approval"):
        await app.engine().control(report.id, control.ApproveStep("sign_off"))


async def test_a_decision_reaches_the_engine_that_runs_the_run(db_path: Path) -> None:
    app = make(db_path)
    plan = {"goal": "g", "steps": [
        {"id": "ok", "approval": {"message": "go?"}},
        {"id": "slow", "tool": "slow"},
        {"id": "after", "tool": "send", "args": {"doc": "x"}, "needs": ["ok"]},
    ]}
    run_id = await app.start(plan)
    task = asyncio.create_task(app.engine().run_until_settled())
    while not (await app.state(run_id)).steps["ok"].units:  # the approval was asked for
        await asyncio.sleep(0.01)
    # the engine's own loop carries it out, and it returns once the decision is committed
    assert await app.engine().control(run_id, control.ApproveStep("ok", by="ana")) == "done"
    assert (await app.state(run_id)).steps["ok"].status == "succeeded"
    with pytest.raises(RunStateError, match=r"step ok|already ended"):  # decided: the caller hears so, as when not hosted
        await app.engine().control(run_id, control.ApproveStep("ok", by="bo"))
    await task
    assert (await app.report(run_id)).status == "succeeded"
    assert sorted(ran) == ["send x", "slow"]


async def test_no_decision_before_the_timeout_fails_the_step(db_path: Path) -> None:
    clock = FakeClock(start=1000)
    app = make(db_path, clock)
    plan = {"goal": "g", "steps": [{"id": "ok", "approval": {"message": "go?", "timeout": 3600}}]}
    report = await app.run(plan)
    assert report.status == "awaiting"
    clock.advance(3601)
    await app.engine().control(report.id, control.Resume())
    await app.engine().run_until_settled()
    final = await app.report(report.id)
    assert final.status == "failed"
    assert "no decision within the approval's timeout (3601s)" in final.step("ok").error["message"]  # type: ignore[index]


def test_approval_steps_are_checked() -> None:
    with pytest.raises(PlanError) as info:
        Plan.from_dict({"goal": "g", "steps": [
            {"id": "list", "tool": "t"},
            {"id": "a", "approval": {"message": "m"}, "for_each": "${list}"},
            {"id": "b", "approval": {}},
            {"id": "c", "approval": {"message": "${ghost}", "timeout": -1}},
        ]})
    found = [str(p) for p in info.value.problems]
    assert "steps[1]: an approval step cannot use for_each: ask once, about the whole list" in found
    assert "steps[2].approval.message: Field required" in found
    assert any(p.startswith("steps[3].approval.timeout") for p in found)
