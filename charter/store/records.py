"""What goes in and out of a store: plain, frozen records in the domain's words.

The store never sees the engine's state. The engine hands it the events of a
batch together with the run's row as the rules project it after them
(:class:`RunWrite`; :class:`NewRun` and :class:`RunChange` say what the store
needs of the rules' records, which it does not import); it reads back rows (:class:`RunRow`, :class:`EffectRow`,
:class:`RequestRow`) and events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..events import Event

#: the kinds of control request a store keeps (what each means: :mod:`charter.engine.control`)
REQUEST_KINDS = (
    "pause", "cancel", "resume", "approve_plan", "reject_plan", "revise_plan",
    "approve_step", "reject_step", "retry_step",
)


class NewRun(Protocol):
    """The fixed facts of a run, written once when it is created (the rules' projection gives them)."""

    @property
    def run_id(self) -> str: ...
    @property
    def goal(self) -> str: ...
    @property
    def tool_sources(self) -> Sequence[str]: ...
    @property
    def parent_run(self) -> str | None: ...
    @property
    def steps_total(self) -> int: ...
    @property
    def created_at(self) -> float: ...


class RunChange(Protocol):
    """A run's row after a batch of its events, as the rules project it."""

    @property
    def status(self) -> str: ...
    @property
    def steps_done(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def output(self) -> Any: ...
    @property
    def updated_at(self) -> float: ...
    @property
    def finished_at(self) -> float | None: ...


@dataclass(frozen=True)
class RunWrite:
    """One run's part of a batch: its new events and the row they lead to.

    ``after_seq`` is the sequence number of the last event the writer saw: the
    batch lands only if the run is still there (optimistic concurrency), and
    its events take the numbers after it. ``status_changed=False`` lets the
    store leave the run's status (and its index) alone.
    """

    run_id: str
    after_seq: int
    events: Sequence[Event]
    run: RunChange
    status_changed: bool = True

    @property
    def last_seq(self) -> int:
        return self.after_seq + len(self.events)


@dataclass(frozen=True)
class RunRow:
    """A run as the store keeps it (derived from its events)."""

    id: str
    status: str
    goal: str
    tool_sources: list[str]
    parent_run: str | None
    steps_total: int
    steps_done: int
    reason: str
    output: Any
    created_at: float
    updated_at: float
    finished_at: float | None
    last_seq: int
    owner: str | None
    lease_expires: float | None
    #: in flight by its log, but whoever ran it is gone; set by :class:`~charter.Charter`,
    #: which knows how to tell (the store only keeps the owner and its lease)
    interrupted: bool = False


@dataclass(frozen=True)
class EffectRow:
    """One entry of the effect ledger."""

    run_id: str
    seq: int
    step_id: str
    item: int | None
    attempt: int
    key: str
    tool: str
    target: list[Any]
    result: Any
    at: float


@dataclass(frozen=True)
class RequestRow:
    """A control request waiting for whoever runs ``run_id`` (``id`` is 0 until stored).

    ``kind`` is one of :data:`REQUEST_KINDS`; ``step`` names the step of a step
    decision or a retry; ``data`` holds what a kind carries beyond that (a
    revised plan, a new budget).
    """

    run_id: str
    kind: str
    created_at: float
    step: str | None = None
    by: str = ""
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    id: int = 0
