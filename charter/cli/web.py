"""`charter ui`: serve the web page and JSON API over a store (charter/web), until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import signal
import socket
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import quote

import typer
from rich.markup import escape

from ..errors import CharterError
from .shared import ConcOpt, DbOpt, RunToolsOpt, StepModelOpt, command, err, fail, open_app, out


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: a free port), or exit 2 saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise fail(ValueError(f"--host {host}: not an address this machine can listen on ({exc.strerror})")) from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: a response's head and body go out at once, not 40 ms apart
    # (Nagle's algorithm waiting on the browser's delayed acknowledgement).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            why = f"port {port} on {host} is taken by another program: choose another with --port (0: any free one)"
        elif exc.errno == errno.EACCES:
            why = f"port {port} on {host} needs privileges this user lacks: choose one above 1023 (0: any free one)"
        else:
            why = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        raise fail(ValueError(why)) from None
    sock.setblocking(False)
    return sock


@command("ui")
async def ui(
    db: DbOpt = None,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Where to listen; other machines reach it only "
                                      "if you choose an address of theirs' network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", min=0, max=65535, help="The port (0: any free one).")] = 8765,
    token: Annotated[str | None, typer.Option(
        metavar="TOKEN", envvar="CHARTER_UI_TOKEN", show_default=False,
        help="The token every request must carry [default: $CHARTER_UI_TOKEN, else a new random one].")] = None,
    tools: RunToolsOpt = None,
    model: StepModelOpt = None,
    concurrency: ConcOpt = 100,
) -> None:
    """Serve a web page of the store's runs, live, with the actions of the CLI; prints its address.

    Runs approved, resumed or retried from the page run in this process, as `charter resume` would."""
    from ..web import create_app

    _Server = _server_class()

    if token is not None and len(token) < 8:
        raise fail(ValueError("--token must be at least 8 characters (or leave it out for a random one)"))
    token = token or secrets.token_urlsafe(24)
    charter = open_app(db, tools, concurrency, with_workspace=True, model=model, mode="rw")
    try:
        await charter.runs(limit=1)  # the store is there and reachable before the page says it is
    except CharterError as exc:
        charter.close()
        raise fail(exc) from None
    sock = _bind(host, port)
    app = create_app(charter, token)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    base = escape(f"http://{shown}:{bound_port}")
    out.print(f"Charter UI for {escape(charter.location)}\n"
              f"  open: {base}/?token={escape(quote(token, safe=''))}\n"
              f"  API:  {base}/docs (send `Authorization: Bearer TOKEN`)\n"
              "Ctrl-C stops it (runs it was running pause, and `charter resume` continues them).", soft_wrap=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]note:[/] listening on {escape(host)}: anyone who can reach it and has the token can "
                  "act on runs; prefer 127.0.0.1 and an SSH tunnel")
    import uvicorn

    config = uvicorn.Config(app, log_level=os.environ.get("CHARTER_UI_LOG", "warning"), lifespan="on",
                            timeout_graceful_shutdown=2, access_log=False)
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # a clean stop: runs driven here pause, then exit 0
        loop.add_signal_handler(sig, server.stop)
    try:
        await server.serve(sockets=[sock])
    finally:
        charter.close()
    raise typer.Exit(0)


def _server_class() -> type:
    """uvicorn's server, with Ctrl-C and SIGTERM handled by the command (uvicorn would raise
    the signal again once stopped, and Python would print a traceback). Made on use: uvicorn
    is imported only by this command, so that every other command starts fast."""
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn's server, with Ctrl-C and SIGTERM handled by the command (uvicorn would raise
        the signal again once stopped, and Python would print a traceback)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        def stop(self) -> None:
            if self.should_exit:  # asked twice: leave at once
                self.force_exit = True
            self.should_exit = True

    return _Server
