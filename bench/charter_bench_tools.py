"""Tools for ``charter_bench.py``.

They live in their own file so that a run records this file as its tool
source: the process that resumes the ``resume`` workload after the crash loads
the tools again from here. The resume tool reads its side file and crash flag
from the environment (``CHARTER_BENCH_SIDE``, ``CHARTER_BENCH_CRASH``) at call
time, like the peers' scripts do.
"""

from __future__ import annotations

import asyncio
import os
import signal

from charter import tool

CRASH_BEFORE = 11  # SIGKILL at the start of step 11, i.e. right after step 10 completed


@tool
async def noop(v: int) -> dict[str, int]:
    """A no-op step: returns a small dict that the next step consumes."""
    return {"v": v + 1, "prev": v}


@tool
async def make_list(n: int) -> list[int]:
    """The fan-out's input: ``[0, 1, ..., n-1]``."""
    return list(range(n))


@tool
async def sleep_one(i: int) -> int:
    """One fan-out item: 50 ms of (simulated) I/O."""
    await asyncio.sleep(0.05)
    return i


@tool
async def join(xs: list[int]) -> dict[str, int]:
    """The fan-in: how many items came back, and their sum (to check them)."""
    return {"n": len(xs), "sum": sum(xs)}


@tool
async def logged(step: int, v: int) -> dict[str, int]:
    """A resume-workload step: append its number to the side file (flushed and fsynced).

    With ``CHARTER_BENCH_CRASH=1`` the process SIGKILLs itself at the start of
    step ``CRASH_BEFORE``, before writing anything.
    """
    if os.environ.get("CHARTER_BENCH_CRASH") == "1" and step == CRASH_BEFORE:
        os.kill(os.getpid(), signal.SIGKILL)
    with open(os.environ["CHARTER_BENCH_SIDE"], "a") as f:
        f.write(f"{step}\n")
        f.flush()
        os.fsync(f.fileno())
    return {"v": v + 1}
