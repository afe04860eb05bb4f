"""The workspace file's settings (``charter.yaml``), checked by Pydantic.

Each part is optional: the root, tool sources, MCP servers, settings of the
built-in HTTP, email and Slack tools, per-tool limits, and the policy. Imports
the MCP module for its server settings and nothing above it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import pydantic

from ..tools.mcp import MCPServerConfig

if TYPE_CHECKING:
    from ..tools import Tool

CONFIG_NAME = "charter.yaml"


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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
    db: str | None = None  # the store: a SQLite path (from the file's folder) or a postgresql:// URL
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
