"""Payloads: the bulky parts of events, stored once each by their content.

A long agent loop resends a growing conversation with every model call; a
tool may return a large document that a later step receives again. Stored
inline, the log would grow with the square of a loop's length. Instead, an
event whose JSON is large has every large part of it (a message, a document:
any value whose JSON is at least :data:`SMALLEST` bytes) taken out and stored
once under the hash of its JSON text; the event's data refers to it as
``{"$payload": hash}``. A long list (a conversation's messages) is stored in
chunks of :data:`CHUNK` items, ``{"$chunks": [hash, ...]}``: a list that grew
since the last call shares all its full chunks with the last one, so only
its newest items are stored again. The store reads the parts back in place,
so readers see whole events. Only the events that carry such values are split
(:data:`SPLIT`). A payload that ``charter prune`` dropped reads
back as ``{"$pruned": hash, "size": n}`` (a chunk of a list, as one such item).

Pure functions only: the SQL layer stores and fetches what they produce.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .codec import dumps

#: an event's JSON shorter than this is stored as it is (the common case: nothing to walk)
WALK_FROM = 2048
#: a part of a large event whose JSON is at least this long is stored as a payload
SMALLEST = 256
#: the events whose values may be bulky and repeat (model calls resending a conversation, tool
#: arguments and outputs): only these are split. Every other event is kept whole: a plan is needed
#: to read a run at all, and errors, reasons and decisions are what ``charter show`` tells of a run
#: whose payloads were pruned
SPLIT = frozenset({"ModelCalled", "ToolCalled", "StepStarted", "StepSucceeded", "EffectRecorded", "RunSucceeded"})
#: items of a long list stored together (a list of more is stored in chunks)
CHUNK = 8
REF = "$payload"
CHUNKS = "$chunks"
PRUNED = "$pruned"
_MARKS = ('{"' + REF + '":', '{"' + CHUNKS + '":')

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


@dataclass(frozen=True, slots=True)
class Payload:
    hash: str
    size: int
    data: str  # JSON text


def digest(text: str) -> str:
    """The address of a payload: the first 128 bits of the SHA-256 of its JSON text, in hex."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


def split(type_name: str, data: Mapping[str, Any]) -> tuple[str, dict[str, Payload]]:
    """An event's data as stored: its JSON text (secrets masked), with its large parts replaced by
    references, and those parts by their hash."""
    text = dumps(data)
    if len(text) < WALK_FROM or type_name not in SPLIT:
        return text, {}
    found: dict[str, Payload] = {}
    value = json.loads(text)  # the masked copy: what is hashed and stored is what the log may hold
    outer = {k: _take(v, found) for k, v in value.items()}
    return _encode(outer), found


def _take(value: Any, found: dict[str, Payload]) -> Any:
    """``value`` with its large parts taken out into ``found``, bottom up (a large list of small
    messages becomes one payload; a list holding a large message refers to it)."""
    if isinstance(value, dict):
        value = {k: _take(v, found) for k, v in value.items()}
    elif isinstance(value, list):
        value = [_take(v, found) for v in value]
        if len(value) > CHUNK:
            return {CHUNKS: [_store(_encode(value[i:i + CHUNK]), found) for i in range(0, len(value), CHUNK)]}
    elif not isinstance(value, str):
        return value
    text = _encode(value)
    if len(text) < SMALLEST:
        return value
    return {REF: _store(text, found)}


def _store(text: str, found: dict[str, Payload]) -> str:
    h = digest(text)
    found.setdefault(h, Payload(h, len(text), text))
    return h


def refers(text: str) -> bool:
    """Whether a stored event's JSON text may refer to payloads (a quick test before parsing)."""
    return _MARKS[0] in text or _MARKS[1] in text


def hashes(value: Any, out: set[str]) -> set[str]:
    """The payload hashes ``value`` refers to."""
    if isinstance(value, dict):
        if (ref := _ref(value)) is not None:
            out.add(ref)
        elif (chunks := _chunks(value)) is not None:
            out.update(chunks)
        else:
            for v in value.values():
                hashes(v, out)
    elif isinstance(value, list):
        for v in value:
            hashes(v, out)
    return out


def _ref(value: dict[str, Any]) -> str | None:
    ref = value.get(REF) if len(value) == 1 else None
    return ref if isinstance(ref, str) else None


def _chunks(value: dict[str, Any]) -> list[str] | None:
    chunks = value.get(CHUNKS) if len(value) == 1 else None
    return chunks if isinstance(chunks, list) and all(isinstance(c, str) for c in chunks) else None


def join(value: Any, lookup: Callable[[str], tuple[int, Any] | None]) -> Any:
    """``value`` with every reference replaced by the payload it names (itself joined: a payload may
    refer to smaller ones). ``lookup(hash)`` gives ``(size, value)``, the payload's JSON parsed;
    value ``None``: it was pruned (a payload is never JSON ``null``: it is too long for that).
    A reference to no payload this store knows stays as it is (it was the data's own)."""
    if isinstance(value, dict):
        if (ref := _ref(value)) is not None:
            got = lookup(ref)
            if got is None:
                return value
            return _pruned(ref, got[0]) if got[1] is None else join(got[1], lookup)
        if (chunks := _chunks(value)) is not None:
            parts = [lookup(c) for c in chunks]
            if any(p is None for p in parts):
                return value
            items: list[Any] = []
            for c, (size, chunk) in zip(chunks, parts, strict=True):  # type: ignore[misc]
                items.extend([_pruned(c, size)] if chunk is None else join(chunk, lookup))
            return items
        return {k: join(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [join(v, lookup) for v in value]
    return value


def _pruned(ref: str, size: int) -> dict[str, Any]:
    return {PRUNED: ref, "size": size}
