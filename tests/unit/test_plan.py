"""Plan loading: everything wrong is reported at once, with where it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charter import PlanError, Registry, load_plan, tool
from charter.plan import Plan


@tool
def fetch(url: str, retries: int = 1) -> dict[str, str]:
    """Fetch a page."""
    return {"url": url}


@tool
def summarize(text: str) -> str:
    return text


REG = Registry([fetch, summarize])


def problems(data: object) -> list[str]:
    with pytest.raises(PlanError) as info:
        Plan.from_dict(data, REG)
    return [str(p) for p in info.value.problems]


def test_a_valid_plan_compiles_with_dependencies_from_references() -> None:
    plan = Plan.from_dict(
        {
            "goal": "g",
            "assumptions": ["the site is up"],
            "steps": [
                {"id": "a", "tool": "fetch", "args": {"url": "http://x"}},
                {"id": "b", "tool": "summarize", "args": {"text": "${a.url}"}},
                {"id": "c", "tool": "summarize", "args": {"text": "x"}, "needs": ["a"]},
            ],
        },
        REG,
    )
    assert plan.by_id["b"].deps == ("a",)
    assert plan.by_id["c"].deps == ("a",)
    assert plan.assumptions == ("the site is up",)
    assert plan.sinks() == ["b", "c"]
    assert plan.downstream("a") == ["a", "b", "c"]
    assert plan.upstream("b") == ["a"]


def test_every_problem_is_reported_with_its_place() -> None:
    found = problems(
        {
            "goal": "g",
            "steps": [
                {"id": "a", "tool": "fetch", "args": {"url": "${b}"}},
                {"id": "b", "tool": "summarize", "args": {"text": "${a}"}},
                {"id": "a", "tool": "fetch", "args": {"url": "u"}},
                {"id": "d", "tool": "nope"},
                {"id": "e", "tool": "summarize", "args": {"text": "${ghost.x}"}},
                {"id": "f", "tool": "summarize", "args": {"text": "${f}"}},
                {"id": "g", "tool": "fetch", "args": {"url": "u", "retries": "many"}},
                {"id": "h", "tool": "fetch", "args": {"url": "u", "extra": 1}},
                {"id": "i", "tool": "fetch"},
            ],
        }
    )
    text = "\n".join(found)
    assert "steps[2].id: duplicate id 'a' (first at steps[0])" in found
    assert "steps[3].tool: unknown tool 'nope'" in text
    assert "steps[4].args.text: ${ghost.x}: unknown step 'ghost'" in found
    assert "steps[5].args.text: ${f}: a step cannot reference itself" in found
    assert any(p.startswith("steps[6].args.retries:") and "integer" in p for p in found)
    assert "steps[7].args.extra: tool 'fetch' has no argument 'extra'" in found
    assert "steps[8].args.url: missing required argument of tool 'fetch'" in found
    assert any("cycle: " in p and ("a -> b -> a" in p or "b -> a -> b" in p) for p in found)


def test_a_longer_cycle_is_shown_as_a_path() -> None:
    found = problems(
        {
            "goal": "g",
            "steps": [
                {"id": "a", "tool": "summarize", "args": {"text": "${c}"}},
                {"id": "b", "tool": "summarize", "args": {"text": "${a}"}},
                {"id": "c", "tool": "summarize", "args": {"text": "${b}"}, "needs": []},
            ],
        }
    )
    [cycle] = [p for p in found if "cycle" in p]
    path = cycle.split("cycle: ")[1].split(" -> ")
    assert path[0] == path[-1] and sorted(path[:-1]) == ["a", "b", "c"]


def test_structure_errors_are_collected_per_step() -> None:
    found = problems(
        {"goal": "g", "steps": [{"tool": "fetch"}, {"id": "x", "tool": "fetch", "args": {"url": "u"}, "bogus": 1}]}
    )
    assert "steps[0].id: Field required" in found
    assert any(p.startswith("steps[1].bogus") for p in found)


def test_missing_goal_and_no_steps() -> None:
    with pytest.raises(PlanError) as info:
        Plan.from_dict({"steps": []}, REG)
    assert "goal: Field required" in str(info.value)
    with pytest.raises(PlanError, match="at least one step"):
        Plan.from_dict({"goal": "g", "steps": []}, REG)
    with pytest.raises(PlanError, match="mapping"):
        Plan.from_dict(["not", "a", "plan"], REG)


def test_for_each_and_item_rules() -> None:
    found = problems(
        {
            "goal": "g",
            "steps": [
                {"id": "a", "tool": "fetch", "args": {"url": "${item}"}},
                {"id": "b", "tool": "fetch", "for_each": "not a ref", "args": {"url": "u"}},
                {"id": "c", "tool": "fetch", "for_each": "${item}", "args": {"url": "u"}},
            ],
        }
    )
    assert "steps[0].args.url: ${item}: 'item' is only defined in a for_each step" in found
    assert "steps[1].for_each: must be one reference, like ${list_files}" in found
    assert "steps[2].for_each: cannot iterate over 'item'" in found


def test_inputs_must_be_declared() -> None:
    found = problems({"goal": "g", "steps": [{"id": "a", "tool": "fetch", "args": {"url": "${inputs.site}"}}]})
    assert found == ["steps[0].args.url: ${inputs.site}: unknown input 'site' (declare it under 'inputs')"]
    plan = Plan.from_dict(
        {"goal": "g", "inputs": {"site": "x"}, "steps": [{"id": "a", "tool": "fetch", "args": {"url": "${inputs.site}"}}]},
        REG,
    )
    assert plan.by_id["a"].deps == ()


def test_reserved_and_malformed_ids_and_bad_references() -> None:
    found = problems(
        {
            "goal": "g",
            "steps": [
                {"id": "item", "tool": "fetch", "args": {"url": "u"}},
                {"id": "has space", "tool": "fetch", "args": {"url": "u"}},
                {"id": "ok", "tool": "fetch", "args": {"url": "${not valid!}"}},
            ],
        }
    )
    assert "steps[0].id: 'item' is reserved" in found
    assert any(p.startswith("steps[1].id:") for p in found)
    assert any(p.startswith("steps[2].args.url:") and "not a reference" in p for p in found)


def test_load_from_yaml_and_json_files(tmp_path: Path) -> None:
    data = {"goal": "g", "steps": [{"id": "a", "tool": "fetch", "args": {"url": "u"}}]}
    (tmp_path / "p.json").write_text(json.dumps(data))
    (tmp_path / "p.yaml").write_text("goal: g\nsteps:\n  - id: a\n    tool: fetch\n    args: {url: u}\n")
    assert load_plan(tmp_path / "p.json", REG) == load_plan(tmp_path / "p.yaml", REG)


def test_yaml_syntax_errors_say_where(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("goal: g\nsteps:\n  - id: a\n   tool: [unclosed\n")
    with pytest.raises(PlanError) as info:
        load_plan(tmp_path / "bad.yaml", REG)
    assert "line " in str(info.value) and "bad.yaml" in str(info.value)
    with pytest.raises(PlanError, match="file not found"):
        load_plan(tmp_path / "missing.yaml", REG)


def test_plan_round_trips_through_json() -> None:
    data = {
        "goal": "g",
        "inputs": {"n": 3},
        "steps": [
            {"id": "a", "tool": "fetch", "args": {"url": "u"}, "retry": {"max_attempts": 5}, "timeout": 2},
            {"id": "b", "tool": "summarize", "for_each": "${a.list}", "args": {"text": "${item}"}, "concurrency": 2},
        ],
    }
    plan = Plan.from_dict(data, REG)
    again = Plan.from_dict(plan.to_json(), REG)
    assert again == plan
    assert again.by_id["a"].retry == {"max_attempts": 5}


def test_step_retry_and_timeout_are_checked() -> None:
    found = problems(
        {"goal": "g", "steps": [{"id": "a", "tool": "fetch", "args": {"url": "u"},
                                  "retry": {"max_attempts": 0, "colour": 1}, "timeout": -1}]}
    )
    assert any(p.startswith("steps[0].retry.max_attempts") for p in found)
    assert any(p.startswith("steps[0].retry.colour") for p in found)
    assert any(p.startswith("steps[0].timeout") for p in found)


def test_an_invalid_id_is_still_checked_for_duplicates_and_problems_keep_their_step() -> None:
    # Two steps with the invalid id "1a": the first calls an unknown tool. Its problem belongs to
    # steps[0], and the second is a duplicate; neither may stand in for the other.
    found = problems({"goal": "g", "steps": [
        {"id": "1a", "tool": "nope"},
        {"id": "1a", "tool": "fetch", "args": {"url": "u"}},
    ]})
    assert "steps[0].id: '1a' is not a valid id (a letter or _ first, then letters, digits, _ and -)" in found
    assert "steps[1].id: duplicate id '1a' (first at steps[0])" in found
    assert any(p.startswith("steps[0].tool: unknown tool 'nope'") for p in found)
    assert not any(p.startswith("steps[1].tool") for p in found)


def test_the_id_rule_is_said_whole_to_the_planner() -> None:
    from charter.planning.planner import INSTRUCTIONS

    assert "a letter or _ first, then letters, digits, _ and -" in INSTRUCTIONS
