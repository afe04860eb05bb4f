"""The engine on a fake clock: parallelism, limits, retries, timeouts, failures, control."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from charter import (
    ConfigError,
    PermanentError,
    RetryableError,
    RetryPolicy,
    RunStateError,
    ToolContext,
    tool,
)
from charter.testing import FakeClock, assert_events_in_order, event_types
from tests.conftest import Tracker


def chain_plan(tool_name: str, n: int) -> dict[str, Any]:
    steps = [{"id": "s0", "tool": tool_name, "args": {"v": 0}}]
    steps += [{"id": f"s{i}", "tool": tool_name, "args": {"v": f"${{s{i - 1}}}"}} for i in range(1, n)]
    return {"goal": "chain", "steps": steps}


async def test_a_chain_passes_outputs_along(make_app: Any) -> None:
    @tool
    async def inc(v: int) -> int:
        return v + 1

    report = await make_app([inc]).run(chain_plan("inc", 20))
    assert report.status == "succeeded" and report.output == 20
    assert all(s.status == "succeeded" and len(s.attempts) == 1 for s in report.steps)


async def test_independent_steps_run_in_parallel_within_the_global_limit(make_app: Any) -> None:
    tracker = Tracker()

    @tool
    async def work(n: int) -> int:
        await tracker.enter("work", n, delay=0.02)
        return n

    plan = {"goal": "g", "steps": [{"id": f"w{i}", "tool": "work", "args": {"n": i}} for i in range(6)]}
    report = await make_app([work], max_concurrency=3).run(plan)
    assert report.succeeded
    assert tracker.max_in_flight == 3
    report = await make_app([work]).run(plan)
    assert tracker.max_in_flight == 6


async def test_per_tool_and_per_step_limits_hold(make_app: Any) -> None:
    tracker = Tracker()

    @tool(concurrency=1)
    async def slow(n: int) -> int:
        await tracker.enter("slow", n)
        return n

    @tool
    async def each(n: int) -> int:
        await tracker.enter("each", n)
        return n

    @tool
    def items() -> list[int]:
        return list(range(8))

    app = make_app([slow, items, each])
    report = await app.run({"goal": "g", "steps": [{"id": f"s{i}", "tool": "slow", "args": {"n": i}} for i in range(4)]})
    assert report.succeeded and tracker.max_in_flight == 1
    tracker.max_in_flight = 0
    report = await app.run({"goal": "g", "steps": [
        {"id": "list", "tool": "items"},
        {"id": "fan", "tool": "each", "for_each": "${list}", "args": {"n": "${item}"}, "concurrency": 3},
    ]})
    assert report.succeeded and report.output == list(range(8))
    assert tracker.max_in_flight == 3


async def test_transient_failures_are_retried_with_backoff(make_app: Any, clock: FakeClock) -> None:
    attempts: list[int] = []

    @tool(retry=RetryPolicy(max_attempts=4, initial_interval=30, backoff=2, jitter=0))
    def flaky(ctx: ToolContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RetryableError("service unavailable")
        return "ok"

    start = clock.now()
    report = await make_app([flaky]).run({"goal": "g", "steps": [{"id": "f", "tool": "flaky"}]})
    assert report.succeeded and attempts == [1, 2, 3]
    step = report.step("f")
    assert [a.outcome for a in step.attempts] == ["failed", "failed", "succeeded"]
    waits = [a.retry_at - a.ended_at for a in step.attempts[:2]]  # type: ignore[operator]
    assert waits == [30, 60]
    assert clock.now() - start >= 90  # the fake clock skipped the backoff


async def test_retry_after_from_the_error_overrides_backoff(make_app: Any) -> None:
    @tool(retry=RetryPolicy(initial_interval=100, jitter=0))
    def limited(ctx: ToolContext) -> int:
        if ctx.attempt == 1:
            raise RetryableError("429", next_retry_delay=7)
        return ctx.attempt

    report = await make_app([limited]).run({"goal": "g", "steps": [{"id": "x", "tool": "limited"}]})
    first = report.step("x").attempts[0]
    assert first.retry_at is not None and first.ended_at is not None
    assert first.retry_at - first.ended_at == 7


async def test_a_timeout_is_a_retryable_failure(make_app: Any, clock: FakeClock) -> None:
    calls = Counter[str]()
    entered = asyncio.Event()

    @tool(timeout=5, retry=RetryPolicy(max_attempts=2, initial_interval=0))
    async def hang() -> None:
        calls["hang"] += 1
        entered.set()
        await asyncio.Event().wait()  # never set: only the timeout ends it

    running = asyncio.ensure_future(make_app([hang]).run({"goal": "g", "steps": [{"id": "h", "tool": "hang"}]}))
    for _ in range(2):  # time stands still while an attempt is in flight: move it past each timeout
        await entered.wait()
        entered.clear()
        clock.advance(5)
    report = await running
    assert report.status == "failed" and calls["hang"] == 2
    err = report.step("h").error or {}
    assert err["type"] == "StepTimeoutError" and "timeout of 5s" in err["message"]


async def test_step_settings_override_the_tool(make_app: Any) -> None:
    calls = Counter[str]()

    @tool(retry=RetryPolicy(max_attempts=5, initial_interval=0))
    def boom() -> None:
        calls["boom"] += 1
        raise RuntimeError("always")

    plan = {"goal": "g", "steps": [{"id": "b", "tool": "boom", "retry": {"max_attempts": 2}}]}
    report = await make_app([boom]).run(plan)
    assert report.status == "failed" and calls["boom"] == 2
    assert report.step("b").error == {"type": "RuntimeError", "message": "always", "retryable": True}


async def test_unknown_errors_can_be_made_permanent(make_app: Any) -> None:
    calls = Counter[str]()

    @tool(retry=RetryPolicy(retry_unknown_errors=False))
    def strict() -> None:
        calls["strict"] += 1
        raise KeyError("nope")

    report = await make_app([strict]).run({"goal": "g", "steps": [{"id": "s", "tool": "strict"}]})
    assert report.status == "failed" and calls["strict"] == 1


async def test_a_permanent_failure_skips_dependents_and_lets_other_branches_finish(make_app: Any) -> None:
    ran: list[str] = []

    @tool
    def ok(name: str) -> str:
        ran.append(name)
        return name

    @tool
    def broken() -> None:
        raise PermanentError("the file is corrupt")

    plan = {"goal": "g", "steps": [
        {"id": "bad", "tool": "broken"},
        {"id": "after", "tool": "ok", "args": {"name": "${bad}"}},
        {"id": "later", "tool": "ok", "args": {"name": "later"}, "needs": ["after"]},
        {"id": "side", "tool": "ok", "args": {"name": "side"}},
    ]}
    report = await make_app([ok, broken]).run(plan)
    assert report.status == "failed"
    assert report.reason == "1 step(s) failed (bad), 2 skipped"
    assert ran == ["side"]
    assert [s.status for s in report.steps] == ["failed", "skipped", "skipped", "succeeded"]
    assert report.step("bad").error == {"type": "PermanentError", "message": "the file is corrupt", "retryable": False}
    assert len(report.step("bad").attempts) == 1
    assert report.step("later").reason == "after skipped"


async def test_arguments_that_do_not_fit_at_run_time_fail_permanently(make_app: Any) -> None:
    @tool
    def produce() -> dict[str, str]:
        return {"n": "not a number"}

    @tool
    def consume(n: int) -> int:
        return n

    plan = {"goal": "g", "steps": [{"id": "p", "tool": "produce"}, {"id": "c", "tool": "consume", "args": {"n": "${p.n}"}}]}
    report = await make_app([produce, consume]).run(plan)
    err = report.step("c").error or {}
    assert report.status == "failed" and err["type"] == "PermanentError"
    assert "'consume'" in err["message"] and "n:" in err["message"]
    assert len(report.step("c").attempts) == 1


async def test_inputs_fill_references_and_unknown_inputs_are_refused(make_app: Any) -> None:
    @tool
    def echo(text: str) -> str:
        return text

    plan = {"goal": "g", "inputs": {"who": "world"}, "steps": [{"id": "e", "tool": "echo", "args": {"text": "hello ${inputs.who}"}}]}
    app = make_app([echo])
    assert (await app.run(plan)).output == "hello world"
    assert (await app.run(plan, inputs={"who": "team"})).output == "hello team"
    with pytest.raises(ConfigError, match="unknown input"):
        await app.run(plan, inputs={"whom": "x"})


async def test_pause_interrupts_and_resume_reruns_with_the_same_key(make_app: Any) -> None:
    keys: list[tuple[str, int]] = []
    gate = asyncio.Event()

    @tool(effect="write")
    async def send(ctx: ToolContext) -> str:
        keys.append((ctx.idempotency_key, ctx.attempt))
        if ctx.attempt == 1:
            gate.set()
            await asyncio.sleep(3600)
        return "sent"

    app = make_app([send])
    run_id = await app.start({"goal": "g", "steps": [{"id": "mail", "tool": "send"}]})
    task = asyncio.create_task(app.engine().run_until_settled())
    await gate.wait()
    assert await app.pause(run_id, "lunch") == "done"  # the loop here committed it
    await task
    report = await app.report(run_id)
    assert report.status == "paused" and report.reason == "lunch"
    assert [a.outcome for a in report.step("mail").attempts] == ["interrupted"]
    report = await app.resume(run_id)
    assert report.status == "succeeded"
    assert keys == [(f"{run_id}/mail", 1), (f"{run_id}/mail", 2)]
    assert_events_in_order(report.events, ["RunPaused", "RunResumed", ("StepSucceeded", {"step": "mail"}), "RunSucceeded"])


async def test_cancel_ends_a_run_for_good(make_app: Any) -> None:
    gate = asyncio.Event()

    @tool
    async def wait() -> None:
        gate.set()
        await asyncio.sleep(3600)

    app = make_app([wait])
    run_id = await app.start({"goal": "g", "steps": [{"id": "w", "tool": "wait"}, {"id": "x", "tool": "wait", "needs": ["w"]}]})
    task = asyncio.create_task(app.engine().run_until_settled())
    await gate.wait()
    await app.cancel(run_id, "not needed")
    await task
    assert (await app.report(run_id)).status == "cancelled"
    with pytest.raises(RunStateError, match=r"has already ended \(cancelled\)"):
        await app.cancel(run_id)


async def test_pause_and_cancel_of_a_run_nobody_is_running(make_app: Any) -> None:
    @tool
    def noop() -> None:
        return None

    app = make_app([noop])
    run_id = await app.start({"goal": "g", "steps": [{"id": "n", "tool": "noop"}]})
    await app.engine()._release(run_id)  # as if its process had stopped before running it
    assert await app.pause(run_id) == "done"
    assert (await app.report(run_id)).status == "paused"
    with pytest.raises(RunStateError, match="already paused"):
        await app.pause(run_id)
    report = await app.resume(run_id)
    assert report.status == "succeeded"


async def test_retry_runs_the_failed_step_and_its_dependents_again(make_app: Any) -> None:
    fixed = False
    ran = Counter[str]()

    @tool(retry=RetryPolicy(max_attempts=2, initial_interval=0))
    def fragile() -> str:
        ran["fragile"] += 1
        if not fixed:
            raise RuntimeError("disk not mounted")
        return "data"

    @tool
    def use(x: str) -> str:
        ran["use"] += 1
        return x.upper()

    @tool
    def other() -> str:
        ran["other"] += 1
        return "independent"

    app = make_app([fragile, use, other])
    plan = {"goal": "g", "steps": [
        {"id": "f", "tool": "fragile"}, {"id": "u", "tool": "use", "args": {"x": "${f}"}}, {"id": "o", "tool": "other"},
    ]}
    report = await app.run(plan)
    assert report.status == "failed" and ran == {"fragile": 2, "other": 1}
    with pytest.raises(RunStateError, match="only a failed step"):
        await app.retry(report.id, "o")
    fixed = True
    again = await app.retry(report.id, "f")
    assert again.status == "succeeded" and again.output == {"u": "DATA", "o": "independent"}
    assert ran == {"fragile": 3, "use": 1, "other": 1}
    assert [a.number for a in again.step("f").attempts] == [1, 2, 3]


async def test_rerun_reuses_everything_not_downstream(make_app: Any) -> None:
    ran = Counter[str]()

    @tool
    def step(name: str, dep: Any = None) -> str:
        ran[name] += 1
        return f"{name}<{dep}>" if dep else name

    app = make_app([step])
    plan = {"goal": "g", "steps": [
        {"id": "a", "tool": "step", "args": {"name": "a"}},
        {"id": "b", "tool": "step", "args": {"name": "b", "dep": "${a}"}},
        {"id": "c", "tool": "step", "args": {"name": "c", "dep": "${b}"}},
        {"id": "x", "tool": "step", "args": {"name": "x"}},
    ]}
    first = await app.run(plan)
    second = await app.rerun(first.id, "b")
    assert second.id != first.id and second.parent_run == first.id
    assert second.output == first.output
    assert ran == {"a": 1, "b": 2, "c": 2, "x": 1}
    assert second.step("a").reused_from == first.id and second.step("b").reused_from is None
    with pytest.raises(RunStateError, match="no step 'zz'"):
        await app.rerun(first.id, "zz")


async def test_many_runs_share_one_engine(make_app: Any) -> None:
    @tool
    async def inc(v: int) -> int:
        return v + 1

    app = make_app([inc])
    ids = [await app.start(chain_plan("inc", 3)) for _ in range(30)]
    await app.engine().run_until_settled()
    assert {(await app.report(r)).output for r in ids} == {3}
    assert len(await app.runs(100)) == 30


async def test_the_log_records_every_transition(make_app: Any) -> None:
    @tool
    def one() -> int:
        return 1

    report = await make_app([one]).run({"goal": "g", "steps": [{"id": "a", "tool": "one"}]})
    assert event_types(report.events) == ["RunCreated", "PlanApproved", "StepStarted", "StepSucceeded", "RunSucceeded"]
