"""What a replay found: each divergence between a run's log and today's code, and what was fed.

Plain frozen records with a JSON form (``charter replay --json``). Imports nothing of Charter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: every kind of divergence, in the order a report lists them within a step
KINDS = (
    "plan",           # a version of the plan no longer compiles, or its tools do not load
    "effect",         # a tool the log recorded as a write is a read today (it is still never called)
    "arguments",      # a step's resolved arguments (an approval's message) differ from the recorded ones
    "key",            # a step's idempotency key differs (its effects would not be found in the ledger)
    "model_request",  # a model call's request differs from the recorded one (digest)
    "tool_call",      # an agent asked for another tool call than the recorded one at that place
    "outcome",        # an attempt ended otherwise (succeeded where it failed, another error)
    "retry",          # a failed attempt: a retry decided where the log has none, or the other way round
    "output",         # a step's output differs (computed today: llm and agent steps, live reads)
    "order",          # a step now waits for another it started before in the recording
    "skipped",        # a step skipped in one and not in the other
    "not_run",        # an attempt in the log that the replay did not make
    "unrecorded",     # the replay needs a result the log does not hold: that branch goes no further
    "replan",         # the rules asked for a revised plan where the log did not, or the planner's plan differs
    "end",            # the run ends in another state, or with another output
)


@dataclass(frozen=True)
class Divergence:
    """One place where today's code does not do what the log recorded.

    ``attempt`` is the attempt's number in the log (``None`` for what concerns a
    whole step or the run); ``recorded`` and ``replayed`` are the two values, where
    there are values to show.
    """

    kind: str
    message: str
    step: str | None = None
    item: int | None = None
    attempt: int | None = None
    recorded: Any = None
    replayed: Any = None

    @property
    def where(self) -> str:
        """``step[item] attempt N``, or ``run``."""
        if self.step is None:
            return "run"
        out = self.step if self.item is None else f"{self.step}[{self.item}]"
        return out if self.attempt is None else f"{out} attempt {self.attempt}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "step": self.step, "item": self.item, "attempt": self.attempt,
                "message": self.message, "recorded": self.recorded, "replayed": self.replayed}


@dataclass(frozen=True)
class ReplayReport:
    """A replay of one run: its divergences (none: today's code decides as the log says), and what was fed.

    ``recorded_status`` is the run's status in its log, ``replayed_status`` the
    status the replay reached; ``note`` says why little or nothing was replayed
    (a plan never approved), if so.
    """

    run_id: str
    goal: str
    recorded_status: str
    replayed_status: str
    live_reads: bool
    divergences: list[Divergence] = field(default_factory=list)
    attempts: int = 0  # attempts the replay made
    model_answers: int = 0  # model answers fed from the log
    tool_results: int = 0  # tool results fed from the log (tool steps and agent calls)
    writes_withheld: int = 0  # of which write calls: answered from the log, never made
    live_calls: int = 0  # read tools called for real (--live-reads)
    note: str = ""

    @property
    def diverged(self) -> bool:
        return bool(self.divergences)

    @property
    def exit_code(self) -> int:
        """0: no divergence; 1: divergences found."""
        return 1 if self.divergences else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "goal": self.goal, "recorded_status": self.recorded_status,
            "replayed_status": self.replayed_status, "live_reads": self.live_reads, "diverged": self.diverged,
            "divergences": [d.to_json() for d in self.divergences],
            "fed": {"attempts": self.attempts, "model_answers": self.model_answers, "tool_results": self.tool_results,
                    "writes_withheld": self.writes_withheld, "live_calls": self.live_calls},
            "note": self.note,
        }
