"""The registry: the tools a run may use, by name.

Besides plain tools it holds MCP servers whose tools join it when first needed
(``server.tool``), so a plan that does not use a server never starts it.
Starting a server takes a while (a process, a handshake), so async code awaits
:meth:`Registry.start` for the tools it is about to use and the event loop keeps
turning meanwhile. The plain lookups (``get``, ``in``, iterating) start a server
only where no event loop runs (scripts, the CLI's checks); on a loop's thread
they refuse to, rather than stall every run of the loop.

Imports the tool module, and the MCP module for its types only. A registry
knows nothing of the workspace that may have built it.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Iterable, Iterator

from ..errors import ConfigError
from .tool import Tool

if typing.TYPE_CHECKING:
    from .mcp import MCPServer


class Registry:
    """The tools a run may use, by name, and the MCP servers whose tools join when needed.

    ``sources`` are the tool files, modules and workspace files the tools came
    from: a run records them, so that another process can load its tools again.
    """

    def __init__(self, tools: Iterable[Tool] = (), sources: Iterable[str] = (),
                 servers: Iterable[MCPServer] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._servers: dict[str, MCPServer] = {}  # every server, listed or not: to close them
        self._unlisted: dict[str, MCPServer] = {}  # servers whose tools have not joined yet
        self.sources: list[str] = list(sources)
        for t in tools:
            self.add(t)
        for server in servers:
            self.add_server(server)

    def add(self, t: Tool) -> None:
        existing = self._tools.get(t.name)
        if existing is not None and existing.fn is not t.fn:
            raise ConfigError(
                f"two tools are named {t.name!r} (from {existing.source or 'code'} "
                f"and {t.source or 'code'})"
            )
        self._tools[t.name] = t

    def add_server(self, server: MCPServer) -> None:
        """Add an MCP server; its tools join when one of them is first needed (see :meth:`start`)."""
        self._servers[server.name] = server
        self._unlisted[server.name] = server

    def include(self, other: Registry) -> None:
        """Add another registry's tools, MCP servers (without starting them) and sources."""
        for t in other._tools.values():
            self.add(t)
        self._servers.update(other._servers)
        self._unlisted.update(other._unlisted)
        self.sources += [s for s in other.sources if s not in self.sources]

    # --- starting MCP servers -----------------------------------------------------------

    @property
    def unstarted(self) -> list[str]:
        """The MCP servers whose tools have not joined yet (not started by this registry)."""
        return list(self._unlisted)

    async def start(self, names: Iterable[str] | None = None) -> None:
        """Start the MCP servers that the tools ``names`` belong to (all of them by default), at once,
        and add their tools; the event loop turns while they start.

        A name that is still unknown after that makes every server start: the
        "unknown tool" error that follows names every tool there is.
        """
        if not self._unlisted:
            return
        if names is None:
            await self._list(list(self._unlisted))
            return
        wanted = list(names)
        await self._list([n.split(".", 1)[0] for n in wanted if "." in n])
        if any(n not in self._tools for n in wanted):
            await self._list(list(self._unlisted))

    async def _list(self, servers: list[str]) -> None:
        chosen = list(dict.fromkeys(s for s in servers if s in self._unlisted))
        listings = await asyncio.gather(*(self._unlisted[s].list_tools() for s in chosen), return_exceptions=True)
        failed: BaseException | None = None
        for name, listing in zip(chosen, listings, strict=True):
            if isinstance(listing, BaseException):
                failed = failed or listing
            else:
                self._join(name, listing)
        if failed is not None:
            raise failed

    def _join(self, server: str, tools: Iterable[Tool]) -> None:
        for t in tools:
            self.add(t)
        self._unlisted.pop(server, None)

    def _list_now(self, name: str) -> None:
        """Add the tools of server ``name``, starting it if need be: only where no event loop runs."""
        server = self._unlisted.get(name)
        if server is None:
            return
        if not server.listed and _on_a_loop():
            raise RuntimeError(
                f"MCP server {name!r} is not started: await registry.start() for the tools "
                "you need before looking them up from async code (starting it here would stall the event loop)"
            )
        self._join(name, server.tools())

    # --- lookups --------------------------------------------------------------------------

    def get(self, name: str) -> Tool | None:
        found = self._tools.get(name)
        if found is None and "." in name:
            self._list_now(name.split(".", 1)[0])
            found = self._tools.get(name)
        return found

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[Tool]:
        for name in list(self._unlisted):
            self._list_now(name)
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(list(iter(self)))

    def __bool__(self) -> bool:  # without listing (starting) MCP servers
        return bool(self._tools or self._servers)

    def names(self) -> list[str]:
        return sorted(t.name for t in self)

    def close(self) -> None:
        """Stop the MCP servers of this registry (they start again if used after)."""
        for server in self._servers.values():
            server.close()


def _on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
