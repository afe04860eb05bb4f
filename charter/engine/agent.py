"""``agent`` steps: a bounded loop of model and tool calls, limited to the step's allowlist.

The model sees only the tools the plan allowed this step; a call of any other
tool is answered with an error, as data, and nothing runs. Every model call
and every tool call goes through the attempt's journal, so a resumed agent
step continues without paying for or repeating what was already done.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import PermanentError
from ..models.base import Message, Model, ModelRequest, ToolSpec
from ..tools import Registry, Tool, ToolContext
from .journal import Journal
from .llm import parse_json_answer

Perform = Callable[[Tool, dict[str, Any], ToolContext], Awaitable[Any]]


async def run_agent(args: dict[str, Any], model: Model, journal: Journal, registry: Registry, ctx: ToolContext,
                    perform: Perform) -> Any:
    """Loop: ask the model; run the tools it calls (if allowed); stop at its answer or at ``max_turns``."""
    allowed = {name: registry.get(name) for name in args["tools"]}
    specs = tuple(ToolSpec(t.name, t.description, t.schema()) for t in allowed.values() if t is not None)
    schema = args.get("schema")
    system = args.get("system") or "You complete the task with the tools you are given, then answer."
    if schema is not None:
        system += "\n\nYour final answer (when you call no tool) is one JSON value fitting:\n" + json.dumps(schema)
    prompt = args["prompt"] if isinstance(args["prompt"], str) else json.dumps(args["prompt"], indent=2)
    messages = [Message("system", system), Message("user", prompt)]
    max_turns = int(args.get("max_turns", 8))
    for _ in range(max_turns):
        response = await journal.complete(model, ModelRequest(tuple(messages), tools=specs))
        messages.append(Message("assistant", response.text, response.tool_calls))
        if not response.tool_calls:
            return response.text if schema is None else parse_json_answer(response.text, schema)
        for call in response.tool_calls:
            output, error = await _call_tool(call.name, call.arguments, allowed, journal, ctx, perform)
            content = json.dumps({"error": error} if error else {"result": output}, default=str)
            messages.append(Message("tool", content, tool_call_id=call.id))
    raise PermanentError(f"the agent did not finish within {max_turns} turns")


async def _call_tool(name: str, arguments: dict[str, Any], allowed: dict[str, Any], journal: Journal,
                     ctx: ToolContext, perform: Perform) -> tuple[Any, str | None]:
    tool = allowed.get(name)
    if tool is None:
        # The plan bounds the powers: not even recorded as a call, and nothing runs.
        return None, f"tool {name!r} is not allowed in this step (allowed: {', '.join(allowed)})"
    if "__unparsed__" in arguments:
        return None, f"the arguments are not a JSON object: {arguments['__unparsed__']!r}"

    async def call(key: str) -> Any:
        return await perform(tool, arguments, ToolContext(ctx.run_id, ctx.step_id, ctx.item, ctx.attempt, key))

    return await journal.tool(name, arguments, call)
