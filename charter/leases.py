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
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return lease_expires is not None and lease_expires < now
