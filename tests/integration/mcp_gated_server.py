"""A stdio MCP server (made with the ``mcp`` SDK) that starts only once a file exists:
``python mcp_gated_server.py GATE``.

A test opens the gate from its event loop while the server is starting: if
starting the server blocked that loop, the gate would never open and the start
would time out.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("gated")


@server.tool()
def echo(text: str) -> str:
    """Say ``text`` back."""
    return text


if __name__ == "__main__":
    gate = Path(sys.argv[1])
    while not gate.exists():  # the condition the test's loop brings about
        time.sleep(0.01)
    server.run("stdio")
