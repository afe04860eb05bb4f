"""Tools: schemas from type hints, validation before the call, context injection, loading."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path
from typing import Annotated

import pydantic
import pytest

from charter import ConfigError, RetryPolicy, ToolArgumentError, ToolContext, load_tools, tool

CTX = ToolContext("run1", "step", None, 1, "run1/step")


@tool
def add(a: int, b: int = 2) -> int:
    """Add two numbers."""
    return a + b


@tool(effect="write", timeout=3, retry=RetryPolicy(max_attempts=5), concurrency=2, name="send")
async def send_email(to: str, ctx: ToolContext, subject: Annotated[str, pydantic.Field(min_length=1)] = "hi") -> dict[str, str]:
    return {"to": to, "key": ctx.idempotency_key, "subject": subject}


def test_declared_properties() -> None:
    assert add.name == "add" and add.effect == "read" and add.description == "Add two numbers."
    assert send_email.name == "send" and send_email.effect == "write"
    assert send_email.timeout == 3 and send_email.concurrency == 2
    assert send_email.retry == RetryPolicy(max_attempts=5)
    assert add.required_args() == ["a"]
    assert set(add.schema()["properties"]) == {"a", "b"}
    assert "ctx" not in send_email.schema()["properties"]
    assert add(1, 1) == 2  # still a plain function


async def test_invoke_validates_and_converts() -> None:
    assert await add.invoke({"a": "3"}, CTX) == 5
    with pytest.raises(ToolArgumentError) as info:
        await add.invoke({"a": "three"}, CTX)
    assert "'add'" in str(info.value) and "a:" in str(info.value)
    with pytest.raises(ToolArgumentError, match=r"c: unexpected argument"):
        await add.invoke({"a": 1, "c": 2}, CTX)
    with pytest.raises(ToolArgumentError, match="a: missing required argument"):
        await add.invoke({}, CTX)


async def test_write_tool_gets_the_idempotency_key() -> None:
    out = await send_email.invoke({"to": "a@example.com"}, CTX)
    assert out == {"to": "a@example.com", "key": "run1/step", "subject": "hi"}
    with pytest.raises(ToolArgumentError, match="subject"):
        await send_email.invoke({"to": "a", "subject": ""}, CTX)


async def test_sync_tools_run_off_the_event_loop() -> None:
    import threading

    main = threading.get_ident()

    @tool
    def where() -> int:
        return threading.get_ident()

    assert await where.invoke({}, CTX) != main


async def test_outputs_become_json_data() -> None:
    class Point(pydantic.BaseModel):
        x: int

    @tool
    async def point() -> Point:
        await asyncio.sleep(0)
        return Point(x=1)

    assert await point.invoke({}, CTX) == {"x": 1}


def test_check_arg_for_plan_validation() -> None:
    assert add.check_arg("a", 1) == []
    [problem] = add.check_arg("a", "x")
    assert problem.where == "a"
    assert add.check_arg("zzz", 1)[0].message == "tool 'add' has no argument 'zzz'"


def test_bad_declarations() -> None:
    with pytest.raises(ConfigError, match="effect"):
        tool(effect="delete")(lambda: None)  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="kwargs"):

        @tool
        def bad(**kw: int) -> None: ...


def test_load_tools_from_file_and_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = textwrap.dedent(
        """
        from charter import tool

        @tool
        def hello(name: str) -> str:
            return "hi " + name
        """
    )
    (tmp_path / "my_tools.py").write_text(src)
    reg = load_tools([str(tmp_path / "my_tools.py")])
    assert reg.names() == ["hello"]
    assert reg.sources == [str((tmp_path / "my_tools.py").resolve())]
    monkeypatch.syspath_prepend(str(tmp_path))
    reg2 = load_tools(["my_tools"])
    assert reg2.names() == ["hello"] and reg2.sources == ["my_tools"]
    sys.modules.pop("my_tools", None)


def test_load_tools_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tool file not found"):
        load_tools([str(tmp_path / "nope.py")])
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="no tools found"):
        load_tools([str(tmp_path / "empty.py")])
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="RuntimeError: boom"):
        load_tools([str(tmp_path / "broken.py")])
    with pytest.raises(ConfigError, match="cannot import tool module"):
        load_tools(["no_such_module_here"])
    (tmp_path / "a.py").write_text("from charter import tool\n@tool\ndef same() -> int:\n    return 1\n")
    (tmp_path / "b.py").write_text("from charter import tool\n@tool\ndef same() -> int:\n    return 2\n")
    with pytest.raises(ConfigError, match="two tools are named 'same'"):
        load_tools([str(tmp_path / "a.py"), str(tmp_path / "b.py")])
