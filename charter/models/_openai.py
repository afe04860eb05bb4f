"""OpenAI, and every server that speaks its Chat Completions API (Ollama, vLLM, llama.cpp, OpenRouter).

Servers differ in the structured output they accept: OpenAI takes a
``json_schema`` response format, llama-cpp-python only ``json_object`` (with a
``schema``) or ``text``, others some other subset. A request with a schema is
negotiated: ``json_schema`` first, then ``json_object`` with the schema, then
plain text with the schema in the prompt, each tried at once when the server
refuses the one before; what a server accepted is remembered for that model
(in this process) and tried first from then on. The answer is checked against
the schema whatever form asked for it. ``?response_format=FORM`` on a model
spec fixes the form and skips the negotiation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from ._http import translate
from .base import Message, ModelRequest, ModelResponse, ToolCall, Usage, wire_name

Form = Literal["json_schema", "json_object", "text"]
FORMS: tuple[Form, ...] = ("json_schema", "json_object", "text")
RESPONSE_FORMATS = ("auto", *FORMS)
# Answers that refuse a request the server read: the format may be what it refused. 500 too:
# llama-cpp-python answers 500 to a request body it cannot validate.
_MAY_REFUSE_FORM = frozenset({400, 415, 422, 500, 501})


@dataclass
class _Negotiated:
    """What one server said about the forms, for one model."""

    accepted: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)


_NEGOTIATED: dict[tuple[str, str], _Negotiated] = {}  # (base URL, model): shared by every instance
log = logging.getLogger("charter.models")


class OpenAIModel:
    """A model behind the ``openai`` SDK. ``max_retries=0``: Charter retries, on its own clock.

    ``response_format``: ``auto`` (negotiate) or one of ``json_schema``,
    ``json_object``, ``text`` to use that form only.
    """

    def __init__(
        self, model: str, *, api_key: str, base_url: str | None = None, provider: str = "openai",
        timeout: float = 120.0, response_format: str = "auto",
    ) -> None:
        import openai  # imported here: the CLI should not pay for it unless a model is used

        self.model = model
        self.provider = provider
        self.name = f"{provider}:{model}"
        self.response_format = response_format
        self._errors = (openai.OpenAIError, ValueError)  # ValueError: a body that is not JSON
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        self.base_url = str(self._client.base_url).rstrip("/")
        self._negotiated = _NEGOTIATED.setdefault((self.base_url, model), _Negotiated())

    def forms(self) -> tuple[Form, ...]:
        """The forms a schema request tries, in order."""
        if self.response_format != "auto":
            return (self.response_format,)  # type: ignore[return-value]
        return tuple(f for f in FORMS if f not in self._negotiated.refused) or ("text",)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        forms: tuple[Form | None, ...] = self.forms() if request.schema is not None else (None,)
        refused: list[Form] = []
        for n, form in enumerate(forms):
            try:
                resp = await self._client.chat.completions.create(**self._kwargs(request, form))
            except self._errors as exc:
                if n + 1 < len(forms) and getattr(exc, "status_code", None) in _MAY_REFUSE_FORM:
                    refused.append(form)  # type: ignore[arg-type]
                    continue  # at once: the next form is a different request, not a retry of this one
                raise translate(exc, self.provider, self.base_url) from None
            if form is not None:
                # A form that worked before is not marked refused: this refusal was about something else.
                newly = [f for f in refused if f not in self._negotiated.accepted | self._negotiated.refused]
                if newly:
                    log.info("%s at %s refused response_format %s; it accepts %s", self.name, self.base_url,
                             " and ".join(newly), form)
                self._negotiated.refused.update(newly)
                self._negotiated.accepted.add(form)
            return self._response(resp, request)
        raise AssertionError("unreachable: the last form raises or returns")

    def _kwargs(self, request: ModelRequest, form: Form | None) -> dict[str, Any]:
        messages = list(request.messages)
        if form is not None and form != "json_schema" and request.schema is not None:
            messages = _with_schema_in_prompt(messages, request.schema)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [_message(m) for m in messages],
            "max_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if form == "json_schema":
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "answer", "schema": request.schema}}
        elif form == "json_object":
            kwargs["response_format"] = {"type": "json_object", "schema": request.schema}
        if request.tools:
            kwargs["tools"] = [
                {"type": "function", "function": {"name": wire_name(t.name), "description": t.description,
                                                  "parameters": t.parameters}}
                for t in request.tools
            ]
        return kwargs

    def _response(self, resp: Any, request: ModelRequest) -> ModelResponse:
        if not getattr(resp, "choices", None):
            raise translate(ValueError("the answer has no choices"), self.provider)
        choice = resp.choices[0]
        msg = choice.message
        names = {wire_name(t.name): t.name for t in request.tools}
        calls = tuple(
            ToolCall(id=c.id, name=names.get(c.function.name, c.function.name),
                     arguments=_arguments(c.function.arguments))
            for c in (msg.tool_calls or ())
        )
        usage = resp.usage
        return ModelResponse(
            text=msg.content or "",
            model=self.name,
            usage=Usage(getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0),
            tool_calls=calls,
            finish_reason=choice.finish_reason or "stop",
        )


def _with_schema_in_prompt(messages: list[Message], schema: dict[str, Any]) -> list[Message]:
    """The conversation with the schema said in its system message (one system message, first:
    some chat templates refuse any other shape)."""
    text = json.dumps(schema)
    if any(m.role == "system" and text in m.content for m in messages):
        return messages  # already said (an llm step says it)
    ask = "Answer with one JSON value only, no prose, fitting this JSON schema:\n" + text
    if messages and messages[0].role == "system":
        return [Message("system", messages[0].content + "\n\n" + ask), *messages[1:]]
    return [Message("system", ask), *messages]


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": wire_name(c.name), "arguments": json.dumps(c.arguments)}}
            for c in m.tool_calls
        ]
    return out


def _arguments(raw: str | None) -> dict[str, Any]:
    """A tool call's arguments; what is not a JSON object is kept for the caller to reject."""
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {"__unparsed__": raw}
    return value if isinstance(value, dict) else {"__unparsed__": raw}
