"""MCP servers as tools, through the ``mcp`` SDK.

Each configured server (:class:`MCPServerConfig`, from ``charter.yaml``)
becomes a group of tools named ``server.tool``, with the schemas the server
lists and the effect the configuration declares (``read`` unless declared
``write``, or the server marks the tool destructive). A server starts the first
time one of its tools is needed, is started again after it dies, and stops when
closed (or at interpreter exit).

The connection lives on a thread of its own with its own event loop, so the
same connection serves every caller, whatever loop they run on: async callers
await the start (:meth:`MCPServer.list_tools`, :meth:`MCPServer.call`) while
their loop goes on; code without a loop may wait for it (:meth:`MCPServer.tools`).

Imports the tool module only. Secrets in the configuration are resolved by
a function the server is given, so it knows nothing of where they come from.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic

from ..errors import ConfigError, PermanentError, Problem, RetryableError, ToolArgumentError
from .tool import Tool, ToolContext, jsonable

if TYPE_CHECKING:
    import jsonschema
    from mcp import Client

_live: weakref.WeakSet[MCPServer] = weakref.WeakSet()

# How a server resolves a configured value that may name a secret (``${env:NAME}``): value, where -> value.
SecretResolver = Callable[[str, str], "str | None"]


class MCPServerConfig(pydantic.BaseModel):
    """One MCP server: a stdio ``command`` or a streamable-HTTP ``url`` (``mcp:`` in ``charter.yaml``)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    command: list[str] | None = None
    url: str | None = None
    env: dict[str, str] = {}
    cwd: str | None = None
    headers: dict[str, str] = {}
    allow: list[str] | None = None
    effects: dict[str, Literal["read", "write"]] = {}
    targets: dict[str, str] = {}
    timeout: float = pydantic.Field(default=60.0, gt=0)
    start_timeout: float = pydantic.Field(default=30.0, gt=0)

    @pydantic.field_validator("command", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return v.split() if isinstance(v, str) else v

    @pydantic.model_validator(mode="after")
    def _one_transport(self) -> MCPServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either 'command' (stdio) or 'url' (streamable HTTP), not both or neither")
        if self.command is not None and not self.command:
            raise ValueError("'command' is empty")
        return self


class _AnyArgs(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


@dataclass(frozen=True)
class MCPTool(Tool):
    """A tool of an MCP server: arguments checked against the server's JSON schema."""

    input_schema: Mapping[str, Any] | None = None
    server: MCPServer | None = None
    remote_name: str = ""

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        problems = [
            Problem(".".join(str(p) for p in err.absolute_path), err.message)
            for err in _validator(self.input_schema or {}).iter_errors(args)
        ]
        if problems:
            raise ToolArgumentError(self.name, problems)
        return dict(args)

    def check_arg(self, name: str, value: Any) -> list[Problem]:
        props = (self.input_schema or {}).get("properties", {})
        if name not in props:
            if (self.input_schema or {}).get("additionalProperties", True) is False or props:
                return [Problem(name, f"tool {self.name!r} has no argument {name!r}")]
            return []
        return [Problem(name, err.message) for err in _validator(props[name]).iter_errors(value)]

    def required_args(self) -> list[str]:
        return list((self.input_schema or {}).get("required", []))

    def has_arg(self, name: str) -> bool:
        schema = self.input_schema or {}
        props = schema.get("properties", {})
        return name in props or (not props and schema.get("additionalProperties", True) is not False)

    def schema(self) -> dict[str, Any]:
        return dict(self.input_schema or {"type": "object", "properties": {}})

    async def invoke(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        assert self.server is not None
        checked = self.validate_args(args)
        return jsonable(self.name, await self.server.call(self.remote_name, checked))


def _validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    import jsonschema  # not before an MCP tool is checked: it slows every start of the CLI

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


class MCPServer:
    """One configured MCP server and its connection (none until first needed).

    ``secret`` resolves a configured header or environment value that may name
    a secret; it is asked only when the server starts.
    """

    def __init__(self, name: str, cfg: MCPServerConfig, cwd: Path, secret: SecretResolver) -> None:
        self.name = name
        self.cfg = cfg
        self.cwd = cwd
        self.secret = secret
        self.starts = 0
        self._lock = threading.Lock()
        self._listing_lock = threading.Lock()
        self._listing: Future[list[Any]] | None = None  # shared by every caller waiting for the first listing
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        self._stop: asyncio.Event | None = None
        self._session: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None
        self._tools: list[MCPTool] | None = None
        # the server's stderr, kept to explain a failed start
        self._errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        _live.add(self)

    # --- the catalog ----------------------------------------------------------------

    @property
    def listed(self) -> bool:
        """Whether the server's tools are known (then :meth:`tools` answers without waiting)."""
        return self._tools is not None

    def tools(self) -> list[MCPTool]:
        """The server's tools as Charter tools, starting the server on first use and waiting for it.

        For code without an event loop; async code awaits :meth:`list_tools`.
        """
        if self._tools is None:
            with self._listing_errors() as timeout:
                listing = self._first_listing().result(timeout)
            self._tools = self._catalog(listing)
        return self._tools

    async def list_tools(self) -> list[MCPTool]:
        """The server's tools as Charter tools, starting the server on first use; the caller's loop
        goes on meanwhile (the start happens on the server's own thread)."""
        if self._tools is None:
            with self._listing_errors() as timeout:
                pending = asyncio.wrap_future(self._first_listing())
                # shielded: giving up waiting must not stop a start that other callers may share
                listing = await asyncio.wait_for(asyncio.shield(pending), timeout)
            self._tools = self._catalog(listing)
        return self._tools

    @contextlib.contextmanager
    def _listing_errors(self) -> Iterator[float]:
        """How long a first listing may take; a failure to list is a configuration problem."""
        timeout = self.cfg.start_timeout + self.cfg.timeout
        try:
            yield timeout
        except TimeoutError:
            raise ConfigError(f"MCP server {self.name!r} did not answer within {timeout:g}s") from None
        except (PermanentError, RetryableError) as exc:
            raise ConfigError(str(exc)) from None

    def _first_listing(self) -> Future[list[Any]]:
        """The listing under way, or a new one if there is none or the last one failed."""
        with self._listing_lock:
            last = self._listing
            if last is None or (last.done() and (last.cancelled() or last.exception() is not None)):
                self._listing = self._submit(self._list())
            assert self._listing is not None
            return self._listing

    def _catalog(self, listing: list[Any]) -> list[MCPTool]:
        unknown = set(self.cfg.allow or ()) - {t.name for t in listing}
        if unknown:
            raise ConfigError(f"MCP server {self.name!r} has no tools named {', '.join(sorted(unknown))} "
                              f"(it has: {', '.join(t.name for t in listing)})")
        return [self._make_tool(t) for t in listing if self._allowed(t.name)]

    def _allowed(self, name: str) -> bool:
        return self.cfg.allow is None or name in self.cfg.allow

    def _make_tool(self, listed: Any) -> MCPTool:
        annotations = listed.annotations
        declared = self.cfg.effects.get(listed.name)
        destructive = annotations is not None and (
            annotations.destructive_hint is True or annotations.read_only_hint is False
        )
        effect = declared or ("write" if destructive else "read")
        target = (self.cfg.targets[listed.name],) if listed.name in self.cfg.targets else ()
        return MCPTool(
            name=f"{self.name}.{listed.name}", fn=_not_callable, description=listed.description or "",
            effect=effect, timeout=self.cfg.timeout, retry=None, concurrency=None, args_model=_AnyArgs,
            context_param=None, is_async=True, target=target,
            input_schema=dict(listed.input_schema or {}), server=self, remote_name=listed.name,
        )

    # --- calls ------------------------------------------------------------------------

    async def call(self, tool: str, args: dict[str, Any]) -> Any:
        """Call ``tool`` on the server and return its result as data; a tool error fails for good."""
        return await asyncio.wrap_future(self._submit(self._call(tool, args)))

    async def _call(self, tool: str, args: dict[str, Any]) -> Any:
        client = await self._connected()
        try:
            result = await client.call_tool(tool, args, read_timeout_seconds=self.cfg.timeout)
        except Exception as exc:
            # The connection may be gone (a dead process, a dropped HTTP session): start afresh next time.
            await self._shutdown()
            raise RetryableError(f"MCP server {self.name!r}: {type(exc).__name__}: {exc} "
                                 "(it is started again for the next attempt)") from None
        texts = [getattr(c, "text", None) for c in result.content]
        text = "\n".join(t for t in texts if t is not None)
        if result.is_error:
            raise PermanentError(f"{self.name}.{tool} failed: {text or 'no message'}")
        if result.structured_content is not None:
            return result.structured_content
        if len(texts) == 1 and text:
            try:
                return json.loads(text)
            except ValueError:
                return text
        return text if all(t is not None for t in texts) else [c.model_dump(mode="json") for c in result.content]

    async def _list(self) -> list[Any]:
        client = await self._connected()
        listing = await client.list_tools()
        tools = list(listing.tools)
        while listing.next_cursor:
            listing = await client.list_tools(cursor=listing.next_cursor)
            tools += listing.tools
        return tools

    async def _connected(self) -> Client:
        """The live client, starting (or restarting) the server if there is none. Runs on the server's loop."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._client is not None and self._session is not None and not self._session.done():
                return self._client
            return await self._start()

    async def _start(self) -> Client:
        ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._session = asyncio.ensure_future(self._hold(ready, self._stop))
        try:
            self._client = await asyncio.wait_for(asyncio.shield(ready), self.cfg.start_timeout)
        except TimeoutError:
            self._stop.set()
            raise RetryableError(f"MCP server {self.name!r} did not start within {self.cfg.start_timeout:g}s"
                                 + self._stderr_tail()) from None
        except Exception as exc:
            raise PermanentError(f"MCP server {self.name!r} could not be started: {type(exc).__name__}: "
                                 f"{exc}{self._stderr_tail()}") from None
        self.starts += 1
        assert self._client is not None
        return self._client

    async def _hold(self, ready: asyncio.Future[Client], stop: asyncio.Event) -> None:
        """Keep one connection open until ``stop`` (the SDK wants it entered and left in one task)."""
        from mcp import Client

        try:
            async with Client(self._transport()) as client:
                ready.set_result(client)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._client = None

    def _transport(self) -> Any:
        if self.cfg.url is not None:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            headers = {k: self.secret(v, f"mcp.{self.name}.headers.{k}") or "" for k, v in
                       self.cfg.headers.items()}
            http = httpx2.AsyncClient(headers=headers, timeout=self.cfg.timeout)
            return streamable_http_client(self.cfg.url, http_client=http)
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        assert self.cfg.command is not None
        env = {k: self.secret(v, f"mcp.{self.name}.env.{k}") or "" for k, v in self.cfg.env.items()}
        params = StdioServerParameters(command=self.cfg.command[0], args=self.cfg.command[1:], env=env or None,
                                       cwd=str(self.cwd))
        return stdio_client(params, errlog=self._errlog)

    def _stderr_tail(self) -> str:
        try:
            self._errlog.seek(0)
            tail = self._errlog.read()[-800:].strip()
        except (OSError, ValueError):
            return ""
        return f"\n--- its stderr ---\n{tail}" if tail else ""

    # --- the thread ---------------------------------------------------------------------

    def _submit(self, coro: Any) -> Future[Any]:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name=f"mcp-{self.name}",
                                                daemon=True)
                self._thread.start()
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _shutdown(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._session is not None:
            await asyncio.wait([self._session], timeout=10)

    def close(self) -> None:
        """Stop the server (if started) and the connection's thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(15)
        except Exception:
            pass  # it is going away either way
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()
        # bound to the loop just stopped: a later call makes new ones on a new loop
        self._starting = self._stop = self._session = self._client = None
        with self._listing_lock:
            if self._listing is not None and not self._listing.done():
                self._listing.cancel()  # its loop is gone: it would never finish
                self._listing = None

    @property
    def running(self) -> bool:
        return self._session is not None and not self._session.done()


def _not_callable(**_: Any) -> Any:
    raise PermanentError("an MCP tool is called through its server, not directly")


@atexit.register
def _close_all() -> None:
    for server in list(_live):
        server.close()
