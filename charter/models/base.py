"""What every model looks like to Charter: one small async interface and plain data.

A provider turns a :class:`ModelRequest` into a :class:`ModelResponse`. Requests
and responses serialise to JSON so that every call can be written into a run's
log and replayed instead of paid for again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A model's request to call a tool."""

    id: str
    name: str
    arguments: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolCall:
        return cls(id=data["id"], name=data["name"], arguments=dict(data["arguments"]))


@dataclass(frozen=True)
class Message:
    """One message of a conversation. ``tool`` messages answer a :class:`ToolCall` by id."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_json() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(
            role=data["role"], content=data.get("content", ""),
            tool_calls=tuple(ToolCall.from_json(c) for c in data.get("tool_calls", ())),
            tool_call_id=data.get("tool_call_id"),
        )


@dataclass(frozen=True)
class ToolSpec:
    """A tool as a model sees it: a name, what it does, and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ModelRequest:
    """What is asked of a model. With ``schema``, the answer must be JSON fitting it."""

    messages: tuple[Message, ...]
    schema: dict[str, Any] | None = None
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int = 4096
    temperature: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"messages": [m.to_json() for m in self.messages], "max_tokens": self.max_tokens}
        if self.schema is not None:
            out["schema"] = self.schema
        if self.tools:
            out["tools"] = [{"name": t.name, "description": t.description, "parameters": t.parameters}
                            for t in self.tools]
        if self.temperature is not None:
            out["temperature"] = self.temperature
        return out


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class ModelResponse:
    """A model's answer: text (JSON text when a schema was asked for), tool calls, usage."""

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text, "model": self.model, "finish_reason": self.finish_reason,
            "usage": {"input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens},
            "tool_calls": [c.to_json() for c in self.tool_calls],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelResponse:
        usage = data.get("usage") or {}
        return cls(
            text=data.get("text", ""), model=data.get("model", ""),
            usage=Usage(usage.get("input_tokens", 0), usage.get("output_tokens", 0)),
            tool_calls=tuple(ToolCall.from_json(c) for c in data.get("tool_calls", ())),
            finish_reason=data.get("finish_reason", "stop"),
        )


class Model(Protocol):
    """A language model behind one async call. ``name`` is ``provider:model``."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer ``request``. Raise :class:`~charter.RetryableError` for what may pass
        (rate limits, overload, timeouts), :class:`~charter.PermanentError` for what will not."""
        ...


def wire_name(name: str) -> str:
    """A tool name as the providers accept it (letters, digits, ``_``, ``-``; at most 64):
    an MCP tool ``git.git_status`` is offered as ``git__git_status``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name.replace(".", "__"))[:64]
