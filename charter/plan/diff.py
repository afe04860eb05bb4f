"""A plan against its revision, as people read it."""

from __future__ import annotations

import difflib
from typing import Any

import yaml


def plan_diff(old: dict[str, Any], new: dict[str, Any], old_version: int) -> str:
    """A unified diff of two plans (as JSON data), as YAML, for people."""
    def lines(plan: dict[str, Any]) -> list[str]:
        return yaml.safe_dump(plan, sort_keys=False, allow_unicode=True, width=100).splitlines(keepends=True)

    return "".join(difflib.unified_diff(lines(old), lines(new), fromfile=f"plan v{old_version}",
                                        tofile=f"plan v{old_version + 1}"))
