"""`charter --help` and `charter COMMAND --help` read like an ordinary command line's help.

The help is read as a person sees it: the real command in a subprocess, at a
fixed terminal width, without colour.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import charter
from charter.cli import app

from .helpers import cli_env

COMMANDS = sorted(  # a group's commands by the words that call them: `db upgrade`
    name if not hasattr(cmd, "commands") else f"{name} {sub}"
    for name, cmd in typer.main.get_command(app).commands.items()  # type: ignore[attr-defined]
    for sub in getattr(cmd, "commands", [name])
)
CHARTER = str(Path(sys.executable).parent / "charter")  # the console script, as a person types it


def help_text(*args: str) -> str:
    env = {**cli_env(), "COLUMNS": "100"}
    proc = subprocess.run([CHARTER, *args, "--help"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def usage(text: str) -> str:
    [line] = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("Usage:")]
    return line


def test_every_command_is_checked() -> None:
    assert {"run", "resume", "retry", "approve", "show", "watch", "validate", "tools"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_what_each_option_takes_and_flags_take_nothing(command: str) -> None:
    text = help_text(*command.split())
    # No type placeholders (`<bool>`, `<str>`, `<int range>`) and no `{name}` in the usage line.
    assert not re.search(r"<[a-z][a-z ]*>", text), text
    assert "BOOLEAN" not in text, text
    assert re.fullmatch(rf"Usage: charter {command} \[OPTIONS\]( [A-Z_]+| \[[A-Z_]+\])*", usage(text)), text
    # A flag is followed by its description, nothing in between.
    assert re.search(r"--help\s+Show this message and exit", text), text
    if "--json" in text:
        assert re.search(r"--json\s+Print JSON", text), text
    if "--db" in text:
        assert re.search(r"--db\s+PATH\|URL\s", text), text


@pytest.mark.parametrize(("command", "line"), [
    ("run", "Usage: charter run [OPTIONS] PLAN"),
    ("show", "Usage: charter show [OPTIONS] RUN_ID"),
    ("approve", "Usage: charter approve [OPTIONS] RUN_ID [STEP]"),
    ("retry", "Usage: charter retry [OPTIONS] RUN_ID STEP"),
    ("effects", "Usage: charter effects [OPTIONS] [RUN_ID]"),
    ("do", "Usage: charter do [OPTIONS] REQUEST"),
])
def test_usage_lines_name_the_arguments_in_capitals(command: str, line: str) -> None:
    assert usage(help_text(command)) == line


def test_options_that_take_values_say_what_value() -> None:
    text = help_text("run")
    for option, metavar in [("--tools", "FILE|MODULE"), ("--input", "NAME=VALUE"), ("--concurrency", "N"),
                            ("--max-cost", "DOLLARS"), ("--model", "PROVIDER:MODEL")]:
        assert re.search(rf"{option}\s+(-\w\s+)?{re.escape(metavar)}\s", text), (option, text)


def test_top_level_help_and_version() -> None:
    text = help_text()
    assert usage(text) == "Usage: charter [OPTIONS] COMMAND [ARGS]..."
    assert re.search(r"--version\s+-V\s+Print Charter's version", text), text
    for flag in ("--version", "-V"):
        proc = subprocess.run([CHARTER, flag], env=cli_env(), capture_output=True,
                              text=True, timeout=60, check=False)
        assert (proc.returncode, proc.stdout) == (0, f"charter {charter.__version__}\n"), proc


def test_the_version_is_the_installed_package_version() -> None:
    from importlib.metadata import version

    assert version("charter") == charter.__version__
