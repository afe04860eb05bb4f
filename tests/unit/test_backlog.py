"""The engine's work grows with what happens, not with how many runs it hosts (counted, not timed)."""

from __future__ import annotations

from typing import Any

import pytest

from charter import tool
from charter.engine import rules
from charter.engine.rules import progress


@tool
async def hop(n: int) -> int:
    return n + 1


PLAN = {"goal": "g", "steps": [{"id": "a", "tool": "hop", "args": {"n": 0}},
                               {"id": "b", "tool": "hop", "args": {"n": "${a}"}}]}


@pytest.mark.parametrize("runs", [20, 400])
async def test_the_rules_are_asked_about_a_run_only_when_something_happened_to_it(
        make_app: Any, monkeypatch: pytest.MonkeyPatch, runs: int) -> None:
    asked: list[str] = []
    advance = progress.advance

    def counting(state: rules.RunState, now: float) -> rules.Decision:
        asked.append(state.run_id)
        return advance(state, now)

    monkeypatch.setattr(rules, "advance", counting)
    app = make_app([hop], max_concurrency=10)  # most runs wait for a place most of the time
    ids = [await app.start(PLAN) for _ in range(runs)]
    await app.drive()
    assert [(await app.report(r)).status for r in ids] == ["succeeded"] * runs
    # Each run is looked at a few times per step it took (started, finished, the run ended),
    # however many other runs wait: looking at every hosted run on every turn would be ~runs² / 10.
    assert len(asked) <= 4 * 2 * runs, (len(asked), runs)
    assert max(asked.count(r) for r in ids) <= 16  # a run that waited may be passed over a few times
