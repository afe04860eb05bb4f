"""OpenAI, and every server that speaks its Chat Completions API (Ollama, vLLM, llama.cpp, OpenRouter)."""

from __future__ import annotations

import json
from typing import Any

from ._http import translate
from .base import Message, ModelRequest, ModelResponse, ToolCall, Usage, wire_name


class OpenAIModel:
    """A model behind the ``openai`` SDK. ``max_retries=0``: Charter retries, on its own clock."""

    def __init__(
        self, model: str, *, api_key: str, base_url: str | None = None, provider: str = "openai",
        timeout: float = 120.0,
    ) -> None:
        import openai  # imported here: the CLI should not pay for it unless a model is used

        self.model = model
        self.provider = provider
        self.name = f"{provider}:{model}"
        self._errors = (openai.OpenAIError, ValueError)  # ValueError: a body that is not JSON
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [_message(m) for m in request.messages],
            "max_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.schema},
            }
        if request.tools:
            kwargs["tools"] = [
                {"type": "function", "function": {"name": wire_name(t.name), "description": t.description,
                                                  "parameters": t.parameters}}
                for t in request.tools
            ]
        try:
            resp = await self._client.chat.completions.create(**kwargs)
        except self._errors as exc:
            raise translate(exc, self.provider) from None
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
