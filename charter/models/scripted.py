"""A model that answers from a script: for tests, and for the offline demo. It never pretends to be real."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, PermanentError, RetryableError
from .base import ModelRequest, ModelResponse, ToolCall, Usage

Answer = str | dict[str, Any] | list[Any] | ModelResponse | BaseException | Callable[[ModelRequest], Any]


class ScriptedModel:
    """Answers requests in order from ``script``; its ``name`` is ``scripted:NAME``.

    Each entry is the answer to one request:

    * a ``str``: the text of the answer;
    * a ``dict`` or ``list``: sent as JSON text (what a schema-bound request wants);
    * ``ScriptedModel.call("tool", {...})``: an answer that calls a tool;
    * a :class:`ModelResponse`: sent as it is;
    * an exception (class or instance): raised, to test failures (``RetryableError`` ...);
    * a callable: called with the request, its result treated as above.

    ``requests`` keeps every request received, for assertions. When the script
    runs out, the model raises :class:`PermanentError` saying so.
    :meth:`from_file` reads a script from a YAML or JSON file (``--model scripted:FILE``).
    """

    def __init__(self, script: Iterable[Answer] = (), *, name: str = "demo") -> None:
        self.name = f"scripted:{name}"
        self._script = list(script)
        self.requests: list[ModelRequest] = []
        self._ids = 0
        self._file: str | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedModel:
        """The model answering from a script file; its name is ``scripted:PATH``. See :func:`load_script`."""
        model = cls(load_script(path), name=str(path))
        model._file = str(path)
        return model

    @staticmethod
    def call(tool: str, arguments: dict[str, Any] | None = None, text: str = "") -> ModelResponse:
        """An answer that asks for one tool call."""
        return ModelResponse(text=text, model="scripted", tool_calls=(ToolCall("", tool, arguments or {}),),
                             finish_reason="tool_calls")

    def add(self, *answers: Answer) -> None:
        self._script.extend(answers)

    @property
    def remaining(self) -> int:
        return len(self._script)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        if not self._script:
            hint = f"; add answers to {self._file}" if self._file else ""
            raise PermanentError(f"{self.name}: the script has no answer left for request {len(self.requests)} "
                                 f"(it had {len(self.requests) - 1}){hint}")
        answer: Any = self._script.pop(0)
        if callable(answer) and not isinstance(answer, type):
            answer = answer(request)
        if isinstance(answer, type) and issubclass(answer, BaseException):
            raise answer(f"{self.name}: scripted failure")
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, ModelResponse):
            calls = tuple(self._with_id(c) for c in answer.tool_calls)
            usage = answer.usage if answer.usage.total_tokens else self._usage(request, answer.text)
            return ModelResponse(answer.text, self.name, usage, calls, answer.finish_reason)
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return ModelResponse(text=text, model=self.name, usage=self._usage(request, text))

    def _with_id(self, c: ToolCall) -> ToolCall:
        if c.id:
            return c
        self._ids += 1
        return ToolCall(f"call_{self._ids}", c.name, c.arguments)

    @staticmethod
    def _usage(request: ModelRequest, text: str) -> Usage:
        # about four characters a token: enough for budgets to be exercised in tests
        prompt = sum(len(m.content) for m in request.messages)
        return Usage(input_tokens=max(1, prompt // 4), output_tokens=max(1, len(text) // 4))


_KINDS = ("text", "json", "call", "error")
_EXTRA = {"text": set(), "json": set(), "call": {"args"}, "error": {"retryable", "retry_after"}}


def load_script(path: str | Path) -> list[Answer]:
    """The answers in a YAML or JSON file: a list, one entry per model request, in order.

    An entry is a string (the text of the answer) or a mapping with one of:

    * ``text: ...``: the text of the answer;
    * ``json: ...``: any data, sent as JSON text (what a request with a schema, or the planner, wants);
    * ``call: TOOL`` with ``args: {...}``: an answer that calls a tool (in an ``agent`` step);
    * ``error: MESSAGE``: a failure, retryable unless ``retryable: false``, with an optional
      ``retry_after: SECONDS`` (as a server's ``Retry-After``).

    Raises :class:`ConfigError` naming the file and the entry when the file cannot be used.
    """
    import yaml

    where = f"scripted model file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist (scripted:FILE names a YAML or JSON list of answers)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where} is not valid YAML/JSON{at}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where} must hold a non-empty list of answers, one per model request")
    return [_answer(entry, f"{where}, answer {i}") for i, entry in enumerate(data, 1)]


def _answer(entry: Any, where: str) -> Answer:
    if isinstance(entry, str):
        return entry
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: an answer is a string or a mapping with one of {', '.join(_KINDS)}")
    kinds = [k for k in _KINDS if k in entry]
    if len(kinds) != 1:
        got = ", ".join(map(str, entry)) or "nothing"
        raise ConfigError(f"{where}: a mapping needs exactly one of {', '.join(_KINDS)} "
                          f"(to answer with JSON data, put it under 'json:'); it has {got}")
    kind = kinds[0]
    unknown = sorted(set(map(str, entry)) - {kind} - _EXTRA[kind])
    if unknown:
        raise ConfigError(f"{where}: {', '.join(unknown)} cannot go with {kind!r}")
    value = entry[kind]
    if kind == "text":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: 'text' must be a string (use 'json' for data)")
        return value
    if kind == "json":
        return value if isinstance(value, dict | list) else json.dumps(value)
    if kind == "call":
        args = entry.get("args", {})
        if not isinstance(value, str) or not value or not isinstance(args, dict):
            raise ConfigError(f"{where}: 'call' names a tool, and 'args' is a mapping of its arguments")
        return ScriptedModel.call(value, args)
    retry_after = entry.get("retry_after")
    if retry_after is not None and (isinstance(retry_after, bool) or not isinstance(retry_after, int | float)
                                    or retry_after < 0):
        raise ConfigError(f"{where}: 'retry_after' is a number of seconds")
    retryable = entry.get("retryable", True)
    if not isinstance(retryable, bool):
        raise ConfigError(f"{where}: 'retryable' is true or false")
    if not retryable:
        return PermanentError(str(value))
    return RetryableError(str(value), next_retry_delay=retry_after)
