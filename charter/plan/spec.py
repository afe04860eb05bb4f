"""The plan file's format: what a plan may say, checked by Pydantic, and reading it from YAML or JSON.

:mod:`.model` compiles what passes these checks into a :class:`~charter.plan.Plan`.
Imports errors only (and the YAML, Pydantic and JSON-schema libraries).
"""

from __future__ import annotations

import re
from typing import Any

import pydantic
import yaml

from ..errors import PlanError, Problem

RESERVED_ROOTS = frozenset({"item", "inputs"})
STEP_KINDS = ("tool", "llm", "agent", "approval")
ID_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
ID_RULE = "a letter or _ first, then letters, digits, _ and -"  # what ID_PATTERN accepts, in words


class RetrySpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    max_attempts: int | None = pydantic.Field(default=None, ge=1)
    initial_interval: float | None = pydantic.Field(default=None, ge=0)
    backoff: float | None = pydantic.Field(default=None, ge=1)
    max_interval: float | None = pydantic.Field(default=None, ge=0)
    jitter: float | None = pydantic.Field(default=None, ge=0, le=1)
    retry_unknown_errors: bool | None = None


class LLMSpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    prompt: str
    system: str = ""
    schema_: dict[str, Any] | None = pydantic.Field(default=None, alias="schema")
    model: str | None = None
    max_tokens: int = pydantic.Field(default=4096, ge=1)


class AgentSpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    prompt: str
    tools: list[str] = pydantic.Field(min_length=1)
    max_turns: int = pydantic.Field(default=8, ge=1, le=100)
    system: str = ""
    schema_: dict[str, Any] | None = pydantic.Field(default=None, alias="schema")
    model: str | None = None


class ApprovalSpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    message: str
    timeout: float | None = pydantic.Field(default=None, gt=0)


class StepSpec(pydantic.BaseModel):
    """One step as a plan file writes it: exactly one of ``tool``, ``llm``, ``agent``, ``approval``."""

    model_config = pydantic.ConfigDict(extra="forbid")
    id: str
    title: str = ""
    why: str = ""
    tool: str | None = None
    llm: LLMSpec | None = None
    agent: AgentSpec | None = None
    approval: ApprovalSpec | None = None
    args: dict[str, Any] = pydantic.Field(default_factory=dict)
    needs: list[str] = pydantic.Field(default_factory=list)
    for_each: str | None = None
    retry: RetrySpec | None = None
    timeout: float | None = pydantic.Field(default=None, gt=0)
    concurrency: int | None = pydantic.Field(default=None, ge=1)
    check: str | None = None  # an assumption this step verifies: a falsy output fails it for good

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> StepSpec:
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a step needs exactly one of " + ", ".join(f"'{k}'" for k in STEP_KINDS))
        if kinds[0] != "tool" and self.args:
            raise ValueError(f"an {kinds[0]} step takes no 'args': its text references what it needs")
        if self.approval is not None and self.for_each is not None:
            raise ValueError("an approval step cannot use for_each: ask once, about the whole list")
        return self


class PlanSpec(pydantic.BaseModel):
    """A plan as its file writes it. Its steps are checked one by one (:class:`StepSpec`), so that
    one bad step does not hide the problems of the others."""

    model_config = pydantic.ConfigDict(extra="forbid")
    goal: str
    assumptions: list[str] = pydantic.Field(default_factory=list)
    inputs: dict[str, Any] = pydantic.Field(default_factory=dict)
    steps: list[Any]
    output: Any = None


# --- reading a plan file -----------------------------------------------------------


class _PlanLoader(yaml.SafeLoader):
    """Safe YAML without aliases: ``*name`` can make a small file expand without bound."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed in plans",
                                              event.start_mark)
        return super().compose_node(parent, index)


def parse_plan_text(text: str, source: str = "<plan>") -> Any:
    """YAML (a superset of JSON) to data, with the line of a syntax error."""
    try:
        return yaml.load(text, Loader=_PlanLoader)  # a SafeLoader, without aliases
    except RecursionError:
        raise PlanError([Problem("", "nested too deeply")], source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanError([Problem(where, f"not valid YAML/JSON: {problem}")], source) from None


def _loc(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def pydantic_problems(exc: pydantic.ValidationError, prefix: str) -> list[Problem]:
    """Pydantic's errors as plan problems, each with where it is (``steps[2].args.x``)."""
    return [Problem(_loc(prefix, tuple(e["loc"])), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]


def schema_problems(schema: dict[str, Any]) -> list[str]:
    """Why ``schema`` is not a usable JSON schema (empty if it is)."""
    import jsonschema  # imported here: only plans with llm schemas need it

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [f"not a valid JSON schema: {exc.message}"]
    return []
