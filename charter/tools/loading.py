"""Loading tools from where a run says they came from: tool files, modules, and other kinds of source.

A run records its tool sources so that another process can load its tools
again. Besides tool files and modules, a source may be a file of another
kind that a higher layer knows how to turn into tools: the workspace registers
its ``charter.yaml`` here (see :func:`register_source_kind`), so this module
needs no knowledge of it and imports only the tool and registry modules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .registry import Registry
from .tool import Tool

# A loader takes a source and the registry loaded so far, and returns the registry to go on with.
SourceLoader = Callable[[str, Registry], Registry]
_loaders: dict[str, SourceLoader] = {}


def register_source_kind(suffixes: Iterable[str], loader: SourceLoader) -> None:
    """Have :func:`load_tools` load sources whose names end with one of ``suffixes`` with ``loader``."""
    for suffix in suffixes:
        _loaders[suffix] = loader


def load_tools(sources: Iterable[str]) -> Registry:
    """Import tool files (``path/to/tools.py``) or modules (``package.tools``), or a workspace file.

    Every :class:`Tool` defined at a module's top level joins the registry.
    File paths are made absolute, so a run can load them again later from
    anywhere.
    """
    registry = Registry()
    for source in sources:
        loader = next((f for suffix, f in _loaders.items() if source.endswith(suffix)), None)
        if loader is not None:
            registry = loader(source, registry)
            continue
        canonical, module = _import_source(source)
        registry.sources.append(canonical)
        found = [v for v in vars(module).values() if isinstance(v, Tool)]
        if not found:
            raise ConfigError(f"no tools found in {source!r}: decorate functions with @tool")
        for t in found:
            registry.add(t if t.source == canonical else dataclasses.replace(t, source=canonical))
    return registry


def _import_source(source: str) -> tuple[str, Any]:
    looks_like_file = source.endswith(".py") or "/" in source or Path(source).exists()
    if looks_like_file:
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"tool file not found: {source}")
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
        mod_name = f"_charter_tools_{path.stem}_{digest}"
        if mod_name in sys.modules:
            return str(path), sys.modules[mod_name]
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import tool file {source}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[mod_name]
            raise ConfigError(f"importing tool file {source} failed: {type(exc).__name__}: {exc}") from exc
        return str(path), module
    try:
        return source, importlib.import_module(source)
    except ImportError as exc:
        raise ConfigError(f"cannot import tool module {source!r}: {exc}") from exc
