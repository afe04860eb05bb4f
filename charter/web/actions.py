"""What a person can do to a run from the page, each through :class:`~charter.Charter` as the CLI does it.

The page asks :func:`offered` which actions fit a run now, and shows what each will
do before it does it. An action that makes this process run a run's steps (approving,
resuming, retrying, rerunning a run no other process holds) is driven here in the
background by the :class:`Driver`, as ``charter resume`` would; a fleet run's workers
go on with it, and another live process holding a run is asked.

It may import the facade and its errors; never the engine or the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
from typing import Any

import yaml
from pydantic import BaseModel, Field

from ..app import Charter
from ..engine.report import RunReport
from ..errors import ConfigError, RunStateError
from .views import NotFound

log = logging.getLogger("charter.web")


class Driver:
    """Runs, in the background, the runs this process took over; one drive at a time."""

    def __init__(self, charter: Charter) -> None:
        self.charter = charter
        self.task: asyncio.Task[None] | None = None
        self._again = False
        self.problem: str | None = None  # the last drive's failure, for the page

    def kick(self) -> None:
        """Make sure the runs this process took over are being run."""
        if self.task is not None and not self.task.done():
            self._again = True  # taken over while a drive ends: it looks again
            return
        self.task = asyncio.get_running_loop().create_task(self._drive())

    async def _drive(self) -> None:
        while True:
            self._again = False
            try:
                await self.charter.drive()
            except Exception as exc:  # a store that went away, say: the page shows it, the server lives on
                log.exception("driving runs failed")
                self.problem = f"{type(exc).__name__}: {exc}"
            if not self._again:
                return

    async def stop(self) -> None:
        """Pause what this process runs (the server is stopping), and wait until it has."""
        if self.task is None or self.task.done():
            return
        await self.charter.pause_all("the UI server stopped")
        with contextlib.suppress(Exception):
            await self.task


def who() -> str:
    """Who decides, for the log: the login name, marked as from the web page."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "user"
    return f"{name} (web)"


class Decision(BaseModel):
    """Approve or reject the plan (no ``step``) or an approval step."""

    step: str | None = Field(None, max_length=200, description="An approval step; none: the run's plan.")
    note: str = Field("", max_length=10_000, description="Why, or a note kept with the decision.")


class Stop(BaseModel):
    reason: str = Field("", max_length=10_000, description="Why, for the log.")


class StepChoice(BaseModel):
    step: str = Field(..., min_length=1, max_length=200, description="The step.")


class Revision(BaseModel):
    """A new version of a plan that waits for review: the whole plan, as an object or as YAML/JSON text."""

    plan: dict[str, Any] | str = Field(..., description="The edited plan (an object, or YAML or JSON text).")
    reason: str = Field("edited in review", max_length=10_000)


class Empty(BaseModel):
    pass


def _ended(report: RunReport) -> bool:
    return report.status in ("succeeded", "failed", "cancelled", "rejected")


#: why a pruned run offers no action, for the page
PRUNED = "pruned: cannot go on (`charter prune` dropped the outputs and model calls it would need)"


def offered(report: RunReport, pruned: bool = False) -> list[dict[str, Any]]:
    """The actions that fit the run now, each with what it will do, for the page to show before it acts.
    A ``pruned`` run offers none: it has ended, and it cannot go on (no retry) nor be rerun."""
    if pruned:
        return []
    out: list[dict[str, Any]] = []
    rid, status = report.id, report.status

    def add(name: str, does: str, **fields: Any) -> None:
        out.append({"action": name, "does": does, **fields})

    if status == "created" and not any(v.rejected_by for v in report.versions):
        add("approve", f"Approve plan v{report.plan_version}: the run starts, and this server runs its steps "
                       "(a fleet run's workers run them).")
        add("revise", "Replace the plan with your edited version; the run still waits for review.")
        add("reject", "Reject the plan: the run ends and nothing runs.")
    for s in report.steps:
        if s.kind == "approval" and s.status == "awaiting":
            add("approve", f"Approve step {s.id}: the run goes on past it, and this server runs the rest.",
                step=s.id)
            add("reject", f"Reject step {s.id}: the step fails, and what depends on it is skipped.", step=s.id)
    if status in ("running", "replanning") and not report.interrupted:
        add("pause", "Pause the run: running attempts are interrupted and run again on resume.")
    if status == "paused" or report.interrupted:
        add("resume", f"Resume run {rid}: this server runs its remaining steps; finished steps never run again.")
    if not _ended(report):
        add("cancel", "Cancel the run for good; its log is kept.")
    for s in report.failed_steps():
        add("retry", f"Retry step {s.id}: it runs again with a fresh retry budget, then the steps it blocked; "
                     "this server runs them.", step=s.id)
    if _ended(report):
        for s in report.steps:
            add("rerun", f"Rerun from step {s.id}: a new run that reuses the outputs of every succeeded "
                         f"step not downstream of {s.id}; this server runs it.", step=s.id)
    return out


async def act(charter: Charter, driver: Driver, run_id: str, action: str, body: BaseModel) -> dict[str, Any]:
    """Carry out ``action`` on ``run_id`` (a full id) through the facade; what happened, for the page.

    What the facade would refuse less clearly is refused here first: a step the run does not
    have (404), resuming a run that has ended (409, as pausing or cancelling one is)."""
    report = await charter.report(run_id)
    step = getattr(body, "step", None)
    if step is not None and step not in {s.id for s in report.steps}:
        raise NotFound(f"run {run_id} has no step {step!r}")
    if action == "resume" and _ended(report):
        raise RunStateError(f"run {run_id} has already ended ({report.status})")
    by = who()
    run = run_id
    if action == "approve" and isinstance(body, Decision):
        how = await charter.approve(run_id, body.step, by=by, note=body.note)
        driver.kick()
        what = f"approved {'step ' + body.step if body.step else 'the plan'}"
    elif action == "reject" and isinstance(body, Decision):
        how = await charter.reject(run_id, body.step, by=by, reason=body.note or "rejected in review")
        driver.kick()
        what = f"rejected {'step ' + body.step if body.step else 'the plan'}"
    elif action == "revise" and isinstance(body, Revision):
        await charter.revise(run_id, _plan(body.plan), by=by, reason=body.reason)
        how, what = "done", "revised the plan; it waits for review"
    elif action in ("pause", "cancel") and isinstance(body, Stop):
        how = await (charter.pause(run_id, body.reason) if action == "pause" else charter.cancel(run_id, body.reason))
        what = "paused" if action == "pause" else "cancelled"
    elif action == "resume":
        goes_on = await charter.start_resume(run_id)
        driver.kick()
        how, what = "done", "resumed" if goes_on else "resumed (its steps run elsewhere: on a fleet's workers)"
    elif action == "retry" and isinstance(body, StepChoice):
        await charter.start_retry(run_id, body.step)
        driver.kick()
        how, what = "done", f"retrying step {body.step}"
    elif action == "rerun" and isinstance(body, StepChoice):
        run = await charter.start_rerun(run_id, body.step)
        driver.kick()
        how, what = "done", f"rerunning from step {body.step} as run {run}"
    else:  # pragma: no cover - the routes pair each action with its body
        raise ValueError(f"unknown action {action!r}")
    if how == "requested":
        what = f"asked the process running {run_id} to do it: {what}"
    return {"ok": True, "action": action, "run": run, "result": how, "message": what}


def _plan(plan: dict[str, Any] | str) -> dict[str, Any]:
    """An edited plan given as an object or as YAML/JSON text, as an object (checked later, whole)."""
    if isinstance(plan, dict):
        return plan
    try:
        loaded = yaml.safe_load(plan)
    except yaml.YAMLError as exc:
        raise ConfigError(f"the edited plan is not valid YAML or JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError("the edited plan must be a mapping with a goal and steps")
    return loaded
