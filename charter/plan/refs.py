"""References from a step's arguments to earlier outputs: ``${step}``, ``${step.field[0]}``.

A string that is exactly one reference becomes the referenced value, whatever
its type. A reference inside a longer string is written into it as text (JSON
for lists and dicts). ``$${`` writes a literal ``${``. Roots are step ids,
``item`` (the current element inside a ``for_each`` step) and ``inputs`` (the
run's inputs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_PATH = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_-]*)((?:\.[A-Za-z0-9_-]+|\[-?\d+\])*)\s*$")
_SEGMENT = re.compile(r"\.([A-Za-z0-9_-]+)|\[(-?\d+)\]")


class RefSyntaxError(ValueError):
    """A ``${...}`` that cannot be parsed."""


class ResolveError(ValueError):
    """A reference that does not lead to a value at run time."""


@dataclass(frozen=True)
class Ref:
    """A parsed reference: a root name and a path of keys and indexes."""

    root: str
    path: tuple[str | int, ...]
    text: str

    def resolve(self, lookup: Callable[[str], Any]) -> Any:
        value = lookup(self.root)
        walked = self.root
        for seg in self.path:
            if isinstance(seg, int):
                if not isinstance(value, list):
                    raise ResolveError(f"{self.text}: {walked} is not a list")
                if not -len(value) <= seg < len(value):
                    raise ResolveError(f"{self.text}: {walked} has no index {seg}")
                value = value[seg]
                walked += f"[{seg}]"
            else:
                if isinstance(value, dict) and seg in value:
                    value = value[seg]
                elif isinstance(value, list) and seg.isdigit() and int(seg) < len(value):
                    value = value[int(seg)]
                else:
                    raise ResolveError(f"{self.text}: {walked} has no field {seg!r}")
                walked += f".{seg}"
        return value


@dataclass(frozen=True)
class Interp:
    """A string with references written into it."""

    parts: tuple[str | Ref, ...]


def parse_ref(body: str) -> Ref:
    m = _PATH.match(body)
    if m is None:
        raise RefSyntaxError(f"${{{body}}} is not a reference (expected ${{step}} or ${{step.field}})")
    path: list[str | int] = []
    for key, index in _SEGMENT.findall(m.group(2)):
        path.append(int(index) if index else key)
    return Ref(m.group(1), tuple(path), "${" + body.strip() + "}")


def compile_template(value: Any) -> Any:
    """Turn strings holding references into :class:`Ref` / :class:`Interp` nodes."""
    if isinstance(value, str):
        return _compile_str(value)
    if isinstance(value, dict):
        return {k: compile_template(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_template(v) for v in value]
    return value


def _compile_str(s: str) -> Any:
    if "$" not in s:
        return s
    parts: list[str | Ref] = []
    pos = 0
    for m in _REF.finditer(s):
        if m.start() > pos:
            parts.append(_literal(s[pos : m.start()]))
        parts.append("${" if m.group(0) == "$${" else parse_ref(m.group(1)))
        pos = m.end()
    if pos < len(s):
        parts.append(_literal(s[pos:]))
    refs = [p for p in parts if isinstance(p, Ref)]
    if not refs:
        return "".join(p for p in parts if isinstance(p, str))
    if len(parts) == 1:
        return parts[0]
    return Interp(tuple(parts))


def _literal(text: str) -> str:
    """Text between references; a ``${`` left in it was never closed."""
    if "${" in text:
        start = text[text.index("${"):]
        raise RefSyntaxError(f"{start!r} opens a reference that is not closed with }} "
                             "(write ${step} or ${step.field}, or $${ for a literal ${)")
    return text


def refs_in(template: Any) -> Iterator[Ref]:
    """Every reference in a compiled template."""
    if isinstance(template, Ref):
        yield template
    elif isinstance(template, Interp):
        yield from (p for p in template.parts if isinstance(p, Ref))
    elif isinstance(template, dict):
        for v in template.values():
            yield from refs_in(v)
    elif isinstance(template, list):
        for v in template:
            yield from refs_in(v)


def has_refs(template: Any) -> bool:
    return next(refs_in(template), None) is not None


def render(template: Any, lookup: Callable[[str], Any]) -> Any:
    """The template with every reference replaced by its value."""
    if isinstance(template, Ref):
        return template.resolve(lookup)
    if isinstance(template, Interp):
        out = []
        for p in template.parts:
            if isinstance(p, str):
                out.append(p)
            else:
                v = p.resolve(lookup)
                out.append(v if isinstance(v, str) else json.dumps(v))
        return "".join(out)
    if isinstance(template, dict):
        return {k: render(v, lookup) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, lookup) for v in template]
    return template
