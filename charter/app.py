"""The facade, the one door: run, plan, steer and inspect runs from code.

Every interface (the CLI now; the web page and the service next) goes through
:class:`Charter` and never reaches the engine or the store itself. Every method
that acts is async; ``run_sync`` and ``resume_sync`` wrap the two calls a
script most often needs. The reading methods (``runs``, ``report``, ``state``,
``effects``, ``watch``, ``wait``) come from :class:`~charter.reader.RunReader`.

The module may import the engine, the store, planning and everything below
them; nothing in the package below it imports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import telemetry  # light: OpenTelemetry itself is imported only when tracing is on
from .clock import Clock
from .engine import control, rules
from .engine.core import Engine
from .engine.hosting import pruned
from .engine.journal import planner_events
from .engine.report import RunReport
from .engine.watchers import Feed, Watcher
from .engine.worker import Worker
from .errors import CharterError, ConfigError, RunStateError
from .models import Model, Retrying, model_from_spec
from .plan.inputs import check_inputs
from .plan.model import Plan
from .plan.needs import model_problems, require_models
from .planning.planner import PlanningResult
from .prepare import PlanLike, ToolsLike, check_plan, make_registry, plan_of, plan_request, start_servers
from .reader import SETTLED, RunReader, RunUpdate
from .replay import ReplayReport, replay_run
from .store import Store, open_store
from .store.records import Pruned
from .tools import Registry, Tool, load_tools
from .workspace import Workspace, load_workspace

T = TypeVar("T")


@dataclass(frozen=True)
class Pausing:
    """What :meth:`Charter.pause_all` did: the runs it is pausing, and how many of their
    attempts are still running (the runs pause once these have stopped)."""

    runs: tuple[str, ...]
    attempts: int


class Charter(RunReader):
    """Charter from Python: the one door to runs, for scripts and for every interface.

    >>> app = Charter("charter.db", tools=[my_tool])          # doctest: +SKIP
    >>> report = app.run_sync("plan.yaml")                     # doctest: +SKIP
    >>> report.status, report.output                           # doctest: +SKIP

    Methods that act are async. Most come in two kinds: ``run``, ``resume``, ``retry``
    and ``rerun`` act and then :meth:`drive` the run to its end; ``start``, ``start_resume``,
    ``start_retry``, ``start_rerun``, ``propose``, ``approve`` and ``reject`` only record
    (or take over) the run, for an interface that shows progress while it drives.

    Args:
        db: a SQLite path, ``:memory:``, a ``postgresql://`` URL, or a store object (default:
            the workspace file's ``db``, else ``charter.db``).
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
        tracing: OpenTelemetry traces: a ``charter.telemetry.Tracer``, True, False, None (as ``OTEL_*`` say).
    """

    def __init__(
        self,
        db: str | Path | Store | None = None,
        *,
        tools: ToolsLike = None,
        clock: Clock | None = None,
        max_concurrency: int = 100,
        model: Model | str | None = None,
        workspace: Workspace | str | Path | None = None,
        mode: str = "rwc",
        tracing: Any = None,
    ) -> None:
        ws = workspace if isinstance(workspace, Workspace | None) else load_workspace(workspace)
        if db is None:  # the workspace file's store, else charter.db here
            db = (ws.store_location() if ws is not None else None) or "charter.db"
        super().__init__(db if isinstance(db, Store) else open_store(db, mode=mode), clock)
        self.model: Model | None = model_from_spec(model) if isinstance(model, str) else model
        self.workspace = ws
        self.registry = make_registry(tools, self.workspace)
        self._given_tools = tools is not None
        self.max_concurrency = max_concurrency
        self._feeds: list[Feed] = []
        self._engine: Engine | None = None
        self._loaded: list[Registry] = []  # runs' recorded tools, loaded here: their MCP servers stop at close
        self.tracer: Any = telemetry.tracer_for(tracing, self.model, self.observe)  # None: not tracing

    # --- plans ---------------------------------------------------------------------

    async def load_plan(self, plan: PlanLike) -> Plan:
        """Check a plan (file, dict or Plan) against this app's tools, and that its ``llm`` and
        ``agent`` steps will find a model."""
        return await check_plan(plan, self.registry, self._model())

    async def tools(self) -> list[Tool]:
        """Every tool of this app, its MCP servers' too (started while the loop goes on)."""
        await self.registry.start()
        return list(self.registry)

    def _model(self) -> Model | None:
        """The model of steps that name none: the engine's (a test may set it), else this app's."""
        return self._engine.model if self._engine is not None else self.model

    # --- running -------------------------------------------------------------------

    def engine(self) -> Engine:
        """The engine this app drives (one per app, reused across calls).

        For tests and benchmarks that look below the facade: interfaces never use it.
        """
        if self._engine is None:
            self._engine = Engine(self.store, clock=self.clock, max_concurrency=self.max_concurrency,
                                  model=self.model, workspace=self.workspace)
        return self._engine

    def observe(self, watcher: Watcher) -> None:
        """Give ``watcher`` a frozen snapshot of a run and the events just committed, after each
        commit of this app's runs from now on (the CLI's live progress is one). It runs on a
        thread of its own: a slow watcher cannot hold a run up, one that raises is let go of."""
        self._feeds.append(self.engine().watch(watcher))

    def flush_watchers(self, timeout: float | None = None) -> None:
        """Wait until every watcher has been given what was committed so far (before printing
        a summary below a live view, say)."""
        for feed in self._feeds:
            feed.flush(timeout)

    async def start(self, plan: PlanLike, *, inputs: Mapping[str, Any] | None = None,
                    budget: Mapping[str, float] | None = None, max_replans: int = 0) -> str:
        """Record a new approved run, to run at the next :meth:`drive`; returns its id.

        The plan and inputs are checked first (:func:`check_plan`): an input that does not fit
        the tool argument it goes to raises :class:`ConfigError`, and no run is made.
        ``budget`` limits the run (``tokens``, ``cost``, ``seconds``, ``steps``: it pauses at
        a limit); ``max_replans`` is how many revised plans the model may propose when steps
        fail for good.
        """
        loaded = await check_plan(plan, self.registry, self._model(), inputs=inputs or {})
        return await self.engine().create(loaded, self.registry, inputs, budget=budget, max_replans=max_replans,
                                          trace=telemetry.run_context(self.tracer))

    async def submit(self, plan: PlanLike, *, inputs: Mapping[str, Any] | None = None,
                     budget: Mapping[str, float] | None = None, max_replans: int = 0) -> str:
        """Record a new approved run for the workers (:meth:`worker`, ``charter worker``) to run,
        and return its id at once; checked as in :meth:`start`. Its tools must load on the workers
        from where this app loaded them (tool files, modules, the workspace file)."""
        loaded = await check_plan(plan, self.registry, self._model(), inputs=inputs or {})
        return await self.engine().submit(loaded, self.registry, inputs, budget=budget, max_replans=max_replans,
                                          trace=telemetry.run_context(self.tracer))

    def worker(self, *, concurrency: int = 10, lease_seconds: float = 15.0, grace_seconds: float = 30.0) -> Worker:
        """A worker on this app's store: ``await worker.run()`` executes steps of submitted runs
        until ``worker.stop()``. Runs load the tools they recorded, or use this app's if it was given any."""
        own = self._own_tools()
        worker = Worker(self.store, clock=self.clock, concurrency=concurrency, lease_seconds=lease_seconds,
                        grace_seconds=grace_seconds, model=self.model, workspace=self.workspace,
                        load=load_tools if own is None else lambda sources: own)
        self._feeds += [worker.watch(f.watcher) for f in self.engine().hosting.feeds]  # this app's watchers too
        return worker

    async def drive(self) -> None:
        """Run every run this app has taken (started, resumed, approved or retried here) until
        each has ended, paused, or waits for a decision."""
        await self.engine().run_until_settled()

    async def run(self, plan: PlanLike, *, inputs: Mapping[str, Any] | None = None,
                  budget: Mapping[str, float] | None = None, max_replans: int = 0) -> RunReport:
        """Run a plan to the end (or until it is paused or cancelled); see :meth:`start`."""
        run_id = await self.start(plan, inputs=inputs, budget=budget, max_replans=max_replans)
        await self.drive()
        return await self.report(run_id)

    async def start_resume(self, run_id: str, *, budget: Mapping[str, float] | None = None) -> bool:
        """Take over a paused, interrupted or just approved run, to go on at the next
        :meth:`drive`; ``budget`` raises (replaces) the limits given before.

        Returns whether it goes on: false if the run has already ended. Finished steps are
        never run again.
        """
        run_id = await self.resolve(run_id)
        row = await self.store.get_run(run_id)
        if row is not None and row.status in rules.RUN_DONE:
            return False  # nothing to take over (a pruned run among them)
        resume = control.Resume(budget=dict(budget or {}))
        await self.engine().control(run_id, resume, registry=await self._run_tools(run_id))
        return run_id in self.engine().hosted()

    async def resume(self, run_id: str, *, budget: Mapping[str, float] | None = None) -> RunReport:
        """Continue a paused, interrupted or just approved run; finished steps are not run again."""
        run_id = await self.resolve(run_id)
        await self.start_resume(run_id, budget=budget)
        await self.drive()
        return await self.report(run_id)

    async def start_retry(self, run_id: str, step_id: str) -> str:
        """Make a failed step, and what it blocked, pending again with a fresh retry budget, to
        run at the next :meth:`drive`; returns the run's full id."""
        run_id = await self.resolve(run_id)
        tools = await self._run_tools(run_id, every_step=True)
        await self.engine().control(run_id, control.RetryStep(step_id), registry=tools)
        return run_id

    async def retry(self, run_id: str, step_id: str) -> RunReport:
        """Run a failed step, and what depends on it, again."""
        run_id = await self.start_retry(run_id, step_id)
        await self.drive()
        return await self.report(run_id)

    async def rerun(self, run_id: str, from_step: str, *, plan: PlanLike | None = None) -> RunReport:
        """A new run of the same plan (or ``plan``) that reuses the outputs of every
        succeeded step that is not ``from_step`` or downstream of it."""
        new_id = await self.start_rerun(run_id, from_step, plan=plan)
        await self.drive()
        return await self.report(new_id)

    async def resume_all(self) -> tuple[list[RunReport], list[CharterError]]:
        """Continue every interrupted run (see :meth:`interrupted`); returns their reports and,
        for the runs that could not be taken over (say, their tools no longer import), why not."""
        taken: list[str] = []
        problems: list[CharterError] = []
        for row in await self.interrupted():
            try:
                await self.engine().control(row.id, control.Resume(), registry=await self._run_tools(row.id))
            except RunStateError:
                continue  # another process took it first
            except CharterError as exc:
                problems.append(CharterError(f"cannot resume run {row.id}: {exc}"))
                continue
            taken.append(row.id)
        if taken:
            await self.drive()
        return [await self.report(r) for r in taken], problems

    def _own_tools(self) -> Registry | None:
        """This app's tools, if it was given any; otherwise a run loads the tools it recorded."""
        return self.registry if self._given_tools else None

    async def _run_tools(self, run_id: str, *, every_step: bool = False) -> Registry:
        """The tools a run goes on with (this app's, else the ones it recorded), with the MCP servers
        of its unfinished steps (``every_step``: of all its steps) started while the loop goes on."""
        own = self._own_tools()
        if own is not None and not own.unstarted:
            return own
        state = await self.state(run_id)
        registry = own
        if registry is None:
            registry = load_tools(state.tool_sources) if state.tool_sources else Registry()
            self._loaded.append(registry)  # its MCP servers stop at close
        steps = state.plan.steps if every_step else state.remaining_steps()
        await registry.start([n for s in steps for n in s.tool_names()])
        return registry

    async def start_rerun(self, run_id: str, from_step: str, *, plan: PlanLike | None = None) -> str:
        """Record the run :meth:`rerun` makes, to run at the next :meth:`drive`; returns its id.

        Its plan (the old run's, or ``plan``) is checked against this app's tools if it was
        given any, else against the tools the old run recorded.
        """
        run_id = await self.resolve(run_id)
        row = await self.store.get_run(run_id)
        if row is not None and row.pruned_at is not None:
            raise RunStateError(pruned(run_id))
        old = await self.state(run_id)
        registry = await self._run_tools(run_id, every_step=True)
        if plan is not None:
            await start_servers(registry, plan)
        new_plan = plan_of(old.plan if plan is None else plan, registry)
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
        return await self.engine().create(new_plan, registry, given, approved_by="rerun",
                                          parent_run=run_id, from_step=from_step, reuse=reuse,
                                          trace=telemetry.run_context(self.tracer))

    # --- replaying ---------------------------------------------------------------------

    async def replay(self, run_id: str, *, live_reads: bool = False) -> ReplayReport:
        """Re-execute a recorded run offline with today's code (this app's tools, else the run's), fed its
        log's model answers and tool results; report where it differs. Changes nothing (docs/replay.md)."""
        run_id = await self.resolve(run_id)
        return await replay_run(run_id, await self.store.events(run_id), self._own_tools(),
                                workspace=self.workspace, live_reads=live_reads)

    # --- planning ----------------------------------------------------------------------

    async def plan(self, request: str, *, on_retry: Callable[[Retrying], None] | None = None) -> PlanningResult:
        """Ask the model for a plan of ``request`` over this app's tools (checked, repaired if
        needed); see :func:`plan_request`."""
        return await plan_request(request, self.registry, self.model, clock=self.clock, on_retry=on_retry)

    async def propose(self, request: str, *, planned: PlanningResult | None = None, max_replans: int = 2,
                      budget: Mapping[str, float] | None = None, submit: bool = False) -> str:
        """Plan ``request`` and record a run that waits for review; returns its id.
        Then :meth:`approve` (and :meth:`resume`) or :meth:`reject` it.

        ``planned``: the request's plan, planned already (by :meth:`plan` or :func:`plan_request`):
        it is recorded, with the planner's model calls, instead of asking again. With ``submit``,
        workers run it once approved (see :meth:`submit`).
        """
        result = planned if planned is not None else await self.plan(request)
        engine = self.engine()
        record = engine.submit if submit else engine.create
        return await record(result.plan, self.registry, approved_by=None, request=request,
                                   planning=planner_events(result.calls, engine.clock.now(), result.latencies),
                                   budget=budget, max_replans=max_replans, trace=telemetry.run_context(self.tracer))

    async def revise(self, run_id: str, plan: PlanLike, *, by: str = "user", reason: str = "") -> None:
        """Replace the plan of a run that waits for review (an edit in review); the run still waits."""
        run_id = await self.resolve(run_id)
        await start_servers(self.registry, plan)
        revised = control.RevisePlan(plan_of(plan, self.registry).to_json(), by, reason)
        await self.engine().control(run_id, revised, registry=self._own_tools())

    async def approve(self, run_id: str, step: str | None = None, *, by: str = "user", note: str = "") -> str:
        """Approve a run's plan (``step=None``) or an approval step; :meth:`drive` (or
        :meth:`resume`) then runs it on.

        Returns ``"done"``, or ``"requested"`` when another live process runs the run and was asked.
        """
        request = control.ApprovePlan(by, note) if step is None else control.ApproveStep(step, by, note)
        return await self.engine().control(await self.resolve(run_id), request, registry=self._own_tools())

    async def reject(self, run_id: str, step: str | None = None, *, by: str = "user", reason: str = "") -> str:
        """Reject a run's plan (the run ends) or an approval step (it fails). Returns as :meth:`approve`."""
        request = control.RejectPlan(reason or "rejected", by) if step is None else control.RejectStep(step, by, reason)
        return await self.engine().control(await self.resolve(run_id), request, registry=self._own_tools())

    def run_sync(self, plan: PlanLike, *, inputs: Mapping[str, Any] | None = None) -> RunReport:
        """:meth:`run`, for code that is not async."""
        return _sync(self.run(plan, inputs=inputs), "run")

    def resume_sync(self, run_id: str) -> RunReport:
        """:meth:`resume`, for code that is not async."""
        return _sync(self.resume(run_id), "resume")

    # --- stopping --------------------------------------------------------------------

    async def pause(self, run_id: str, reason: str = "") -> str:
        """Pause a run: here if no live process runs it (``"done"``), else by asking that
        process (``"requested"``; :meth:`wait` for it)."""
        return await self.engine().control(await self.resolve(run_id), control.Pause(reason))

    async def cancel(self, run_id: str, reason: str = "") -> str:
        """Cancel a run for good (its log is kept). Returns as :meth:`pause`."""
        return await self.engine().control(await self.resolve(run_id), control.Cancel(reason))

    # --- history -----------------------------------------------------------------------

    async def prune(self, older_than: float, *, keep_failed: bool = False) -> Pruned:
        """Drop the bulky payloads (model conversations, large outputs) of the runs that ended more
        than ``older_than`` seconds ago, failed ones too unless ``keep_failed``. Their rows, events
        and effect ledger stay (``charter show`` still tells what happened); they cannot go on."""
        if older_than < 0:
            raise ConfigError(f"older_than must be zero or more seconds, not {older_than:g}")
        now = self._now()
        return await self.store.prune(now - older_than, now, keep_failed=keep_failed)

    async def pause_all(self, reason: str) -> Pausing:
        """Pause every run this app is driving (on Ctrl-C, say); :meth:`drive` returns once
        their running attempts have stopped."""
        engine = self.engine()
        hosted = [h.state for h in engine.hosting.runs.values()]
        running = tuple(s.run_id for s in hosted if s.status == rules.RUNNING)
        engine.stop_all(reason)
        return Pausing(running, sum(len(s.running_units()) for s in hosted))

    def close(self) -> None:
        """Close the store and stop the MCP servers and watcher threads this app started."""
        telemetry.close(self.tracer, self._feeds)  # the last spans get a bounded time to leave
        for feed in self._feeds:
            feed.close()
        self.registry.close()
        for loaded in self._loaded:
            loaded.close()
        if self.workspace is not None:
            self.workspace.close()
        self.store.close()

    def __enter__(self) -> Charter:
        return self

    async def __aenter__(self) -> Charter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sync(work: Coroutine[Any, Any, T], name: str) -> T:
    """Run ``work`` to the end, from code that is not async."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    work.close()
    raise ConfigError(f"{name}_sync is for code that is not async; here, use: await app.{name}(...)")


__all__: Sequence[str] = [
    "SETTLED", "Charter", "Pausing", "PlanLike", "RunUpdate", "ToolsLike", "check_plan", "make_registry",
    "model_problems", "plan_request", "require_models",
]
