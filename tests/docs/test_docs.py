"""Every Python example in the README and docs/ runs; the README's console examples match the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def blocks(path: Path, lang: str) -> list[str]:
    """The code blocks of one language, each padded with blank lines so tracebacks show the doc's line numbers."""
    text = path.read_text()
    out = []
    for m in BLOCK.finditer(text):
        if m.group(1) == lang:
            out.append("\n" * text.count("\n", 0, m.start(2)) + m.group(2))
    return out


def runnable(body: str) -> bool:
    # Abridged listings (with `...` bodies standing for code shown elsewhere) are illustrations.
    return "(abridged)" not in body


@pytest.mark.parametrize("doc", [d for d in DOCS if any(runnable(b) for b in blocks(d, "python"))], ids=lambda p: p.name)
def test_python_examples_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{doc.stem}"}
    for body in blocks(doc, "python"):
        if runnable(body):
            exec(compile(body, str(doc), "exec"), namespace)


def test_every_doc_has_been_checked_for_examples() -> None:
    assert len([d for d in DOCS if blocks(d, "python")]) >= 4


def test_the_readme_validate_example_is_what_the_cli_prints() -> None:
    [block] = [b for b in blocks(ROOT / "README.md", "console") if "charter validate" in b]
    command, *expected = block.strip().splitlines()
    args = command.removeprefix("$ charter ").split()
    proc = subprocess.run([sys.executable, "-m", "charter", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == expected


def test_workspace_and_plan_examples_in_the_docs_are_valid() -> None:
    # YAML blocks that start with "# charter.yaml" are workspace files, "# plan.yaml" plans over the built-ins.
    import yaml

    from charter import Plan, load_tools
    from charter.workspace import WorkspaceConfig

    builtins = load_tools([f"charter.builtins.{m}" for m in ("files", "http", "git", "email", "slack")])
    checked = 0
    for doc in DOCS:
        for body in blocks(doc, "yaml"):
            first = body.strip().splitlines()[0]
            if first == "# charter.yaml":
                WorkspaceConfig.model_validate(yaml.safe_load(body))
            elif first == "# plan.yaml":
                Plan.from_dict(yaml.safe_load(body), builtins)
            else:
                continue
            checked += 1
    assert checked >= 4
