"""References: parsing, rendering, escaping."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from charter.plan.refs import Interp, Ref, RefSyntaxError, ResolveError, compile_template, refs_in, render

OUTPUTS: dict[str, Any] = {"a": {"files": ["x.md", "y.md"], "n": 2}, "b": "text", "inputs": {"k": 1}}


def lookup(root: str) -> Any:
    return OUTPUTS[root]


def test_a_whole_string_reference_keeps_the_type() -> None:
    assert render(compile_template("${a.files}"), lookup) == ["x.md", "y.md"]
    assert render(compile_template("${a.n}"), lookup) == 2
    assert render(compile_template("${a.files[1]}"), lookup) == "y.md"
    assert render(compile_template("${a.files[-1]}"), lookup) == "y.md"
    assert render(compile_template("${ a }"), lookup) == OUTPUTS["a"]


def test_references_inside_text_are_written_in() -> None:
    t = compile_template("n=${a.n}, files=${a.files}, b=${b}")
    assert isinstance(t, Interp)
    assert render(t, lookup) == 'n=2, files=["x.md", "y.md"], b=text'


def test_escape_and_nested_structures() -> None:
    assert compile_template("cost: $${price}") == "cost: ${price}"
    t = compile_template({"list": ["${b}", {"deep": "${a.n}"}], "plain": 3})
    assert render(t, lookup) == {"list": ["text", {"deep": 2}], "plain": 3}
    assert [r.root for r in refs_in(t)] == ["b", "a"]


def test_bad_syntax_and_missing_values() -> None:
    with pytest.raises(RefSyntaxError):
        compile_template("${a..b}")
    for unclosed in ("${ok2", "see ${a} and ${b", "${a}${"):
        with pytest.raises(RefSyntaxError, match="not closed"):
            compile_template(unclosed)
    assert compile_template("$${ok2") == "${ok2"  # escaped: a literal, not a reference
    with pytest.raises(ResolveError, match="has no field 'nope'"):
        render(compile_template("${a.nope}"), lookup)
    with pytest.raises(ResolveError, match="has no index 5"):
        render(compile_template("${a.files[5]}"), lookup)
    with pytest.raises(ResolveError, match="is not a list"):
        render(compile_template("${b[0]}"), lookup)


def test_parse_gives_root_and_path() -> None:
    t = compile_template("${step-1.items[2].name}")
    assert t == Ref("step-1", ("items", 2, "name"), "${step-1.items[2].name}")


@given(st.text().filter(lambda s: "$" not in s))
def test_text_without_dollar_is_unchanged(s: str) -> None:
    assert render(compile_template(s), lookup) == s


@given(st.recursive(st.none() | st.integers() | st.text(alphabet="abc ${}.[]09"),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
                    max_leaves=8))
def test_any_template_compiles_or_fails_cleanly(value: Any) -> None:
    try:
        t = compile_template(value)
    except RefSyntaxError:
        return
    try:
        render(t, lambda root: {"a": 1}.get(root, {}))
    except ResolveError:
        pass
