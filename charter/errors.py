"""Charter's errors, split by who must act.

* The developer: :class:`PlanError` (an invalid plan, with every problem found),
  :class:`ToolArgumentError` (arguments that do not fit a tool's schema),
  :class:`ConfigError` (bad configuration, tools that cannot be loaded),
  :class:`RunNotFoundError` and :class:`RunStateError` (a command that does not
  fit the run).
* The tool author: raise :class:`RetryableError` for a transient failure
  (optionally with ``next_retry_delay``) or :class:`PermanentError` for one that
  no retry will fix. Any other exception counts as retryable unless the retry
  policy says otherwise.

Every error that ends an attempt is written into the event log as a
:class:`ErrorInfo`, so it survives restarts and shows in ``charter show``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class CharterError(Exception):
    """Base class of every error Charter raises on purpose."""


# --- the developer must act -------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One problem found in a plan, with where it is (``steps[2].args.path``)."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class PlanError(CharterError):
    """A plan is invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        head = f"invalid plan {source}" if source else "invalid plan"
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{head}: {len(problems)} problem(s)\n{lines}")


class ToolArgumentError(CharterError):
    """Arguments do not fit a tool's schema. Raised before the tool runs."""

    def __init__(self, tool: str, problems: list[Problem]) -> None:
        self.tool = tool
        self.problems = problems
        detail = "; ".join(str(p) for p in problems)
        super().__init__(f"invalid arguments for tool {tool!r}: {detail}")


class ConfigError(CharterError):
    """Configuration or tool sources that cannot be used."""


class RunNotFoundError(CharterError):
    """No run matches the id (or id prefix) given."""


class RunStateError(CharterError):
    """The command does not fit the run's current state (say, retrying a step that succeeded)."""


class StoreError(CharterError):
    """The store cannot be used: a newer schema, a locked or corrupt file, a full disk."""


class RunFencedError(StoreError):
    """A write to a run was refused: another process owns the run now, or wrote to it since
    this one last read it. Nothing of the batch was written."""


# --- the tool author signals --------------------------------------------------


class RetryableError(CharterError):
    """A transient failure: the step is tried again under its retry policy.

    ``next_retry_delay`` (seconds) overrides the policy's backoff for the next
    attempt, for example from a ``Retry-After`` header.
    """

    def __init__(self, message: str, *, next_retry_delay: float | None = None) -> None:
        super().__init__(message)
        self.next_retry_delay = next_retry_delay


class PermanentError(CharterError):
    """A failure no retry will fix: the step fails at once, and its dependents are skipped."""


class StepTimeoutError(RetryableError):
    """An attempt ran longer than its step's timeout. Retryable."""


# --- what the run records ------------------------------------------------------


@dataclass(frozen=True)
class ErrorInfo:
    """An error as written into the event log."""

    type: str
    message: str
    retryable: bool

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "retryable": self.retryable}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ErrorInfo:
        return cls(type=data["type"], message=data["message"], retryable=data["retryable"])

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type
