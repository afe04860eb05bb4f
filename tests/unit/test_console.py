"""What the terminal shows of a run: checked on the text a person reads."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from charter import PermanentError, tool
from charter.cli.console import fmt_duration, print_outcome


@tool
def broken(name: str) -> str:
    raise PermanentError(f"{name} is broken")


async def test_a_failed_run_says_how_to_retry_each_failed_step(make_app: Any) -> None:
    report = await make_app([broken]).run({"goal": "g", "steps": [
        {"id": "one", "tool": "broken", "args": {"name": "one"}},
        {"id": "two", "tool": "broken", "args": {"name": "two"}}]})
    console = Console(record=True, width=200)
    print_outcome(console, report)
    text = console.export_text()
    assert f"charter retry {report.id} one" in text and f"charter retry {report.id} two" in text


def test_a_duration_is_never_negative() -> None:
    assert fmt_duration(-0.0004) == "0ms" and fmt_duration(2.5) == "2.5s"
