"""A tool: a plain Python function with type hints and a declared effect.

``@tool`` turns a function into a :class:`Tool`. Its argument schema comes from
the type hints through Pydantic, so a call with wrong arguments fails before the
function runs. A tool that takes a parameter annotated :class:`ToolContext`
receives the step's context there, including the idempotency key that a
``write`` tool must use so that a repeated attempt changes nothing.

Imports only errors and retry: every other part of Charter may import this.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import pydantic
from pydantic_core import to_jsonable_python

from ..errors import ConfigError, PermanentError, Problem, ToolArgumentError
from ..retry import RetryPolicy

Effect = Literal["read", "write"]

# Where a sync tool's thread is announced, so the engine can wait for a thread
# that outlives the cancellation of its attempt (Python cannot stop a thread).
running_threads: contextvars.ContextVar[list[asyncio.Future[Any]] | None] = contextvars.ContextVar(
    "charter_running_threads", default=None
)


@dataclass(frozen=True)
class ToolContext:
    """What a tool knows about the attempt it runs in.

    ``idempotency_key`` is the same for every attempt of one step (or of one
    item of a ``for_each`` step) of one run. A ``write`` tool uses it to make a
    repeat harmless: as an email's Message-ID, a commit trailer, a request
    header, or a marker checked before acting.
    """

    run_id: str
    step_id: str
    item: int | None
    attempt: int
    idempotency_key: str


@dataclass(frozen=True)
class Tool:
    """A typed callable with a declared effect. Made by :func:`tool`."""

    name: str
    fn: Callable[..., Any]
    description: str
    effect: Effect
    timeout: float | None
    retry: RetryPolicy | None
    concurrency: int | None
    args_model: type[pydantic.BaseModel]
    context_param: str | None
    is_async: bool
    source: str | None = field(default=None, compare=False)
    target: tuple[str, ...] = ()  # the arguments that say what a write acts on
    rate: float | None = None

    def targets_of(self, args: Mapping[str, Any]) -> list[Any]:
        """What a call with ``args`` acts on (its ``target`` arguments, flattened): for policies and the ledger."""
        out: list[Any] = []
        for name in self.target:
            value = args.get(name)
            if value is not None:
                out += list(value) if isinstance(value, list | tuple) else [value]
        return out

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """Arguments checked and converted by the schema, or :class:`ToolArgumentError`."""
        try:
            model = self.args_model.model_validate(args)
        except pydantic.ValidationError as exc:
            raise ToolArgumentError(self.name, _problems(exc)) from None
        return {name: getattr(model, name) for name in type(model).model_fields}

    def check_arg(self, name: str, value: Any) -> list[Problem]:
        """Problems with one argument's value, checked alone (for plan validation)."""
        info = self.args_model.model_fields.get(name)
        if info is None:
            return [Problem(name, f"tool {self.name!r} has no argument {name!r}")]
        try:
            _adapter(self.args_model, name).validate_python(value)
        except pydantic.ValidationError as exc:
            return [Problem(f"{name}{p.where and '.' + p.where}", p.message) for p in _problems(exc)]
        return []

    def required_args(self) -> list[str]:
        return [n for n, f in self.args_model.model_fields.items() if f.is_required()]

    def has_arg(self, name: str) -> bool:
        return name in self.args_model.model_fields

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments."""
        return self.args_model.model_json_schema()

    async def invoke(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        """Validate ``args``, call the function, and return its output as JSON-able data."""
        kwargs = self.validate_args(args)
        if self.context_param is not None:
            kwargs[self.context_param] = ctx
        if self.is_async:
            result = await self.fn(**kwargs)
        else:
            # A sync tool runs in a thread so that it cannot stall other steps.
            call = functools.partial(contextvars.copy_context().run, self.fn, **kwargs)
            thread = asyncio.get_running_loop().run_in_executor(None, call)
            holder = running_threads.get()
            if holder is not None:
                holder.append(thread)
            result = await asyncio.shield(thread)  # cancelling the wait must not lose the result
        return jsonable(self.name, result)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly, as plain Python."""
        return self.fn(*args, **kwargs)


def jsonable(tool: str, value: Any) -> Any:
    """A tool's output as JSON data; one that cannot be stored fails for good (a retry returns the same)."""
    try:
        return to_jsonable_python(value)
    except (ValueError, TypeError, RecursionError) as exc:  # PydanticSerializationError is a ValueError
        raise PermanentError(f"tool {tool!r} returned a value that cannot be stored as JSON: {exc}") from None


@functools.cache
def _adapter(model: type[pydantic.BaseModel], name: str) -> pydantic.TypeAdapter[Any]:
    info = model.model_fields[name]
    annotated: Any = typing.Annotated[info.annotation, info]
    return pydantic.TypeAdapter(annotated)


def _problems(exc: pydantic.ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unexpected argument"
        elif err["type"] == "missing":
            message = "missing required argument"
        problems.append(Problem(where, message))
    return problems


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    effect: Effect = "read",
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    target: str | tuple[str, ...] | None = None,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    effect: Effect = "read",
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    target: str | tuple[str, ...] | None = None,
    description: str | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Declare a tool. ``@tool`` makes a ``read`` tool (safe to repeat).

    ``@tool(effect="write", timeout=10, retry=RetryPolicy(max_attempts=5), concurrency=1)``
    makes a tool that changes the world: it should take a :class:`ToolContext`
    parameter and use its ``idempotency_key``. ``concurrency`` bounds how many
    calls of this tool run at once across all runs of one engine, and ``rate``
    how many may start per second. ``target`` names the argument (or arguments)
    that say what a write acts on (a path, the recipients): policies and the
    effect ledger use it.
    """

    def make(f: Callable[..., Any]) -> Tool:
        t = _make_tool(f, name, effect, timeout, retry, concurrency, description)
        if rate is not None and rate <= 0:
            raise ConfigError(f"tool {t.name!r}: rate must be positive")
        names = (target,) if isinstance(target, str) else tuple(target or ())
        for arg in names:
            if arg not in t.args_model.model_fields:
                raise ConfigError(f"tool {t.name!r}: target {arg!r} is not one of its arguments")
        return dataclasses.replace(t, rate=rate, target=names) if rate or names else t

    return make(fn) if fn is not None else make


def _make_tool(
    fn: Callable[..., Any],
    name: str | None,
    effect: Effect,
    timeout: float | None,
    retry: RetryPolicy | None,
    concurrency: int | None,
    description: str | None,
) -> Tool:
    if effect not in ("read", "write"):
        raise ConfigError(f"tool {fn.__name__!r}: effect must be 'read' or 'write', not {effect!r}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"tool {fn.__name__!r}: timeout must be positive")
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"tool {fn.__name__!r}: concurrency must be at least 1")
    hints = _param_hints(fn)
    fields: dict[str, Any] = {}
    context_param = None
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {fn.__name__!r}: *args and **kwargs are not supported")
        annotation = hints.get(pname, Any)
        if annotation is ToolContext:
            context_param = pname
            continue
        default = ... if param.default is param.empty else param.default
        fields[pname] = (annotation, default)
    model = pydantic.create_model(
        f"{fn.__name__}_args",
        __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True),
        **fields,
    )
    doc = inspect.getdoc(fn) or ""
    return Tool(
        name=name or fn.__name__,
        fn=fn,
        description=description if description is not None else doc,
        effect=effect,
        timeout=timeout,
        retry=retry,
        concurrency=concurrency,
        args_model=model,
        context_param=context_param,
        is_async=inspect.iscoroutinefunction(fn),
    )


def _param_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The parameters' type hints. The return annotation is not needed, so it may name anything."""
    params = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k != "return"}
    shim = type("_Hints", (), {})()
    shim.__annotations__ = params
    shim.__globals__ = getattr(fn, "__globals__", {})
    try:
        return typing.get_type_hints(shim, include_extras=True)
    except Exception as exc:
        raise ConfigError(f"tool {fn.__name__!r}: cannot read its type hints: {exc}") from exc
