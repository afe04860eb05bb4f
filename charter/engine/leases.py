"""Who runs a run: owner ids and when a claim on a run may be taken over."""

from __future__ import annotations

import os
import secrets
import socket


def new_owner() -> str:
    """An engine's owner id: ``host:pid:token``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def claimable(owner: str | None, lease_expires: float | None, now: float) -> bool:
    """Whether a run's claim can be taken: no owner, a dead process on this machine, or,
    for an owner elsewhere (or in this very process), an expired lease.

    A live process here keeps its run even past its lease: a blocked event loop or a
    clock jump must not let a second process run the same steps at the same time.
    """
    if owner is None:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host == socket.gethostname() and pid_text.isdigit() and int(pid_text) != os.getpid():
        return not _alive(int(pid_text))
    return lease_expires is not None and lease_expires < now


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    # A killed process whose parent has not reaped it yet (a zombie) still answers the signal; where
    # nothing reaps orphans (a container without an init), it stays that way.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rpartition(")")[2].split()[:1]
    except OSError:
        return True  # no /proc: take the signal's word
    return state != ["Z"]
