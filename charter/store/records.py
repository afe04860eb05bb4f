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
    @property
    def request(self) -> str | None: ...


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
    @property
    def tokens(self) -> int: ...
    @property
    def cost(self) -> float: ...


#: the owner of a run submitted to the fleet: any worker may run its steps (see :class:`Queue`)
FLEET = "fleet"


@dataclass(frozen=True, slots=True)
class Task:
    """A unit of a fleet run's work: ready for any worker (no ``owner``), or running on one.

    ``step`` is ``""`` for a timer: the run is looked at again at ``due_at`` (a
    retry's due time, an approval's deadline). ``live`` is whether the owner's
    heartbeat is still fresh (as read; always true of an unowned task).
    """

    step: str
    item: int | None
    due_at: float
    owner: str | None = None
    attempt: int = 0
    tool: str = ""
    live: bool = True

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.step, self.item)


@dataclass(frozen=True)
class Queue:
    """A fleet run's whole work after a write, as its writer (holding the run's lock) decided it.

    The store makes the run's task rows match: it inserts what is new, changes
    what moved to another owner or attempt, and deletes the rest.
    """

    tasks: Sequence[Task]
    #: the run's number and its task rows as its writer read them under the lock, if it did:
    #: the store need not read them again
    run_no: int | None = None
    had: Sequence[Task] | None = None


@dataclass(frozen=True)
class RunLock:
    """A fleet run locked by a writer for one transaction: where its log ends, and its tasks."""

    run_id: str
    status: str
    last_seq: int
    tool_sources: list[str]
    tasks: list[Task]
    no: int = 0  # the run's number in the store


@dataclass
class ToolSlot:
    """A limited tool across the fleet, as locked for one write: its calls running on live
    workers, and when the next may start (its rate). The writer changes it as it starts units."""

    running: int
    next_at: float
    changed: bool = False


@dataclass(frozen=True)
class DueTask:
    """Work a worker may take now: a ready unit, a timer that came due, or a unit whose worker went silent."""

    run_id: str
    step: str
    item: int | None
    owner: str | None
    tool: str
    #: the run is the fleet's; else a run its host let go of while it waited, whose timer came due
    fleet: bool = True
    tool_sources: list[str] = field(default_factory=list)  # the run's, to load its tools before locking it


@dataclass(frozen=True)
class WorkerRow:
    """A worker as its last heartbeat left it."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    expires_at: float
    concurrency: int
    running: int = 0
    runs: list[str] = field(default_factory=list)
    lacking: dict[str, str] = field(default_factory=dict)
    stopping: bool = False


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
    #: a fleet run's work after these events (``None``: a run one engine hosts has no queue)
    queue: Queue | None = None

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
    request: str | None = None  # the words the plan was made from, if a planner made it
    tokens: int = 0  # model tokens used, input and output
    cost: float = 0.0  # dollars, where the price is known
    pruned_at: float | None = None  # when ``charter prune`` dropped its payloads
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


@dataclass(frozen=True)
class Pruned:
    """What :meth:`~charter.store.base.Store.prune` dropped: the payloads of ``runs`` runs."""

    runs: int
    payloads: int
    bytes: int


@dataclass(frozen=True)
class RunSize:
    """A run and the room its log and payloads take."""

    id: str
    status: str
    created_at: float
    pruned_at: float | None
    bytes: int


@dataclass(frozen=True)
class StoreStats:
    """What uses a store's space (bytes are of the stored JSON text)."""

    runs: dict[str, int]  # by status
    pruned_runs: int
    oldest_run: float | None  # when the oldest run was created
    events: int
    event_bytes: int
    payloads: int  # kept
    payload_bytes: int
    pruned_payloads: int
    pruned_bytes: int  # what pruning dropped
    effects: int
    effect_bytes: int
    biggest: list[RunSize]
    on_disk: int | None  # the database's files, as the database reports them
