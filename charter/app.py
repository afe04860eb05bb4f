"""The facade: run plans, resume, retry, rerun and inspect runs from code.

Everything is async; ``run_sync`` and ``resume_sync`` wrap the two calls a
script most often needs.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .clock import Clock, SystemClock
from .engine import rules
from .engine.core import Engine, Observer
from .engine.journal import planner_events
from .engine.leases import claimable
from .engine.report import RunReport, build_report
from .errors import CharterError, ConfigError, PlanError, RunNotFoundError, RunStateError
from .events import Event
from .models import Model, RetryingModel, model_from_spec
from .plan.inputs import check_inputs
from .plan.model import Plan, Step, load_plan
from .plan.needs import model_problems, require_models
from .planning.planner import Planner, PlanningResult
from .store import SQLStore, open_store
from .store.sql import EffectRow, RunRow
from .tools import Registry, Tool, load_tools
from .workspace import Workspace, WorkspaceRegistry, load_workspace

ToolsLike = Registry | Iterable[Tool | str] | str | None
PlanLike = Plan | str | Path | Mapping[str, Any]


@dataclass(frozen=True)
class RunUpdate:
    """What :meth:`Charter.watch` yields: a run's state just after one committed ``event``.

    ``state`` is the watcher's own, brought up to date in place as the run goes
    on: keep the events if you need the past. The last update of a run whose
    process is gone has ``interrupted`` set and no event.
    """

    state: rules.RunState
    event: Event | None
    interrupted: bool = False


def make_registry(tools: ToolsLike, workspace: Workspace | None = None) -> Registry:
    """A registry from tool objects, tool files/modules, or both, plus a workspace's tools and MCP servers.

    Tool objects defined in an importable module record that module as their
    source, so a later process can load them again to resume a run.
    """
    registry = _registry(tools)
    if workspace is not None and not isinstance(registry, WorkspaceRegistry):
        registry = workspace.registry(registry)
    return registry


def _registry(tools: ToolsLike) -> Registry:
    if tools is None:
        return Registry()
    if isinstance(tools, Registry):
        return tools
    if isinstance(tools, str):
        tools = [tools]
    objects: list[Tool] = []
    sources: list[str] = []
    for t in tools:
        if isinstance(t, Tool):
            objects.append(t)
        elif isinstance(t, str | Path):
            sources.append(str(t))
        else:
            raise ConfigError(f"not a tool or tool source: {t!r}")
    registry = load_tools(sources) if sources else Registry()
    for t in objects:
        registry.add(t)
        module: str = getattr(t.fn, "__module__", None) or "__main__"
        top_level = getattr(sys.modules.get(module), t.fn.__name__, None) is t
        importable = top_level and module != "__main__" and not module.startswith("_charter_tools_")
        if importable and module not in registry.sources:
            registry.sources.append(module)
    return registry


class Charter:
    """Charter from Python.

    >>> app = Charter("charter.db", tools=[my_tool])          # doctest: +SKIP
    >>> report = app.run_sync("plan.yaml")                     # doctest: +SKIP
    >>> report.status, report.output                           # doctest: +SKIP

    Args:
        db: a SQLite path, ``:memory:``, or a store object.
        tools: tool objects, tool files or module names, or a :class:`Registry`.
        clock: the time source; ``charter.testing.FakeClock`` in tests.
        max_concurrency: attempts running at once.
        model: a model, or ``provider:model``, for planning and for ``llm`` and ``agent``
            steps (default: ``$CHARTER_MODEL`` when one is needed).
        workspace: a :class:`~charter.workspace.Workspace` or the path of a ``charter.yaml``:
            its root, tools, MCP servers, settings, limits and policy.
        mode: how to open a store given by path: ``"rwc"`` creates it if missing, ``"rw"``
            wants an existing one, ``"ro"`` only reads (to inspect a store, even in a
            folder one may not write to).
    """

    def __init__(
        self,
        db: str | Path | SQLStore = "charter.db",
        *,
        tools: ToolsLike = None,
        clock: Clock | None = None,
        max_concurrency: int = 100,
        model: Model | str | None = None,
        workspace: Workspace | str | Path | None = None,
        mode: str = "rwc",
    ) -> None:
        self.store = db if isinstance(db, SQLStore) else open_store(db, mode=mode)
        self.model: Model | None = model_from_spec(model) if isinstance(model, str) else model
        self.workspace = workspace if isinstance(workspace, Workspace | None) else load_workspace(workspace)
        self.registry = make_registry(tools, self.workspace)
        self._given_tools = tools is not None
        self.clock = clock
        self.max_concurrency = max_concurrency
        self.observers: list[Observer] = []
        self._engine: Engine | None = None
        self._loaded: list[Registry] = []  # runs' recorded tools, loaded here: their MCP servers stop at close

    # --- plans ---------------------------------------------------------------------

    def load_plan(self, plan: PlanLike) -> Plan:
        """Check a plan (file, dict or Plan) against this app's tools, and that its ``llm`` and
        ``agent`` steps will find a model."""
        loaded = self._check_plan(plan)
        require_models(loaded, self._model(), str(plan) if isinstance(plan, str | Path) else None)
        return loaded

    def _check_plan(self, plan: PlanLike, *, with_tools: bool = True) -> Plan:
        """``plan`` checked, against this app's tools unless not ``with_tools``."""
        tools = self.registry if with_tools else None
        if isinstance(plan, Plan):
            return Plan.from_dict(plan.to_json(), tools)
        if isinstance(plan, str | Path):
            return load_plan(plan, tools)
        return Plan.from_dict(dict(plan), tools)

    def _model(self) -> Model | None:
        """The model of steps that name none: the engine's (a test may set it), else this app's."""
        return self._engine.model if self._engine is not None else self.model

    # --- running -------------------------------------------------------------------

    def engine(self) -> Engine:
        """The engine this app drives (one per app, reused across calls)."""
        if self._engine is None:
            self._engine = Engine(self.store, clock=self.clock, max_concurrency=self.max_concurrency,
                                  model=self.model, workspace=self.workspace)
            self._engine.observers.extend(self.observers)
        return self._engine

    async def start(self, plan: PlanLike, *, inputs: Mapping[str, Any] | None = None) -> str:
        """Record a new approved run without running it; returns its id.

        The inputs are checked first (:func:`charter.inputs.check_inputs`): an input that
        does not fit the tool argument it goes to raises :class:`ConfigError`, and no run is made.
        """
        await self._start_servers(plan)
        loaded = self.load_plan(plan)
        check_inputs(loaded, inputs, self.registry)
        return self.engine().create(loaded, self.registry, inputs).run_id

    async def run(self, plan: PlanLike, *, inputs: Mapping[str, Any] | None = None) -> RunReport:
        """Run a plan to the end (or until it is paused or cancelled)."""
        run_id = await self.start(plan, inputs=inputs)
        await self.engine().run_until_settled()
        return self.report(run_id)

    async def resume(self, run_id: str) -> RunReport:
        """Continue a paused, interrupted or just approved run; finished steps are not run again."""
        run_id = self.resolve(run_id)
        self.engine().resume(run_id, registry=await self._run_tools(run_id))
        await self.engine().run_until_settled()
        return self.report(run_id)

    async def retry(self, run_id: str, step_id: str) -> RunReport:
        """Run a failed step, and what depends on it, again."""
        run_id = self.resolve(run_id)
        self.engine().retry(run_id, step_id, registry=await self._run_tools(run_id, every_step=True))
        await self.engine().run_until_settled()
        return self.report(run_id)

    async def rerun(self, run_id: str, from_step: str, *, plan: PlanLike | None = None) -> RunReport:
        """A new run of the same plan (or ``plan``) that reuses the outputs of every
        succeeded step that is not ``from_step`` or downstream of it."""
        run_id = self.resolve(run_id)
        if plan is not None:
            await self._start_servers(plan)
        tools = await self._run_tools(run_id, every_step=True) if plan is None else None
        new_id = self._start_rerun(run_id, from_step, plan, tools)
        await self.engine().run_until_settled()
        return self.report(new_id)

    async def resume_all(self) -> tuple[list[RunReport], list[CharterError]]:
        """Continue every interrupted run (see :meth:`interrupted`); returns their reports and,
        for the runs that could not be taken over (say, their tools no longer import), why not."""
        taken: list[str] = []
        problems: list[CharterError] = []
        for row in self.interrupted():
            try:
                self.engine().resume(row.id, registry=await self._run_tools(row.id))
            except RunStateError:
                continue  # another process took it first
            except CharterError as exc:
                problems.append(CharterError(f"cannot resume run {row.id}: {exc}"))
                continue
            taken.append(row.id)
        if taken:
            await self.engine().run_until_settled()
        return [self.report(r) for r in taken], problems

    def _own_tools(self) -> Registry | None:
        """This app's tools, if it was given any; otherwise a run loads the tools it recorded."""
        return self.registry if self._given_tools else None

    async def _start_servers(self, plan: PlanLike) -> None:
        """Start the MCP servers whose tools ``plan`` names while the loop goes on: checking the
        plan then finds their tools there, without waiting on the loop for a server to start."""
        if not self.registry.unstarted:
            return
        try:
            names: list[str] | None = _tool_names(self._check_plan(plan, with_tools=False))
        except PlanError:
            names = None  # the check after reports every problem, tools too: all of them are needed
        await self.registry.start(names)

    async def _run_tools(self, run_id: str, *, every_step: bool = False) -> Registry:
        """The tools a run goes on with (this app's, else the ones it recorded), with the MCP servers
        of its unfinished steps (``every_step``: of all its steps) started while the loop goes on."""
        own = self._own_tools()
        if own is not None and not own.unstarted:
            return own
        state = self.state(run_id)
        registry = own if own is not None else self._recorded_tools(state.tool_sources)
        steps = [s for s in state.plan.steps if every_step or state.steps[s.id].status not in rules.STEP_DONE]
        await registry.start(_tool_names(state.plan, steps))
        return registry

    def _recorded_tools(self, sources: Sequence[str]) -> Registry:
        """The tools from a run's recorded sources, kept to stop their MCP servers at :meth:`close`."""
        registry = load_tools(sources) if sources else Registry()
        self._loaded.append(registry)
        return registry

    def start_rerun(self, run_id: str, from_step: str, *, plan: PlanLike | None = None) -> str:
        """Record a new run of the same plan (or ``plan``) that reuses what :meth:`rerun` reuses; returns its id."""
        return self._start_rerun(self.resolve(run_id), from_step, plan, None)

    def _start_rerun(self, run_id: str, from_step: str, plan: PlanLike | None, tools: Registry | None) -> str:
        old = self.state(run_id)
        new_plan = self._check_plan(plan) if plan is not None else None
        if new_plan is None:
            registry = tools if tools is not None else self._own_tools() or self._recorded_tools(old.tool_sources)
            new_plan = Plan.from_dict(old.plan.to_json(), registry)
        else:
            registry = self.registry
        if from_step not in new_plan.by_id:
            raise RunStateError(f"the plan has no step {from_step!r}")
        redo = set(new_plan.downstream(from_step))
        # Inputs given to the old run (not its plan's defaults) that the new plan still declares.
        given = {k: v for k, v in old.inputs.items()
                 if k in new_plan.inputs and old.plan.inputs.get(k, object()) != v}
        check_inputs(new_plan, given, registry)
        reuse = {
            sid: st.output for sid, st in old.steps.items()
            if st.status == rules.SUCCEEDED and sid not in redo and sid in new_plan.by_id
        }
        # Only what runs again needs a model: reused outputs are not asked for again.
        require_models(new_plan, self._model(), str(plan) if isinstance(plan, str | Path) else None,
                       steps=[s.id for s in new_plan.steps if s.id not in reuse])
        state = self.engine().create(new_plan, registry, given, approved_by="rerun",
                                     parent_run=run_id, from_step=from_step, reuse=reuse)
        return state.run_id

    # --- planning ----------------------------------------------------------------------

    async def plan(self, request: str) -> PlanningResult:
        """Ask the model for a plan of ``request`` over this app's tools (checked, repaired if needed)."""
        model = self.model or model_from_spec(None)
        return await Planner(RetryingModel(model, clock=self.clock), self.registry).plan(request)

    async def propose(self, request: str, *, max_replans: int = 2, budget: Mapping[str, float] | None = None) -> str:
        """Plan ``request`` and record a run that waits for review; returns its id.
        Then :meth:`approve` (and :meth:`resume`) or :meth:`reject` it."""
        result = await self.plan(request)
        engine = self.engine()
        state = engine.create(result.plan, self.registry, approved_by=None, request=request,
                              planning=planner_events(result.calls, engine.clock.now(), result.latencies),
                              budget=budget, max_replans=max_replans)
        return state.run_id

    def approve(self, run_id: str, step: str | None = None, *, by: str = "user", note: str = "") -> str:
        """Approve a run's plan (``step=None``) or an approval step; :meth:`resume` then runs it on.

        Returns ``"done"``, or ``"requested"`` when another live process runs the run and was asked.
        """
        run_id = self.resolve(run_id)
        if step is None:
            self.engine().approve(run_id, by=by, registry=self._own_tools(), note=note)
            return "done"
        return self.engine().decide(run_id, step, True, by=by, note=note, registry=self._own_tools())

    def reject(self, run_id: str, step: str | None = None, *, by: str = "user", reason: str = "") -> str:
        """Reject a run's plan (the run ends) or an approval step (it fails). Returns as :meth:`approve`."""
        run_id = self.resolve(run_id)
        if step is None:
            self.engine().reject(run_id, reason or "rejected", by=by)
            return "done"
        return self.engine().decide(run_id, step, False, by=by, note=reason, registry=self._own_tools())

    def run_sync(self, plan: PlanLike, *, inputs: Mapping[str, Any] | None = None) -> RunReport:
        """:meth:`run`, for code that is not async."""
        return asyncio.run(self.run(plan, inputs=inputs))

    def resume_sync(self, run_id: str) -> RunReport:
        """:meth:`resume`, for code that is not async."""
        return asyncio.run(self.resume(run_id))

    def pause(self, run_id: str, reason: str = "") -> str:
        """Pause a run: here if no live process runs it, else by asking that process."""
        return self.engine().request_stop(self.resolve(run_id), "pause", reason)

    def cancel(self, run_id: str, reason: str = "") -> str:
        """Cancel a run for good (its log is kept)."""
        return self.engine().request_stop(self.resolve(run_id), "cancel", reason)

    # --- inspecting -----------------------------------------------------------------

    def resolve(self, run_id: str) -> str:
        """A full run id from an id or a unique prefix of one."""
        try:
            run_id.encode("utf-8")
        except UnicodeEncodeError:
            raise RunNotFoundError(f"no run {run_id!r} in {self.store.location}") from None
        if self.store.get_run(run_id) is not None:
            return run_id
        matches = self.store.find_run_ids(run_id) if run_id else []
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunNotFoundError(f"no run {run_id!r} in {self.store.location}")
        raise RunNotFoundError(f"{run_id!r} matches several runs: {', '.join(matches)}")

    def runs(self, limit: int = 50) -> list[RunRow]:
        """The latest runs, newest first."""
        now = self._now()
        return [_mark(r, now) for r in self.store.list_runs(limit)]

    def interrupted(self) -> list[RunRow]:
        """The runs that stopped in the middle, oldest first: their log says they are running, but
        the process running them is gone (dead on this machine, or its lease expired).
        :meth:`resume` or :meth:`resume_all` continues them; nothing else does."""
        now = self._now()
        rows = (self.store.get_run(run_id) for run_id, _, _ in self.store.unfinished_runs())
        return [marked for r in rows if r is not None and (marked := _mark(r, now)).interrupted]

    def _now(self) -> float:
        return (self.clock or SystemClock()).now()

    def state(self, run_id: str) -> rules.RunState:
        run_id = self.resolve(run_id)
        return rules.replay(run_id, self.store.events(run_id))

    def report(self, run_id: str) -> RunReport:
        """A run's status, output and timeline, from its log."""
        run_id = self.resolve(run_id)
        events = self.store.events(run_id)
        report = build_report(rules.replay(run_id, events), events)
        return replace(report, interrupted=True) if self._owner_gone(run_id, self._now()) else report

    async def watch(self, run_id: str, *, interval: float = 0.2) -> AsyncIterator[RunUpdate]:
        """Follow a run from its log, whichever process executes it: one update per committed
        event, those already there first, until the run settles (it ends, pauses, or waits for
        a decision) or is interrupted (no live process holds it; it goes on with ``resume``).

        Watching only reads: the run is never claimed or changed. The log is read
        again every ``interval`` seconds of this app's clock.
        """
        run_id = self.resolve(run_id)
        clock = self.clock or SystemClock()
        events = self.store.events(run_id)
        state = rules.replay(run_id, events[:1])
        seen = 0
        while True:
            for ev in events:
                if seen:  # the first, RunCreated, made the state
                    rules.apply(state, ev)
                seen += 1
                state.last_seq = seen
                yield RunUpdate(state, ev)
            if state.status not in (rules.RUNNING, rules.REPLANNING):
                return
            await clock.sleep(interval)
            events = self.store.events(run_id, after=seen)
            if not events and self._owner_gone(run_id, clock.now()):
                # Read again: the run may have moved on just before its owner let go of it.
                events = self.store.events(run_id, after=seen)
                if not events:
                    yield RunUpdate(state, None, interrupted=True)
                    return

    def _owner_gone(self, run_id: str, now: float) -> bool:
        """Whether no live process holds an unfinished run (its process died, or its lease ran out)."""
        row = self.store.get_run(run_id)
        return row is not None and _mark(row, now).interrupted

    def effects(self, run_id: str | None = None, limit: int = 1000) -> list[EffectRow]:
        """The effect ledger: every change write tools made, of one run or of all runs, oldest first."""
        return self.store.effects(self.resolve(run_id) if run_id else None, limit)

    def close(self) -> None:
        """Close the store and stop the MCP servers this app started."""
        self.registry.close()
        for loaded in self._loaded:
            loaded.close()
        if self.workspace is not None:
            self.workspace.close()
        self.store.close()

    def __enter__(self) -> Charter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tool_names(plan: Plan, steps: Iterable[Step] | None = None) -> list[str]:
    """The tools that the steps of ``plan`` (or ``steps``) call, agents' tools included."""
    names: list[str] = []
    for step in plan.steps if steps is None else steps:
        if step.kind == "tool" and step.tool is not None:
            names.append(step.tool)
        elif step.kind == "agent":
            names += step.args.get("tools", ())
    return names


def _mark(row: RunRow, now: float) -> RunRow:
    """``row``, marked interrupted if it is in flight and whoever ran it is gone."""
    gone = row.status in (rules.RUNNING, rules.REPLANNING) and claimable(row.owner, row.lease_expires, now)
    return replace(row, interrupted=True) if gone else row


__all__: Sequence[str] = ["Charter", "RunUpdate", "make_registry", "model_problems", "require_models"]
