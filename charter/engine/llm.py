"""``llm`` steps: a prompt over earlier outputs goes to a model; text, or JSON checked against a schema, comes back."""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import RetryableError
from ..models.base import Message, Model, ModelRequest
from .journal import Journal

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.S)


async def run_llm(args: dict[str, Any], model: Model, journal: Journal) -> Any:
    """Ask the model; return its text, or its JSON answer once it fits ``args["schema"]``."""
    prompt = args["prompt"] if isinstance(args["prompt"], str) else json.dumps(args["prompt"], indent=2)
    schema = args.get("schema")
    messages = []
    system = args.get("system") or ""
    if schema is not None:
        system = (system + "\n\n" if system else "") + (
            "Answer with one JSON value only, no prose, fitting this JSON schema:\n" + json.dumps(schema)
        )
    if system:
        messages.append(Message("system", system))
    messages.append(Message("user", prompt))
    request = ModelRequest(tuple(messages), schema=schema, max_tokens=int(args.get("max_tokens", 4096)))
    response = await journal.complete(model, request)
    if schema is None:
        return response.text
    return parse_json_answer(response.text, schema)


def parse_json_answer(text: str, schema: dict[str, Any]) -> Any:
    """A model's JSON answer, checked. Malformed or unfitting answers are retryable: a new try may do better."""
    import jsonschema

    m = _FENCE.match(text)
    body = m.group(1) if m else text
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        message = f"the model's answer is not JSON ({exc.msg} at position {exc.pos}): {text[:200]!r}"
        raise RetryableError(message) from None
    errors = sorted(jsonschema.validators.validator_for(schema)(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(the answer)"
        raise RetryableError(f"the model's answer does not fit the schema at {where}: {first.message}")
    return value
