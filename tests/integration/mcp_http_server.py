"""A streamable-HTTP MCP server (made with the ``mcp`` SDK) for tests: ``python mcp_http_server.py PORT TOKEN``.

Every request must carry ``Authorization: Bearer TOKEN``, so a test can show
that the workspace file's headers (with secrets from the environment) reach it.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("notes")
NOTES: list[str] = []


@server.tool()
def add_note(text: str) -> dict[str, Any]:
    """Keep a note; returns how many there are."""
    NOTES.append(text)
    return {"count": len(NOTES)}


@server.tool()
def count_notes() -> int:
    """How many notes were kept."""
    return len(NOTES)


def require_token(app: Any, token: str) -> Any:
    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization", b"").decode() != f"Bearer {token}":
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"missing or wrong token"})
                return
        await app(scope, receive, send)

    return guarded


if __name__ == "__main__":
    port, token = int(sys.argv[1]), sys.argv[2]
    app = require_token(server.streamable_http_app(), token)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
