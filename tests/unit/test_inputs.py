"""A run's inputs are checked against where they go before anything runs (charter.plan.inputs.check_inputs)."""

from __future__ import annotations

from typing import Any

import pytest

from charter import Charter, ConfigError, Plan, Registry, tool
from charter.plan.inputs import check_inputs


@tool
def add(a: int, b: int = 0) -> int:
    return a + b


@tool
def shout(text: str) -> str:
    return text.upper()


REGISTRY = Registry([add, shout])


def plan(inputs: dict[str, Any], steps: list[dict[str, Any]]) -> Plan:
    return Plan.from_dict({"goal": "g", "inputs": inputs, "steps": steps}, REGISTRY)


ADD_N = [{"id": "s", "tool": "add", "args": {"a": "${inputs.n}"}}]


def test_an_input_of_the_wrong_type_names_the_input_the_argument_and_the_tool() -> None:
    with pytest.raises(ConfigError) as exc:
        check_inputs(plan({"n": 1}, ADD_N), {"n": "abc"}, REGISTRY)
    assert str(exc.value) == ("input n: \"abc\" does not fit steps[0].args.a of tool 'add': "
                              "Input should be a valid integer, unable to parse string as an integer")


def test_inputs_that_fit_come_back_merged_with_the_defaults() -> None:
    p = plan({"n": 1, "m": "x"}, ADD_N)
    assert check_inputs(p, {"n": "5"}, REGISTRY) == {"n": "5", "m": "x"}  # "5" fits an int, as it will when called
    assert check_inputs(p, None, REGISTRY) == {"n": 1, "m": "x"}


def test_a_default_that_does_not_fit_is_caught_unless_it_is_overridden() -> None:
    p = plan({"n": "none yet"}, ADD_N)
    with pytest.raises(ConfigError, match="input n"):
        check_inputs(p, {}, REGISTRY)
    check_inputs(p, {"n": 3}, REGISTRY)


def test_every_problem_is_listed_with_where_the_input_goes() -> None:
    p = plan({"n": 1, "cfg": {"port": 1}, "xs": ["a"]}, [
        {"id": "s", "tool": "add", "args": {"a": "${inputs.n}", "b": "${inputs.cfg.port}"}},
        {"id": "t", "tool": "shout", "for_each": "${inputs.xs}", "args": {"text": "${item}"}},
    ])
    with pytest.raises(ConfigError) as exc:
        check_inputs(p, {"n": [1], "cfg": {}, "xs": "abc"}, REGISTRY)
    assert str(exc.value).splitlines() == [
        "invalid inputs:",
        "  - input n: [1] does not fit steps[0].args.a of tool 'add': Input should be a valid integer",
        "  - input cfg: ${inputs.cfg.port}: inputs.cfg has no field 'port' (at steps[0].args.b)",
        "  - input xs: \"abc\" is not a list, and steps[1].for_each iterates over it",
    ]


def test_text_built_from_inputs_is_checked_as_the_text_it_becomes() -> None:
    p = plan({"n": 4}, [{"id": "s", "tool": "add", "args": {"a": "${inputs.n}0"}}])
    check_inputs(p, {"n": 4}, REGISTRY)  # "40"
    with pytest.raises(ConfigError, match=r'input n: "x0" does not fit steps\[0\]\.args\.a'):
        check_inputs(p, {"n": "x"}, REGISTRY)


def test_arguments_that_also_need_a_step_output_wait_for_the_step() -> None:
    p = plan({"n": "abc"}, [
        {"id": "s", "tool": "add", "args": {"a": 1}},
        {"id": "t", "tool": "shout", "args": {"text": "${s} and ${inputs.n}"}},
        {"id": "u", "llm": {"prompt": "Say ${inputs.n}"}},
    ])
    assert check_inputs(p, None, REGISTRY) == {"n": "abc"}


def test_unknown_and_non_json_inputs() -> None:
    p = plan({"n": 1}, ADD_N)
    with pytest.raises(ConfigError, match=r"unknown input\(s\) nope \(the plan declares: n\)"):
        check_inputs(p, {"nope": 1}, REGISTRY)
    with pytest.raises(ConfigError, match="inputs must be JSON data"):
        check_inputs(p, {"n": {1, 2}}, REGISTRY)


async def test_the_facade_refuses_a_bad_input_before_a_run_exists() -> None:
    with Charter(":memory:", tools=[add]) as app:
        with pytest.raises(ConfigError, match="input n"):
            await app.start({"goal": "g", "inputs": {"n": 1}, "steps": ADD_N}, inputs={"n": "abc"})
        assert await app.runs() == []
        report = await app.run({"goal": "g", "inputs": {"n": 1}, "steps": ADD_N}, inputs={"n": 41})
        assert report.output == 41
