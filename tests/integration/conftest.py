"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.loopback_http import Reply, Seen, Server


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[Seen], Reply]], Server]]:
    servers: list[Server] = []

    def start(respond: Callable[[Seen], Reply]) -> Server:
        servers.append(Server(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
