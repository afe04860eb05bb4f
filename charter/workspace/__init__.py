"""The workspace: a folder and its ``charter.yaml``.

The file declares the workspace root (where file and git tools may act), tool
sources, MCP servers, settings for the built-in HTTP, email and Slack tools,
per-tool limits, and the policy that decides which writes need a person's
review. Every part is optional; without a file the workspace is the current
directory (or ``$CHARTER_WORKSPACE``) with defaults.

Secrets are not written in the file: a value such as ``${env:SMTP_PASSWORD}``
refers to the environment and is read only when a tool needs it.

The workspace that tools see is :func:`current`, set by the engine around each
attempt, so a built-in tool reads its settings without taking parameters for
them.
"""

from __future__ import annotations

import contextvars
import fnmatch
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic
import yaml

from ..errors import ConfigError
from . import secrets

if TYPE_CHECKING:
    from ..tools import Tool
    from ..tools.mcp import MCPServer

CONFIG_NAME = "charter.yaml"


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MCPServerConfig(_Model):
    """One MCP server: a stdio ``command`` or a streamable-HTTP ``url``."""

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


class HTTPConfig(_Model):
    allow_private: bool = False
    max_bytes: int = pydantic.Field(default=2_000_000, gt=0)
    timeout: float = pydantic.Field(default=30.0, gt=0)


class EmailConfig(_Model):
    host: str
    port: int = pydantic.Field(default=587, gt=0, lt=65536)
    sender: str = pydantic.Field(alias="from")
    username: str | None = None
    password: str | None = None  # usually ${env:...}
    tls: Literal["none", "starttls", "tls"] = "starttls"
    timeout: float = pydantic.Field(default=30.0, gt=0)


class SlackConfig(_Model):
    webhook_url: str | None = None  # a secret: usually ${env:SLACK_WEBHOOK_URL}
    token: str | None = None  # a secret: usually ${env:SLACK_BOT_TOKEN}
    api_url: str = "https://slack.com/api"
    channel: str | None = None
    timeout: float = pydantic.Field(default=30.0, gt=0)


class Limit(_Model):
    """How many calls of one tool may run at once, and how often one may start."""

    concurrency: int | None = pydantic.Field(default=None, ge=1)
    per_second: float | None = pydantic.Field(default=None, gt=0)


class Rule(_Model):
    """Writes of ``tool`` (a name or glob) allowed without review, optionally only to matching targets."""

    tool: str
    target: str | None = None


class Policy(_Model):
    """Which plans ``charter do`` approves without asking, and which writes need no person's review.

    ``approve``: ``never`` (a person reviews every plan), ``reads`` (plans that
    only read are approved), ``policy`` (also plans whose every write is allowed
    by a rule of ``allow``).
    """

    approve: Literal["never", "reads", "policy"] = "never"
    allow: list[Rule] = []

    def allows(self, tool: Tool, args: Mapping[str, Any]) -> bool:
        """Whether a write of ``tool`` with these (resolved) arguments may run without a person's review."""
        targets = tool.targets_of(args)
        for rule in self.allow:
            if not fnmatch.fnmatchcase(tool.name, rule.tool):
                continue
            if rule.target is None:
                return True
            if targets and all(_matches(t, rule.target) for t in targets):
                return True
        return False


def _matches(target: Any, pattern: str) -> bool:
    # ``*`` matches ``/`` too, so "notes/*" would match "notes/../secrets": a target that climbs never matches
    if not isinstance(target, str) or "\x00" in target:
        return False
    climbs = ".." in target.replace("\\", "/").split("/")
    return not climbs and fnmatch.fnmatchcase(target, pattern)


class WorkspaceConfig(_Model):
    root: str = "."
    tools: list[str] = []
    mcp: dict[str, MCPServerConfig] = {}
    http: HTTPConfig = HTTPConfig()
    email: EmailConfig | None = None
    slack: SlackConfig | None = None
    limits: dict[str, Limit] = {}
    policy: Policy = Policy()

    @pydantic.field_validator("mcp")
    @classmethod
    def _names(cls, v: dict[str, MCPServerConfig]) -> dict[str, MCPServerConfig]:
        for name in v:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"MCP server name {name!r}: use letters, digits, '-' and '_'")
        return v


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
        from ..tools.mcp import MCPServer

        for name, cfg in self.config.mcp.items():
            if name not in self._servers:
                cwd = self.root if cfg.cwd is None else (self.root / cfg.cwd)
                self._servers[name] = MCPServer(name, cfg, cwd, self)
        return self._servers

    def close(self) -> None:
        """Stop the MCP servers this workspace started."""
        for server in self._servers.values():
            server.close()


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
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
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
