"""Control requests carried out directly while this process's engine loop drives other runs
(as `charter ui` does: the page edits, approves or pauses runs while its driver runs others),
on both stores: the loop must leave a run alone until the request's events are committed."""

from __future__ import annotations

import asyncio
from typing import Any

from charter import tool
from charter.testing import ScriptedModel


@tool
def shout(name: str) -> str:
    """Shout a name."""
    return name.upper()


async def test_a_plan_in_review_is_revised_and_approved_while_the_engine_drives_other_runs(make_app: Any) -> None:
    # as on the web page: the engine's loop runs (a run holds it) while a person edits another
    # run's plan in review; the loop must leave that run alone until the edit is committed
    gate = asyncio.Event()

    @tool
    async def hold() -> str:
        await gate.wait()
        return "held"

    answer = {"goal": "Greet", "steps": [{"id": "a", "why": "asked", "tool": "shout", "args": {"name": "ana"}}]}
    app = make_app([shout, hold], model=ScriptedModel([answer, answer]))
    busy = await app.start({"goal": "g", "steps": [{"id": "h", "tool": "hold"}]})
    driving = asyncio.create_task(app.drive())
    await app.wait(busy, until={"running"}, timeout=10)
    proposed = await app.propose("Greet Ana", planned=await app.plan("Greet Ana"))
    for name in ("bo", "cy", "di"):
        await app.revise(proposed, {**answer, "steps": [{**answer["steps"][0], "args": {"name": name}}]})
        assert (await app.report(proposed)).status == "created"
    dropped = await app.propose("Greet Ana", planned=await app.plan("Greet Ana"))
    assert await app.reject(dropped, reason="not now") == "done"  # committed, by the loop or here
    assert (await app.report(dropped)).status == "rejected"
    assert await app.approve(proposed) == "done"
    assert (await app.wait(proposed, until={"succeeded", "failed"}, timeout=20)).output == "DI"
    gate.set()
    await driving
    assert (await app.report(busy)).status == "succeeded"




def _slowed(app: Any) -> None:
    """Every read of a run's row yields to the event loop first, as a store across a network does
    (SQLite answers without yielding): requests that overlap, overlap here too."""
    for name in ("get_run", "events"):
        read = getattr(app.store, name)

        async def slow(run_id: str, *args: Any, _read: Any = read, **kw: Any) -> Any:
            await asyncio.sleep(0.01)
            return await _read(run_id, *args, **kw)
        setattr(app.store, name, slow)


async def test_two_decisions_given_at_once_on_a_plan_in_review_take_turns(make_app: Any) -> None:
    # a double click on the page, or two people in two tabs: one decision applies, the other is
    # told why not, and the run is neither decided twice nor stranded without a host
    answer = {"goal": "Greet", "steps": [{"id": "a", "why": "asked", "tool": "shout", "args": {"name": "ana"}}]}
    proposer = make_app([shout], model=ScriptedModel([answer]))  # proposed elsewhere: not held here
    approved = await proposer.propose("Greet Ana", planned=await proposer.plan("Greet Ana"))
    await proposer.drive()  # lets go of the run: it waits for review
    proposer.close()
    app = make_app([shout])
    _slowed(app)
    outcomes = await asyncio.gather(app.approve(approved, by="ana"), app.approve(approved, by="bo"),
                                    return_exceptions=True)
    assert outcomes[0] == "done" and "not waiting for its plan to be reviewed" in str(outcomes[1]), outcomes
    await app.drive()
    report = await app.report(approved)
    assert report.status == "succeeded" and report.output == "ANA"
    assert [e.by for e in report.events if e.type == "PlanApproved"] == ["ana"]

    # approve and cancel at once, while the loop drives: whichever goes first, the run ends cancelled
    # or runs to its end, and it is never left `running` with nobody running it
    gate = asyncio.Event()

    @tool
    async def hold() -> str:
        await gate.wait()
        return "held"

    other = make_app([shout, hold], model=ScriptedModel([answer]))
    _slowed(other)
    busy = await other.start({"goal": "g", "steps": [{"id": "h", "tool": "hold"}]})
    driving = asyncio.create_task(other.drive())
    await other.wait(busy, until={"running"}, timeout=10)
    raced = await other.propose("Greet Ana", planned=await other.plan("Greet Ana"))
    outcomes = await asyncio.gather(other.approve(raced), other.cancel(raced), return_exceptions=True)
    assert "done" in outcomes, outcomes
    ended = await other.wait(raced, until={"succeeded", "cancelled"}, timeout=20)
    assert ended.status in ("succeeded", "cancelled") and ended.owner is None, ended
    gate.set()
    await driving
    assert (await other.report(busy)).status == "succeeded"
