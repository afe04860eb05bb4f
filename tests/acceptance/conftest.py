from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    """A folder with a store and a tools file; background processes are stopped at the end."""
    workspace = Workspace(tmp_path)
    try:
        yield workspace
    finally:
        workspace.stop_all()
