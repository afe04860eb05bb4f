"""A real `charter ui` server for tests: uvicorn on a free loopback port, over a test's own Charter.

:func:`serving` runs it on the test's event loop (the runs the page acts on are driven on
that loop too, as in `charter ui`); :class:`ThreadedUI` runs it on a thread of its own, for
clients that block (schemathesis). Tools that tests' runs use are here too, at the top level
of an importable module, so a run records where to load them from.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from charter import Charter, PermanentError, ToolContext, tool
from charter.web import create_app

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ACT = {"X-Charter-Action": "1"}

#: what the tools below read: flip ``broken`` to make ``fragile`` work; set ``gates[name]`` to let ``held`` go on
switches: dict[str, Any] = {"broken": True, "gates": {}}


@tool
def echo(text: str) -> str:
    """Give the text back."""
    return text


@tool
def fragile(text: str) -> str:
    """Fail for good while ``switches['broken']``; then give the text back."""
    if switches["broken"]:
        raise PermanentError(f"broken on {text!r}")
    return text


@tool
async def held(name: str) -> str:
    """Wait until the test opens this call's gate (an asyncio.Event in ``switches['gates']``)."""
    gate = switches["gates"].setdefault(name, asyncio.Event())
    await gate.wait()
    return name


@tool(effect="write")
def record(note: str, ctx: ToolContext) -> dict[str, Any]:
    """A write: returns what it would have written."""
    return {"written": note, "key": ctx.idempotency_key}


TOOLS = [echo, fragile, held, record]


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as `charter ui` does (see charter/cli/web.py)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _server(charter: Charter) -> tuple[uvicorn.Server, socket.socket]:
    config = uvicorn.Config(create_app(charter, TOKEN), log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=1)
    return uvicorn.Server(config), free_socket()


@asynccontextmanager
async def serving(charter: Charter) -> AsyncIterator[str]:
    """Serve ``charter`` on this loop; yields the base URL. Stopped (runs it drives paused) at the end."""
    server, sock = _server(charter)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)  # polls a condition (uvicorn has no started event)
    if task.done():
        task.result()  # it failed to start: say why
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


def client(base: str, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers=AUTH, timeout=20, **kw)


class ThreadedUI:
    """The UI over the store at ``db`` on a thread of its own (its own loop and Charter)."""

    def __init__(self, db: str | Path) -> None:
        self.db = db
        self.url = ""
        self._ready = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._main, name="charter-ui-test", daemon=True)

    def __enter__(self) -> ThreadedUI:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the UI did not start within 20 s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(20)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        with Charter(self.db, tools=TOOLS, mode="rw") as charter:
            server, sock = _server(charter)
            self._server = server
            self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            loop = asyncio.get_running_loop()
            task = loop.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.01)  # polls a condition (uvicorn has no started event)
            self._ready.set()
            await task
