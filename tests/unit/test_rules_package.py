"""The rules as a package: every kind of event has its handler, and the rules import nothing but data."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest

import charter.engine.rules
from charter import events
from charter.engine.rules import HANDLERS, NO_STATE_CHANGE, RunState, apply
from charter.events import EVENT_TYPES, Event, PlanApproved, RunCreated, UnknownEvent
from charter.plan import Plan


def kinds_of_event() -> set[type[Event]]:
    return {cls for _, cls in inspect.getmembers(events, inspect.isclass) if issubclass(cls, Event) and cls is not Event}


def test_every_kind_of_event_has_a_handler_or_is_declared_to_change_nothing() -> None:
    kinds = kinds_of_event()
    assert set(EVENT_TYPES.values()) <= kinds and UnknownEvent in kinds
    forgotten = sorted(k.__name__ for k in kinds if k not in HANDLERS and k not in NO_STATE_CHANGE)
    assert forgotten == []
    assert not set(HANDLERS) & NO_STATE_CHANGE  # a kind is one or the other
    assert set(HANDLERS) | NO_STATE_CHANGE <= kinds  # nothing registered for a kind that is not an event


def new_run() -> RunState:
    plan = Plan.from_dict({"goal": "g", "steps": [{"id": "a", "tool": "t"}]})
    state = RunState.from_created("r1", RunCreated(at=0.0, plan=plan.to_json()))
    apply(state, PlanApproved(at=1.0, by="test"))
    return state


def test_a_kind_declared_to_change_nothing_changes_only_the_time() -> None:
    state = new_run()
    before = dataclasses.asdict(state)
    apply(state, UnknownEvent(at=5.0, name="FromTheFuture", data={"x": 1}))
    after = dataclasses.asdict(state)
    assert after.pop("updated_at") == 5.0 and before.pop("updated_at") == 1.0
    assert after == before


def test_an_event_no_rule_knows_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Unheard(Event):
        pass

    state = new_run()
    with pytest.raises(TypeError, match="no rule applies a Unheard event"):
        apply(state, Unheard(at=2.0))


# what the rules may import from Charter: data and pure helpers, never the engine, the store, a clock or an interface
PURE = ("charter.errors", "charter.events", "charter.plan.model", "charter.plan.refs", "charter.retry")


def test_the_rules_import_nothing_but_data() -> None:
    package = Path(charter.engine.rules.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) > 3
    seen: set[str] = set()
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:  # relative: from the package charter.engine.rules
                target = ".".join([*["charter", "engine", "rules"][: 4 - node.level], node.module or ""])
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
            elif isinstance(node, ast.Import):
                assert len(node.names) == 1, "one module an import statement, as ruff's isort writes them"
                target = node.names[0].name
            else:
                continue
            seen.add(target)
            if target.startswith("charter."):
                inside = target.startswith("charter.engine.rules.") or target == "charter.tools"  # for types only
                assert inside or target in PURE, f"{path.name} imports {target}"
            else:
                assert target.split(".")[0] in ("__future__", "collections", "dataclasses", "typing"), (
                    f"{path.name} imports {target}")
    assert {"charter.events", "charter.engine.rules.state", "typing"} <= seen  # the imports were read
