"""A model that answers from a script: for tests, and for the offline demo. It never pretends to be real."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import PermanentError
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
    """

    def __init__(self, script: Iterable[Answer] = (), *, name: str = "demo") -> None:
        self.name = f"scripted:{name}"
        self._script = list(script)
        self.requests: list[ModelRequest] = []
        self._ids = 0

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
            raise PermanentError(f"{self.name}: the script has no answer left for request {len(self.requests)}")
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
