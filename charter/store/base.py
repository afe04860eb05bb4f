"""The store's interface, in domain terms: what the engine and the facade may ask of any store.

Every method is async. Only the engine writes (``create_run``, ``append``,
claims and requests it answers); the facade reads and leaves requests. A store
never sees the engine's state: it is handed events and the rows the rules
project from them (:mod:`charter.store.records`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Hashable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from ..clock import Clock
from ..events import Event
from .records import (
    DueTask,
    EffectRow,
    NewRun,
    Pruned,
    RequestRow,
    RunLock,
    RunRow,
    RunWrite,
    StoreStats,
    ToolSlot,
    WorkerRow,
)


class Store(ABC):
    """Events and the state derived from them, shared by every process that runs or watches runs."""

    #: a human-readable location, for messages
    location: str = ""
    #: opened only to read: nothing is migrated or written
    read_only: bool = False

    # --- writing (the engine) ------------------------------------------------------

    @abstractmethod
    async def create_run(self, run: NewRun, first: RunWrite, owner: str, lease_expires: float | None) -> None:
        """Record a new run, claimed by ``owner``, with its first events (``first.after_seq`` is 0):
        all of it, or nothing."""

    @abstractmethod
    async def append(self, writes: Sequence[RunWrite], owner: str, answered: Sequence[int] = ()) -> None:
        """Append each run's events and its new row, in one transaction, and delete the control
        requests (``answered``) these events carry out.

        Fenced: raises :class:`~charter.errors.RunFencedError` (and writes nothing) if a run
        is no longer owned by ``owner`` or has events after ``after_seq``.
        """

    # --- ownership -------------------------------------------------------------------

    @abstractmethod
    async def claim(self, run_id: str, owner: str, lease_expires: float, expected_owner: str | None) -> bool:
        """Take a run that is free, ``owner``'s already, or held by ``expected_owner`` (found dead)."""

    @abstractmethod
    async def renew(self, run_ids: Sequence[str], owner: str, lease_expires: float) -> None:
        """Extend ``owner``'s leases on runs it still holds."""

    @abstractmethod
    async def release(self, run_ids: Sequence[str], owner: str, timers: Mapping[str, float] | None = None) -> None:
        """Let go of runs; requests left for a run that has ended can no longer apply and go too.
        ``timers``: when a run let go of while it waits (an approval's deadline) must be looked at
        again; any worker takes it over then (and whoever claims the run first removes it)."""

    # --- control requests --------------------------------------------------------------

    @abstractmethod
    async def add_request(self, request: RequestRow) -> int:
        """Leave a request for whoever runs ``request.run_id``; returns its id."""

    @abstractmethod
    async def pending_requests(self, run_ids: Sequence[str] | None = None) -> list[RequestRow]:
        """Requests not yet carried out, oldest first (of ``run_ids`` only, if given). Reading takes
        nothing: a request is deleted by the :meth:`append` that records what it did."""

    # --- reading -----------------------------------------------------------------------

    @abstractmethod
    async def get_run(self, run_id: str) -> RunRow | None: ...

    @abstractmethod
    async def find_run_ids(self, prefix: str) -> list[str]:
        """Ids that start with ``prefix`` (a few, newest first)."""

    @abstractmethod
    async def list_runs(self, limit: int = 50, *, statuses: Collection[str] | None = None, since: float | None = None,
                        text: str | None = None, before: str | None = None) -> list[RunRow]:
        """The latest runs, newest first: with one of ``statuses``, created at or after ``since``,
        whose goal, request or id holds ``text`` (any case), created before the run ``before``
        (the next page). ``None`` lets all through."""

    @abstractmethod
    async def unfinished_runs(self) -> list[tuple[str, str | None, float | None]]:
        """Runs in flight by their log, oldest first: (id, owner, lease expiry)."""

    @abstractmethod
    async def events(self, run_id: str, after: int = 0) -> list[Event]:
        """A run's events with a sequence number above ``after``, in order."""

    @abstractmethod
    async def effects(self, run_id: str | None = None, limit: int = 1000) -> list[EffectRow]:
        """The effect ledger, oldest first: of one run, or of every run."""

    # --- the fleet (runs submitted for any worker: their owner is ``FLEET``) ---------------

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[None]:
        """One write transaction around several calls: the store's writes inside it join it."""

    @abstractmethod
    async def lock_run(self, run_id: str, now: float, *, skip_locked: bool = False) -> RunLock | None:
        """Lock a fleet run's row for the transaction and read where its log ends and its tasks
        (``live`` as of ``now``). ``None`` if it is not a fleet run or, with ``skip_locked``,
        another writer holds it."""

    @abstractmethod
    async def lock_tools(self, tools: Sequence[str], now: float) -> dict[str, ToolSlot]:
        """Lock the fleet-wide rows of limited tools for the transaction (in a fixed order), with how
        many of their units run on live workers and when the next may start."""

    @abstractmethod
    async def save_tools(self, slots: dict[str, ToolSlot]) -> None:
        """Write back the next start of the slots a writer changed (inside the same transaction)."""

    @abstractmethod
    async def hand_over(self, run_id: str) -> bool:
        """Inside a transaction: make a run no process holds a fleet run (its timer came due)."""

    @abstractmethod
    async def due_tasks(self, now: float, limit: int = 100) -> list[DueTask]:
        """Work any worker may take at ``now``: ready units, timers due, units of silent workers."""

    @abstractmethod
    async def stopped_runs(self, owner: str) -> list[str]:
        """The fleet runs ``owner`` runs units of that no longer go on (paused, cancelled, ended)."""

    @abstractmethod
    async def next_due(self) -> float | None:
        """When the earliest unowned task comes due (a retry, a timer), if any."""

    @abstractmethod
    async def beat(self, worker: WorkerRow) -> None:
        """A worker's heartbeat: it is alive until ``worker.expires_at``, and this is its load."""

    @abstractmethod
    async def workers(self) -> list[WorkerRow]:
        """Every worker that has beaten, oldest first (the live ones: ``expires_at`` not passed)."""

    @abstractmethod
    async def drop_worker(self, worker_id: str) -> None:
        """A worker that stopped cleanly leaves the list."""

    @abstractmethod
    async def schema_version(self) -> tuple[int, int]:
        """The schema version the store has, and the latest its code knows."""

    # --- history -----------------------------------------------------------------------

    @abstractmethod
    async def prune(self, before: float, now: float, *, keep_failed: bool = False) -> Pruned:
        """Drop the payloads (the bulky parts of events) of the runs that ended before ``before``,
        failed ones too unless ``keep_failed``; their rows, events and effect ledger stay. Runs in
        flight are never touched. Marks the runs pruned at ``now``."""

    @abstractmethod
    async def stats(self, biggest: int = 5) -> StoreStats:
        """What uses the store's space, with the ``biggest`` runs."""

    # --- changes -------------------------------------------------------------------------

    @abstractmethod
    async def change(self) -> Hashable:
        """A token that differs from an earlier one once anything was written since (by anyone)."""

    @abstractmethod
    async def wait_for_change(self, seen: Hashable, timeout: float, clock: Clock) -> Hashable:
        """Return once the store has changed since ``seen`` (a token from :meth:`change`), or after
        ``timeout`` seconds of ``clock``; returns the token now."""

    @abstractmethod
    def close(self) -> None:
        """Let go of the connection (sync, so that ``with`` and ``finally`` blocks can call it)."""
