"""Anthropic's Messages API through the ``anthropic`` SDK."""

from __future__ import annotations

import json
from typing import Any

from ._http import translate
from .base import Message, ModelRequest, ModelResponse, ToolCall, Usage, wire_name

ANSWER_TOOL = "answer"


class AnthropicModel:
    """A Claude model. Structured output is a forced call of a tool whose input schema is the schema."""

    def __init__(self, model: str, *, api_key: str, base_url: str | None = None, timeout: float = 120.0) -> None:
        import anthropic  # imported here: it takes a second to import

        self.model = model
        self.name = f"anthropic:{model}"
        self._errors = (anthropic.AnthropicError, ValueError)  # ValueError: a body that is not JSON
        self._client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        self.base_url = str(self._client.base_url).rstrip("/")

    async def complete(self, request: ModelRequest) -> ModelResponse:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": _messages([m for m in request.messages if m.role != "system"]),
        }
        if system:
            kwargs["system"] = system
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        tools = [{"name": wire_name(t.name), "description": t.description, "input_schema": t.parameters}
                 for t in request.tools]
        names = {wire_name(t.name): t.name for t in request.tools}
        if request.schema is not None:
            tools.append({"name": ANSWER_TOOL, "description": "Give the answer.", "input_schema": request.schema})
            kwargs["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
        if tools:
            kwargs["tools"] = tools
        try:
            resp = await self._client.messages.create(**kwargs)
        except self._errors as exc:
            raise translate(exc, "anthropic", self.base_url) from None
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in resp.content or ():
            kind = getattr(block, "type", "")
            if kind == "text":
                texts.append(block.text)
            elif kind == "tool_use":
                if request.schema is not None and block.name == ANSWER_TOOL:
                    texts = [json.dumps(block.input)]
                else:
                    calls.append(ToolCall(id=block.id, name=names.get(block.name, block.name),
                                          arguments=dict(block.input or {})))
        usage = resp.usage
        return ModelResponse(
            text="".join(texts),
            model=self.name,
            usage=Usage(getattr(usage, "input_tokens", 0) or 0, getattr(usage, "output_tokens", 0) or 0),
            tool_calls=tuple(calls),
            finish_reason=resp.stop_reason or "stop",
        )


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)  # results of parallel calls share one message
            else:
                out.append({"role": "user", "content": [block]})
        elif m.role == "assistant" and m.tool_calls:
            content: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            content += [{"type": "tool_use", "id": c.id, "name": wire_name(c.name), "input": c.arguments}
                        for c in m.tool_calls]
            out.append({"role": "assistant", "content": content})
        else:
            out.append({"role": m.role, "content": m.content})
    return out
