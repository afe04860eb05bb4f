"""Retry policies: exponential backoff, capped, with deterministic jitter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from charter import RetryPolicy


def test_exponential_and_capped() -> None:
    p = RetryPolicy(initial_interval=1, backoff=2, max_interval=5, jitter=0)
    assert [p.delay(n, "k") for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_jitter_is_deterministic_per_key_and_attempt() -> None:
    p = RetryPolicy(initial_interval=10, jitter=0.5, max_interval=100)
    assert p.delay(1, "k") == p.delay(1, "k")
    assert len({p.delay(1, f"k{i}") for i in range(20)}) > 10


@given(
    attempt=st.integers(1, 30),
    initial=st.floats(0, 100),
    backoff=st.floats(1, 5),
    cap=st.floats(0, 1000),
    jitter=st.floats(0, 1),
    key=st.text(max_size=10),
)
def test_delay_stays_within_bounds(attempt: int, initial: float, backoff: float, cap: float, jitter: float, key: str) -> None:
    p = RetryPolicy(initial_interval=initial, backoff=backoff, max_interval=cap, jitter=jitter)
    base = min(initial * backoff ** (attempt - 1), cap)
    d = p.delay(attempt, key)
    assert 0 <= d <= cap + 1e-9
    assert base * (1 - jitter) - 1e-9 <= d <= base * (1 + jitter) + 1e-9


def test_invalid_policies() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(backoff=0.5)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2)
    assert RetryPolicy().merged({"max_attempts": 7}).max_attempts == 7
