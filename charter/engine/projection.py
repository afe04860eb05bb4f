"""The projection of a run's state onto the rows a store keeps beside its log (pure)."""

from __future__ import annotations

from ..store.records import RunChange
from .rules import RunState


def run_change(state: RunState) -> RunChange:
    """The run's row as its events leave it."""
    return RunChange(status=state.status, steps_done=state.done_steps, reason=state.reason, output=state.output,
                     updated_at=state.updated_at, finished_at=state.finished_at)
