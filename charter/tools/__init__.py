"""Tools: plain Python functions with type hints and a declared effect, and MCP servers' tools.

- :mod:`.tool`: ``@tool``, :class:`Tool`, :class:`ToolContext` (schemas from type hints, validation, invocation)
- :mod:`.registry`: :class:`Registry`, the tools a run may use by name; starts MCP servers when needed
- :mod:`.loading`: :func:`load_tools`, from tool files, modules and other kinds of source
- :mod:`.mcp`: MCP servers (stdio and streamable HTTP) through the ``mcp`` SDK

This package sits below the plan, planning, the engine and the workspace, and
imports none of them: the workspace builds registries from its file, not the
other way round.
"""

from .loading import load_tools, register_source_kind
from .registry import Registry
from .tool import Effect, Tool, ToolContext, jsonable, running_threads, tool

__all__ = [
    "Effect",
    "Registry",
    "Tool",
    "ToolContext",
    "jsonable",
    "load_tools",
    "register_source_kind",
    "running_threads",
    "tool",
]
