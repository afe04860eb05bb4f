"""The README says precisely what `make demo` runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_names_the_command_make_demo_runs() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    [recipe] = re.findall(r"^demo:.*\n\t(.+)$", makefile, re.M)
    command = recipe.replace("$(BIN)/", "")  # charter demo --dir charter-demo
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"`make demo` runs something else: `{command}`" in readme
    assert "what `make demo` does" not in readme  # the notes example was said to be it; it is not
