"""The workspace: a folder and its ``charter.yaml``; it builds the registry of its tools.

The file (:mod:`.config`) declares the workspace root (where file and git tools
may act), tool sources, MCP servers, settings for the built-in HTTP, email and
Slack tools, per-tool limits, and the policy that decides which writes need a
person's review. Every part is optional; without a file the workspace is the
current directory (or ``$CHARTER_WORKSPACE``) with defaults.

Secrets are not written in the file: a value such as ``${env:SMTP_PASSWORD}``
refers to the environment and is read only when a tool needs it (:mod:`.secrets`).

A workspace builds a :class:`WorkspaceRegistry` of its tools and MCP servers
(:meth:`Workspace.registry`); a run records the file among its tool sources,
and :func:`charter.tools.load_tools` loads it again through the source kind
registered here. The workspace that tools see is :func:`current`, set by the
engine around each attempt, so a built-in tool reads its settings without
taking parameters for them.

Imports tools (never the other way round) and errors; the built-in tools import
this package, and it never imports them.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

import pydantic
import yaml

from ..errors import ConfigError
from ..tools import Registry, Tool, load_tools, register_source_kind
from ..tools.mcp import MCPServer, MCPServerConfig
from . import secrets
from .config import (
    CONFIG_NAME,
    EmailConfig,
    HTTPConfig,
    Limit,
    Policy,
    Rule,
    SlackConfig,
    WorkspaceConfig,
)


class Workspace:
    """A workspace root with its configuration, and the MCP servers it started."""

    def __init__(self, root: Path, config: WorkspaceConfig | None = None, path: Path | None = None) -> None:
        self.root = root.resolve()
        self.config = config or WorkspaceConfig()
        self.path = path
        self._servers: dict[str, MCPServer] = {}

    @classmethod
    def default(cls) -> Workspace:
        return cls(Path(os.environ.get("CHARTER_WORKSPACE") or os.getcwd()))

    def secret(self, value: str | None, where: str) -> str | None:
        """A configured secret's value (``${env:NAME}`` expanded), registered for redaction."""
        if value is None:
            return None
        revealed = secrets.expand(value, where)
        secrets.register(revealed)
        return revealed

    def store_location(self) -> str | None:
        """The store the file names (``db:``): a URL as given (``${env:NAME}`` expanded, a password
        in it masked like any secret), a SQLite path from the file's folder; ``None`` if none."""
        db = self.secret(self.config.db, "db")
        if db is None or "://" in db or db == ":memory:":
            return db
        base = self.path.parent if self.path else Path.cwd()
        return str(base / db)

    def tool_sources(self) -> list[str]:
        """The configured tool files (relative to the file's folder) and modules."""
        base = self.path.parent if self.path else Path.cwd()
        out = []
        for src in self.config.tools:
            candidate = base / src
            out.append(str(candidate) if src.endswith(".py") or "/" in src or candidate.exists() else src)
        return out

    def servers(self) -> dict[str, MCPServer]:
        """The configured MCP servers (not started until a tool of theirs is needed)."""
        for name, cfg in self.config.mcp.items():
            if name not in self._servers:
                cwd = self.root if cfg.cwd is None else (self.root / cfg.cwd)
                self._servers[name] = MCPServer(name, cfg, cwd, self.secret)
        return self._servers

    def registry(self, base: Registry | None = None) -> WorkspaceRegistry:
        """The tools of this workspace (its tool sources and MCP servers), with ``base``'s."""
        return WorkspaceRegistry(self, base)

    def close(self) -> None:
        """Stop the MCP servers this workspace started."""
        for server in self._servers.values():
            server.close()


class WorkspaceRegistry(Registry):
    """A registry built by a workspace: the tools it was given, the workspace's tool sources and
    MCP servers, and the workspace's limits over the tools' own.

    Runs of these tools follow the workspace's policy, and their attempts see it
    as :func:`current`. Its file is one of the registry's sources, so a run that
    recorded it loads the same tools again.
    """

    def __init__(self, workspace: Workspace, base: Registry | None = None) -> None:
        self.workspace = workspace
        super().__init__()
        if base is not None:
            self.include(base)
        if workspace.tool_sources():
            for t in load_tools(workspace.tool_sources()):
                self.add(t)
        for server in workspace.servers().values():
            self.add_server(server)
        if workspace.path is not None and str(workspace.path) not in self.sources:
            self.sources.append(str(workspace.path))

    def add(self, t: Tool) -> None:
        limit = self.workspace.config.limits.get(t.name)
        if limit is not None:  # the workspace file's limits win over the tool's own
            t = dataclasses.replace(t, concurrency=limit.concurrency or t.concurrency, rate=limit.per_second or t.rate)
        super().add(t)


def load_workspace(path: str | Path | None = None) -> Workspace:
    """The workspace of ``path`` (a ``charter.yaml``), else of ``./charter.yaml``, else the default one."""
    if path is None:
        found = Path.cwd() / CONFIG_NAME
        if not found.is_file():
            return Workspace.default()
        path = found
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"workspace file not found: {path}")
    try:
        text = file.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    # Every secret the file names is masked from now on, in whatever this process writes or sends
    # (the log, the terminal, traces, the web page, a replay's report), even before a tool reads it:
    # a tool may read the variable itself, or another process may have written it into the log.
    secrets.register_named(text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, not {type(data).__name__}")
    if "steps" in data and not set(data) & set(WorkspaceConfig.model_fields):
        raise ConfigError(f"{path} is a plan, not a workspace file (charter.yaml) or a tools file: "
                          f"run it with `charter run {path} --tools TOOLS`")
    try:
        config = WorkspaceConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"invalid workspace file {path}:\n" + "\n".join(_problems(exc))) from None
    file = file.resolve()
    root = (file.parent / config.root).resolve()
    if not root.is_dir():
        raise ConfigError(f"{path}: root {config.root!r} is not a folder")
    return Workspace(root, config, file)


def _problems(exc: pydantic.ValidationError) -> Iterable[str]:
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        yield f"  - {where}: {message}"


_current: contextvars.ContextVar[Workspace | None] = contextvars.ContextVar("charter_workspace", default=None)


def current() -> Workspace:
    """The workspace of the attempt running now (the default one outside any run)."""
    ws = _current.get()
    return ws if ws is not None else Workspace.default()


def activate(ws: Workspace | None) -> contextvars.Token[Workspace | None]:
    """Make ``ws`` the :func:`current` workspace in this context."""
    return _current.set(ws)


# A run records its workspace file among its tool sources: loading them again loads the workspace's tools.
register_source_kind((".yaml", ".yml"), lambda source, base: load_workspace(source).registry(base))

__all__ = [
    "CONFIG_NAME",
    "EmailConfig",
    "HTTPConfig",
    "Limit",
    "MCPServerConfig",
    "Policy",
    "Rule",
    "SlackConfig",
    "Workspace",
    "WorkspaceConfig",
    "WorkspaceRegistry",
    "activate",
    "current",
    "load_workspace",
    "secrets",
]
