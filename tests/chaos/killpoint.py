"""Run the `charter` command so that it SIGKILLs itself at an exact place in Charter's code.

    python killpoint.py MODULE:QUALNAME N WHEN charter-arguments...

wraps the function or method ``QUALNAME`` of ``MODULE`` (sync or async) and
kills the process with SIGKILL on its N-th call: ``before`` the call runs,
``after`` it returned, or ``after-truthy`` (the N-th call that returned
something truthy). Random kills rarely hit a window of a few microseconds;
this hits it every time, with the same signal a crash sends.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import signal
import sys
from typing import Any


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(target: str, nth: int, when: str) -> None:
    if when not in ("before", "after", "after-truthy"):
        raise SystemExit(f"killpoint: WHEN must be before, after or after-truthy, not {when!r}")
    module_name, _, qualname = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    count = 0

    def before() -> None:
        nonlocal count
        if when == "before":
            count += 1
            if count == nth:
                _die()

    def after(result: Any) -> None:
        nonlocal count
        if when == "after" or (when == "after-truthy" and result):
            count += 1
            if count == nth:
                _die()

    if inspect.iscoroutinefunction(original):
        @functools.wraps(original)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            before()
            result = await original(*args, **kwargs)
            after(result)
            return result

        setattr(owner, name, async_wrapper)
    else:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before()
            result = original(*args, **kwargs)
            after(result)
            return result

        setattr(owner, name, wrapper)


def main() -> None:
    target, nth, when, *args = sys.argv[1:]
    install(target, int(nth), when)
    from charter.cli import main as charter_main

    sys.argv = ["charter", *args]
    charter_main()


if __name__ == "__main__":
    main()
