"""The engine: the one writer of run state.

``rules`` is the pure state machine (no I/O, no clock); the engine around it
hosts runs, starts attempts (``effects`` keeps the ledger of writes,
``journal`` records model and tool calls, ``llm`` and ``agent`` are the step
kinds that ask a model), holds leases on runs (``leases``) and writes every
transition to the store. ``report`` reads a run's log back for people.
"""

from .core import Engine
from .watchers import RunSnapshot, StepSnapshot, Watcher

__all__ = ["Engine", "RunSnapshot", "StepSnapshot", "Watcher"]
