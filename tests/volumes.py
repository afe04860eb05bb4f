"""Real read-only folders and real small volumes, for the tests of stores in such places.

As root, permissions do not stop writes, so a read-only folder is made
immutable (``chattr +i``: even root may not create a file in it); otherwise
its mode is 0555. A small volume is a tmpfs mounted for the test (root only)
and unmounted after it. Where neither can be had the test is skipped, saying why.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def read_only_folder(folder: Path) -> Iterator[None]:
    """``folder`` is read-only inside the block, for everyone: checked by trying to write in it."""
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot make {folder} read-only for root: chattr +i: {done.stderr.strip()}")

        def undo() -> None:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)

        def undo() -> None:
            folder.chmod(0o755)
    try:
        with pytest.raises(PermissionError):
            (folder / "probe").write_text("")
        yield
    finally:
        undo()


@contextmanager
def small_volume(where: Path, size: int) -> Iterator[Callable[[int], None]]:
    """A tmpfs of ``size`` bytes mounted at ``where``; yields a function that resizes it."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small volume needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small volume: {done.stderr.strip()}")

    def resize(new_size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(where)], check=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def used_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return (st.f_blocks - st.f_bfree) * st.f_frsize
