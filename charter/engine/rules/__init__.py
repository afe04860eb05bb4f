"""The rules of a run: a pure state machine over its plan and events.

Given a run's state (built by applying its events in order) and the time, the
rules decide what happens next: which steps are ready, when a retry is due,
which dependents are skipped, when the run is done. There is no I/O and no
clock here; the engine supplies ``now``, does the work, and writes the events
these functions return. Every event goes through :func:`apply` exactly once.

``state`` holds the run's state and statuses, ``transitions`` one handler per kind of
event, ``progress`` what becomes ready and when the run ends, ``attempts`` the
events of an attempt and of a person's decision, ``budget`` the run's limits,
``projection`` the rows a store keeps beside the events. The rules import the
plan, events, errors and retry policies; nothing of the engine, the store or
the interfaces.
"""

from .attempts import classify, decision, effect_key, failure, reset_targets, retry_policies, start, success
from .budget import BUDGET_KEYS, check_budget, over_budget
from .progress import Decision, advance, next_deadline, run_output
from .projection import (
    NewRunRecord,
    Projection,
    RunRecord,
    StepRecord,
    new_run,
    project,
    run_record,
    step_record,
    touched,
)
from .state import (
    AWAITING,
    CANCELLED,
    CREATED,
    FAILED,
    PAUSED,
    PENDING,
    REJECTED,
    REPLANNING,
    RUN_DONE,
    RUNNING,
    SKIPPED,
    STEP_DONE,
    SUCCEEDED,
    WAITING,
    Call,
    RunState,
    StepState,
    Unit,
    lookup,
    shown_status,
)
from .transitions import HANDLERS, NO_STATE_CHANGE, apply, replay

__all__ = [
    "AWAITING",
    "BUDGET_KEYS",
    "CANCELLED",
    "CREATED",
    "FAILED",
    "HANDLERS",
    "NO_STATE_CHANGE",
    "PAUSED",
    "PENDING",
    "REJECTED",
    "REPLANNING",
    "RUNNING",
    "RUN_DONE",
    "SKIPPED",
    "STEP_DONE",
    "SUCCEEDED",
    "WAITING",
    "Call",
    "Decision",
    "NewRunRecord",
    "Projection",
    "RunRecord",
    "RunState",
    "StepRecord",
    "StepState",
    "Unit",
    "advance",
    "apply",
    "check_budget",
    "classify",
    "decision",
    "effect_key",
    "failure",
    "lookup",
    "new_run",
    "next_deadline",
    "over_budget",
    "project",
    "replay",
    "reset_targets",
    "retry_policies",
    "run_output",
    "run_record",
    "shown_status",
    "start",
    "step_record",
    "success",
    "touched",
]
