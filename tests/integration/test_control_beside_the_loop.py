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


