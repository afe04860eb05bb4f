"""Hosts on a real network stack, on one machine: network namespaces joined by a bridge (as root).

Each :class:`Host` is a namespace with one veth link to the bridge and an address
of its own; the test process reaches every host from the bridge's address. A
host's link can be cut (taken down on the bridge's side: its packets are dropped,
as a partition drops them) and healed. Everything is removed on exit.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


def available() -> str | None:
    """Why network namespaces cannot be made here (``None`` if they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Host:
    name: str
    ns: str
    address: str
    _outer: str  # the veth end on the bridge

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` as run inside this host's namespace."""
        return ["ip", "netns", "exec", self.ns, *args]

    def popen(self, args: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(args), **kw)

    def run(self, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.command(args), **kw)

    def cut(self) -> None:
        """Drop every packet to and from this host (its link goes down; sockets stay open)."""
        _ip("link", "set", self._outer, "down")

    def heal(self) -> None:
        _ip("link", "set", self._outer, "up")


class Network:
    def __init__(self) -> None:
        self.tag = secrets.token_hex(2)
        self.prefix = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}"
        self.bridge = f"chbr{self.tag}"
        self.gateway = f"{self.prefix}.1"
        self.hosts: list[Host] = []

    def open(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def host(self, name: str) -> Host:
        n = len(self.hosts) + 2
        ns, inner, outer = f"ch{self.tag}{name}", f"chi{self.tag}{n}", f"cho{self.tag}{n}"
        _ip("netns", "add", ns)
        _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        address = f"{self.prefix}.{n}"
        for args in (["addr", "add", f"{address}/24", "dev", inner], ["link", "set", inner, "up"],
                     ["link", "set", "lo", "up"]):
            _ip("netns", "exec", ns, "ip", *args)
        host = Host(name, ns, address, outer)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for h in self.hosts:
            subprocess.run(["ip", "netns", "pids", h.ns], capture_output=True)
            subprocess.run(["ip", "netns", "del", h.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


@contextmanager
def network() -> Iterator[Network]:
    net = Network()
    try:
        net.open()
        yield net
    finally:
        net.close()
