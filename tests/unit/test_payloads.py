"""Payloads: an event's large parts stored once by content, and read back whole."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from charter.store import payloads

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=400),
    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=80,
)


def stored(data: dict[str, Any]) -> tuple[Any, dict[str, payloads.Payload]]:
    text, parts = payloads.split("ModelCalled", data)
    return json.loads(text), parts


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_what_is_split_joins_back_whole(data: dict[str, Any]) -> None:
    value, parts = stored(data)
    back = payloads.join(value, lambda h: (parts[h].size, json.loads(parts[h].data)) if h in parts else None)
    assert back == json.loads(json.dumps(data))
    for p in parts.values():  # each part is addressed by its content
        assert payloads.digest(p.data) == p.hash and p.size == len(p.data)


def test_small_events_are_stored_as_they_are() -> None:
    text, parts = payloads.split("StepStarted", {"step": "a", "args": {"x": "y" * 100}})
    assert parts == {} and json.loads(text) == {"step": "a", "args": {"x": "y" * 100}}


def test_plans_are_kept_whole_however_large() -> None:
    text, parts = payloads.split("RunCreated", {"plan": {"goal": "g" * 5000}})
    assert parts == {} and "g" * 5000 in text


def test_a_grown_conversation_shares_every_full_chunk_with_the_last() -> None:
    messages = [{"role": "tool", "content": f"result {i} " + "x" * 300} for i in range(40)]
    _, before = stored({"request": {"messages": messages[:39]}})
    _, after = stored({"request": {"messages": messages}})
    new = set(after) - set(before)
    # The newest message, and the last chunk that now holds it: nothing else is stored again.
    assert len(new) == 2
    assert sum(after[h].size for h in new) < 2 * payloads.CHUNK * 400


def test_a_pruned_part_reads_back_as_a_marker_with_its_size() -> None:
    value, parts = stored({"output": "z" * 5000})
    h = next(iter(parts))
    assert payloads.join(value, lambda _: (5002, None)) == {"output": {"$pruned": h, "size": 5002}}


def test_a_reference_the_store_does_not_know_is_the_datas_own() -> None:
    data = {"note": {"$payload": "not-a-hash"}, "pad": "p" * 3000}
    value, parts = stored(data)
    assert payloads.join(value, lambda h: (parts[h].size, json.loads(parts[h].data)) if h in parts else None) == data
