"""How values are stored as JSON: compact, ASCII-only, with every known secret masked."""

from __future__ import annotations

import json
from typing import Any

from ..workspace.secrets import redact

# ASCII-only JSON: a lone surrogate (a file name that is not UTF-8, say) is stored as \udcxx, not an error.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def dumps(value: Any) -> str:
    """JSON as stored: every known secret masked (a no-op until some secret is used)."""
    return redact(_encode(value))
