"""Charter: explicit plans, run as durable, observable work across real tools."""

from .app import Charter, RunUpdate
from .clock import Clock, SystemClock
from .engine.core import Engine
from .engine.report import Attempt, RunReport, StepReport
from .errors import (
    CharterError,
    ConfigError,
    ErrorInfo,
    PermanentError,
    PlanError,
    Problem,
    RetryableError,
    RunFencedError,
    RunNotFoundError,
    RunStateError,
    StepTimeoutError,
    StoreError,
    ToolArgumentError,
)
from .plan.model import Plan, Step, load_plan
from .retry import RetryPolicy
from .store import SQLiteStore, open_store
from .tools import Registry, Tool, ToolContext, load_tools, tool
from .workspace import Workspace, load_workspace

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "Charter",
    "CharterError",
    "Clock",
    "ConfigError",
    "Engine",
    "ErrorInfo",
    "PermanentError",
    "Plan",
    "PlanError",
    "Problem",
    "Registry",
    "RetryPolicy",
    "RetryableError",
    "RunFencedError",
    "RunNotFoundError",
    "RunReport",
    "RunStateError",
    "RunUpdate",
    "SQLiteStore",
    "Step",
    "StepReport",
    "StepTimeoutError",
    "StoreError",
    "SystemClock",
    "Tool",
    "ToolArgumentError",
    "ToolContext",
    "Workspace",
    "load_plan",
    "load_tools",
    "load_workspace",
    "open_store",
    "tool",
]
