"""Replaying a run: today's compiler, rules, engine and tools on a throwaway store, fed from the run's log.

The run's log up to its approval (the plan, the planner's calls, the review,
outputs reused by a rerun) is copied into an in-memory store under the same
run id, so idempotency keys and retry schedules are the run's own. Today's
engine then takes the run over, on a clock that skips time, with the tools and
models of a :class:`~charter.replay.feed.Feed`: nothing outside the process is
reached (but read tools with ``live_reads``), and the user's store is only read.
When it settles (the run ended, or waits for a person) the next decision people
made in the log is given to it (an approval step's answer, a retry, a resume, a
cancel), until none is left. Its own log is then compared with the recorded one.

Imports the engine, the store's in-memory SQLite, models, tools, the workspace
and the fake clock of :mod:`charter.testing` (a replay waits for nothing: the
recorded backoffs and deadlines pass at once).
"""

from __future__ import annotations

import dataclasses
import functools
import re

from ..engine import control, rules
from ..engine.core import Engine
from ..errors import CharterError, ConfigError, PlanError, RunStateError
from ..events import (
    BudgetChanged,
    Event,
    RunCancelled,
    RunCreated,
    RunResumed,
    StepFailed,
    StepsReset,
    StepSucceeded,
)
from ..models import standing_in
from ..plan.model import Plan
from ..store import RunWrite, Store, open_store
from ..testing import FakeClock
from ..tools import Registry, load_tools
from ..workspace import Workspace, WorkspaceRegistry, secrets
from .compare import compare
from .feed import Feed
from .recording import Recording
from .report import Divergence, ReplayReport

_LEASE = 3600.0  # nobody else sees the throwaway store: the lease only has to outlast the replay


async def replay_run(run_id: str, events: list[Event], registry: Registry | None, *,
                     workspace: Workspace | None = None, live_reads: bool = False) -> ReplayReport:
    """Replay the run whose log is ``events`` with ``registry``'s tools (``None``: the tools the run
    recorded, loaded from today's code); see :meth:`charter.Charter.replay`."""
    if not events or not isinstance(events[0], RunCreated):
        raise RunStateError(f"run {run_id} has no events: there is nothing to replay")
    if registry is not None:
        return _redacted(await _replay(run_id, events, registry, workspace, live_reads))
    sources = events[0].tool_sources
    loaded = load_tools(sources) if sources else Registry()
    try:
        return _redacted(await _replay(run_id, events, loaded, workspace, live_reads))
    finally:
        loaded.close()  # the MCP servers it started


async def _replay(run_id: str, events: list[Event], registry: Registry, workspace: Workspace | None,
                  live_reads: bool) -> ReplayReport:
    rec = Recording.read(run_id, events)
    problems, compiles = _plan_problems(rec, registry)
    head = functools.partial(ReplayReport, run_id=run_id, goal=rec.state.plan.goal,
                             recorded_status=rec.state.status, live_reads=live_reads)
    if not rec.approved:
        return head(replayed_status=rec.state.status, divergences=problems,
                            note="its plan was never approved: no step ran, so there is nothing to replay")
    if not compiles:
        return head(replayed_status="not replayed", divergences=problems,
                            note="the plan no longer compiles: nothing was replayed")
    await registry.start()  # MCP servers list their tools (for their schemas and the planner's catalog)
    problems += _changed_effects(rec, registry)
    feed = Feed(rec, live_reads=live_reads)
    tools = feed.registry(registry)
    ws = registry.workspace if isinstance(registry, WorkspaceRegistry) else workspace
    store = open_store(":memory:")
    try:
        with standing_in(feed.model):
            replayed = await _drive(rec, feed, tools, store, ws)
    except ConfigError as exc:  # the run's tools or models cannot take it on today
        problems.append(Divergence("plan", f"today's tools cannot take the run on: {exc}"))
        return head(replayed_status="not replayed", divergences=problems,
                            note="nothing was replayed")
    finally:
        store.close()
    return head(
        replayed_status=replayed.state.status, divergences=problems + compare(rec, replayed, feed.notes),
        attempts=len(replayed.attempts), model_answers=feed.model_answers, tool_results=feed.tool_results,
        writes_withheld=feed.writes_withheld,
        live_calls=feed.live_calls,
    )


# The kinds that are a difference of two values and nothing else: shown the same, they are none.
_VALUES = {"arguments", "output", "model_request"}


def _redacted(report: ReplayReport) -> ReplayReport:
    """``report`` with every known secret masked in what it shows: today's values (a read called for
    real), and a recorded one that today's environment holds too. The comparison masks both sides
    already; a divergence whose two masked values are the same is dropped all the same, so none is
    ever shown with nothing to tell apart."""
    shown = [dataclasses.replace(d, message=secrets.redact(d.message), recorded=secrets.redact_data(d.recorded),
                                 replayed=secrets.redact_data(d.replayed)) for d in report.divergences]
    return dataclasses.replace(
        report, goal=secrets.redact(report.goal), note=secrets.redact(report.note),
        divergences=[d for d in shown if d.kind not in _VALUES or d.recorded != d.replayed])


def _plan_problems(rec: Recording, registry: Registry) -> tuple[list[Divergence], bool]:
    """Every version of the run's plan, compiled by today's compiler against today's tools; and whether
    its first version compiles (else nothing can be replayed)."""
    out = []
    first = True
    for version, data in rec.plans:
        try:
            Plan.from_dict(data, registry)
        except PlanError as exc:
            problems = "; ".join(str(p) for p in exc.problems)
            first = first and version != 1
            out.append(Divergence("plan", f"version {version} of the plan no longer compiles: {problems}",
                                  recorded=f"plan version {version}: compiled when recorded",
                                  replayed=f"plan version {version}: does not compile: {problems}"))
    return out, first


def _changed_effects(rec: Recording, registry: Registry) -> list[Divergence]:
    """The tools the log shows as writes (an effect recorded) that today's code declares reads."""
    out = []
    for name, ev in rec.written.items():
        t = registry.get(name)
        if t is not None and t.effect != "write":
            out.append(Divergence(
                "effect", f"{name}: recorded write, now {t.effect} (the log holds its effect): it is answered "
                "from the log and never called, whatever the flags", ev.step, ev.item, ev.attempt,
                recorded=f"{name}: write", replayed=f"{name}: {t.effect}"))
    return out


async def _drive(rec: Recording, feed: Feed, tools: Registry, store: Store, ws: Workspace | None) -> Recording:
    prefix = rec.events[:rec.prefix]
    clock = FakeClock(start=prefix[-1].at, auto_advance=True)
    engine = Engine(store, clock=clock, model=feed.model(), workspace=ws)
    run_id = rec.run_id
    feed.current = lambda: engine.hosting.runs[run_id].state
    start = rules.replay(run_id, prefix)
    await store.create_run(rules.new_run(start), RunWrite(run_id, 0, prefix, rules.run_record(start)),
                           engine.owner, clock.now() + _LEASE)
    await engine.adopt(run_id, tools)
    decisions = list(rec.decisions)
    while True:
        await engine.run_until_settled()
        if not decisions:
            break
        ev = decisions.pop(0)
        if isinstance(ev, BudgetChanged) and decisions and isinstance(decisions[0], RunResumed):
            decisions.pop(0)  # a resume with a new budget: one request
        if ev.at > clock.now():
            clock.advance(ev.at - clock.now())
        request = _request(ev)
        try:
            if request is None:  # an approval's deadline passed: the rules decide that once time has come
                await engine.adopt(run_id, tools)
            else:
                await engine.control(run_id, request, tools)
        except RunStateError:
            continue  # the decision does not fit where the replay is: the comparison says why
        except CharterError as exc:
            raise ConfigError(str(exc)) from exc
    return Recording.read(run_id, await store.events(run_id))


def _request(ev: Event) -> control.Request | None:
    """The control request that a person's decision in the log stands for (``None``: a deadline)."""
    if isinstance(ev, StepSucceeded):
        out = ev.output if isinstance(ev.output, dict) else {}
        return control.ApproveStep(ev.step, str(out.get("by") or "user"), str(out.get("comment") or ""))
    if isinstance(ev, StepFailed):
        error = ev.error or {}
        if error.get("type") != "ApprovalRejected":
            return None
        m = re.match(r"rejected by (.*?)(?:: (.*))?$", str(error.get("message", "")), re.S)
        by, reason = (m.group(1), m.group(2) or "") if m else ("user", "")
        return control.RejectStep(ev.step, by, reason)
    if isinstance(ev, StepsReset):
        m = re.match(r"retry of (.+) requested$", ev.reason)
        return control.RetryStep(m.group(1) if m else ev.steps[0])
    if isinstance(ev, BudgetChanged):
        return control.Resume(ev.by or "user", dict(ev.budget))
    if isinstance(ev, RunResumed):
        return control.Resume(ev.by or "user")
    assert isinstance(ev, RunCancelled)
    return control.Cancel(ev.reason)
