"""A run's place in a distributed trace: the context stored with the run, and the ids every process derives.

A run's trace must come out whole though its spans are made by several
processes (the one that created it, one that resumed it, fleet workers, one
that approved a step). So no process makes up a span id: the run's root span
is named in ``RunCreated.trace`` (a W3C ``traceparent``, set when the run is
created), and every other span's id is derived from the trace, the run and
the span's place in it (:func:`span_id`). Any process can then make any span
with the right parent, in any order. A log written before the context was
kept gets ids derived from the run's id: stable, whoever traces it.

This module imports nothing of OpenTelemetry: the facade asks it for a new
run's context whether or not this process traces (a caller's span is read
only if the caller imported OpenTelemetry already).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True, slots=True)
class RunTrace:
    """Where a run's spans go: its trace, its root span, the caller's span above it."""

    trace_id: int
    root_id: int  # the span id of the run's root span (``invoke_workflow``)
    parent_id: int | None  # the caller's span the root belongs under, if the run was created in one
    sampled: bool
    state: str = ""  # the caller's ``tracestate``, passed on as it came


def new_run_trace(tracing: bool) -> dict[str, str]:
    """The context to store with a new run: under the caller's current span, if there is one; else a
    new trace if this process traces; else nothing (a later tracer derives ids from the run's id)."""
    caller = _current_span_context()
    if caller is None and not tracing:
        return {}
    trace_id = caller.trace_id if caller is not None else _nonzero(16)
    sampled = caller is None or bool(caller.trace_flags.sampled)
    out = {"traceparent": f"00-{trace_id:032x}-{_nonzero(8):016x}-{'01' if sampled else '00'}"}
    if caller is not None:
        out["parent"] = f"{caller.span_id:016x}"
        state = caller.trace_state.to_header() if caller.trace_state else ""
        if state:
            out["tracestate"] = state
    return out


def run_trace(run_id: str, stored: Mapping[str, str]) -> RunTrace:
    """The trace of run ``run_id`` from what its ``RunCreated`` stored (derived from the id if nothing)."""
    m = _TRACEPARENT.match(stored.get("traceparent", ""))
    if m is None or int(m.group(1), 16) == 0 or int(m.group(2), 16) == 0:
        return RunTrace(_derive(f"charter trace {run_id}", 16), _derive(f"charter root {run_id}", 8), None, True)
    parent = stored.get("parent", "")
    parent_id = int(parent, 16) if re.fullmatch(r"[0-9a-f]{16}", parent) and int(parent, 16) else None
    return RunTrace(int(m.group(1), 16), int(m.group(2), 16), parent_id, bool(int(m.group(3), 16) & 1),
                    stored.get("tracestate", ""))


def span_id(trace: RunTrace, *place: Any) -> int:
    """The id of the span at ``place`` in the run (``("attempt", step, item, n)``, ``("plan", 2)``, ...):
    the same in every process."""
    return _derive(f"{trace.trace_id:032x}/{trace.root_id:016x}/" + "/".join(map(str, place)), 8)


def _derive(text: str, size: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:size], "big")
    return value or 1


def _nonzero(size: int) -> int:
    return int.from_bytes(secrets.token_bytes(size), "big") or 1


def _current_span_context() -> Any:
    """The caller's current span context, if the caller uses OpenTelemetry (never imported here)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid else None


__all__ = ["RunTrace", "new_run_trace", "run_trace", "span_id"]
