"""What model calls cost: a price table in US dollars per million tokens, which users extend.

Prices change; the built-in rows are a starting point. Add or override rows
with :func:`set_price`, or point ``CHARTER_PRICES`` at a JSON file of
``{"provider:model": {"input": 0.15, "output": 0.6}}``. A model without a
price has an unknown cost (``None``), never a made-up one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import ConfigError
from .base import Usage


@dataclass(frozen=True)
class Price:
    input: float  # dollars per million input tokens
    output: float  # dollars per million output tokens


_PRICES: dict[str, Price] = {
    "openai:gpt-4o": Price(2.50, 10.00),
    "openai:gpt-4o-mini": Price(0.15, 0.60),
    "openai:gpt-4.1": Price(2.00, 8.00),
    "openai:gpt-4.1-mini": Price(0.40, 1.60),
    "openai:gpt-4.1-nano": Price(0.10, 0.40),
    "anthropic:claude-3-5-haiku-latest": Price(0.80, 4.00),
    "anthropic:claude-sonnet-4-0": Price(3.00, 15.00),
    "anthropic:claude-opus-4-0": Price(15.00, 75.00),
    "scripted:demo": Price(0.0, 0.0),
}
_loaded_env = False


def set_price(model: str, *, input: float, output: float) -> None:
    """Add or change the price of ``provider:model``, in dollars per million tokens."""
    if input < 0 or output < 0:
        raise ConfigError("prices must not be negative")
    _PRICES[model] = Price(input, output)


def price_of(model: str) -> Price | None:
    _load_env()
    if model in _PRICES:
        return _PRICES[model]
    provider, _, name = model.partition(":")
    if provider == "scripted":
        return Price(0.0, 0.0)
    # OpenAI-compatible servers that relay a known model keep its price: openrouter:openai/gpt-4o
    tail = name.rsplit("/", 1)[-1]
    for known, price in _PRICES.items():
        if known.partition(":")[2] == tail:
            return price
    return None


def cost(model: str, usage: Usage) -> float | None:
    """Dollars for ``usage`` on ``model``, or None when the price is unknown."""
    price = price_of(model)
    if price is None:
        return None
    return (usage.input_tokens * price.input + usage.output_tokens * price.output) / 1_000_000


def _load_env() -> None:
    global _loaded_env
    if _loaded_env:
        return
    _loaded_env = True
    path = os.environ.get("CHARTER_PRICES")
    if not path:
        return
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        for model, row in data.items():
            set_price(model, input=float(row["input"]), output=float(row["output"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"CHARTER_PRICES={path}: cannot read prices: {exc}") from None
