"""Watchers get frozen snapshots after commit, on their own thread: they can neither stall nor corrupt a run."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Any

from charter import tool
from charter.engine import RunSnapshot
from charter.events import Event

PLAN = {"goal": "g", "steps": [{"id": f"s{i}", "tool": "step", "args": {"n": i}} for i in range(3)]}


@tool
def step(n: int) -> int:
    return n


async def test_a_watcher_that_fails_is_let_go_and_the_run_goes_on(make_app: Any) -> None:
    app = make_app([step])
    seen: list[str] = []

    def broken_display(snap: RunSnapshot, events: Sequence[Event]) -> None:
        seen.extend(e.type for e in events)
        raise BrokenPipeError("the reader went away")

    app.observe(broken_display)
    report = await app.run(PLAN)
    app.flush_watchers()
    assert report.status == "succeeded"
    assert seen == ["RunCreated", "PlanApproved"]  # called once, failed, never called again


async def test_a_slow_watcher_does_not_hold_the_run_up(make_app: Any) -> None:
    app = make_app([step])
    release = threading.Event()
    got: list[RunSnapshot] = []

    def stuck_display(snap: RunSnapshot, events: Sequence[Event]) -> None:
        got.append(snap)
        release.wait()  # stuck until the run is over (a terminal that stopped reading)

    app.observe(stuck_display)
    try:
        report = await app.run(PLAN)
        assert report.status == "succeeded"  # finished while the watcher was still stuck on its first snapshot
        assert len(got) == 1
    finally:
        release.set()
    app.flush_watchers()
    assert [s.status for s in got][-1] == "succeeded"
    assert [s.last_seq for s in got] == sorted({s.last_seq for s in got})  # in commit order, each commit once


async def test_a_watcher_cannot_change_the_run_and_its_snapshots_stay_as_they_were(make_app: Any) -> None:
    app = make_app([step])
    kept: list[RunSnapshot] = []
    refused: list[Exception] = []
    steps_seen: list[int] = []

    def meddler(snap: RunSnapshot, events: Sequence[Event]) -> None:
        kept.append(snap)
        try:
            snap.status = "cancelled"  # type: ignore[misc]
        except dataclasses.FrozenInstanceError as exc:
            refused.append(exc)
        steps_seen.append(len(snap.steps))
        snap.steps.clear()  # its own copy: neither the run nor the next snapshot sees this

    app.observe(meddler)
    report = await app.run(PLAN)
    app.flush_watchers()
    assert report.status == "succeeded" and [s.status for s in report.steps] == ["succeeded"] * 3
    assert len(refused) == len(kept) > 1
    assert steps_seen == [3] * len(kept)
    first = kept[0]
    assert first.status == "running" and first.last_seq == 2  # as it was at its commit, not as the run is now


@tool
def flaky_once(n: int) -> int:
    if n not in _failed:
        _failed.add(n)
        raise ConnectionError("the first call fails")
    return n


_failed: set[int] = set()


@tool
def numbers(n: int) -> list[int]:
    return list(range(n))


async def test_a_snapshot_made_from_the_last_one_is_the_whole_run_as_it_is(make_app: Any, monkeypatch: Any) -> None:
    from charter.engine import watchers
    from charter.engine.watchers import Snapshots, snapshot

    compared: list[int] = []
    made = Snapshots.after

    def checked(self: Snapshots, state: Any, events: Sequence[Event]) -> RunSnapshot:
        snap = made(self, state, events)
        assert snap == snapshot(state)  # what a snapshot of every step would say, at every commit
        compared.append(snap.last_seq)
        return snap

    monkeypatch.setattr(watchers.Snapshots, "after", checked)
    _failed.clear()
    app = make_app([step, flaky_once, numbers])
    app.observe(lambda snap, events: None)
    report = await app.run({"goal": "g", "steps": [
        {"id": "list", "tool": "numbers", "args": {"n": 3}},
        {"id": "each", "tool": "flaky_once", "for_each": "${list}", "args": {"n": "${item}"}},
        {"id": "again", "tool": "flaky_once", "args": {"n": 9}, "needs": ["each"]},
        {"id": "ok", "approval": {"message": "go on?"}, "needs": ["again"]},
        {"id": "last", "tool": "step", "args": {"n": "${again}"}, "needs": ["ok"]},
    ]})
    assert report.status == "awaiting", (report.reason, [(s.id, s.status, s.error) for s in report.steps])
    await app.approve(report.id, "ok")
    await app.drive()
    assert (await app.report(report.id)).status == "succeeded"
    assert len(compared) > 8
