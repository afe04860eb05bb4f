"""Traces and metrics of runs in OpenTelemetry, following the GenAI semantic conventions.

The tracer (:class:`~charter.telemetry.tracer.Tracer`) is a watcher of committed
events: the engine knows nothing about it, and a slow or dead collector never
slows a run. It is turned on by the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` variables, ``charter --otel URL``, or
``Charter(tracing=...)``; ``OTEL_SDK_DISABLED=true`` turns it off. When it is
off nothing here imports OpenTelemetry, and no watcher is installed.

This package may import the events, the engine's watcher types, the
workspace's redaction and errors; ``tracer.py`` alone imports OpenTelemetry
(the optional extra ``charter[otel]``). The facade imports it lazily.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..engine.watchers import Feed
    from ..models import Model
    from .tracer import Tracer

#: the content-capture variable of the conventions' instrumentations (NO_CONTENT, SPAN_ONLY, SPAN_AND_EVENT,
#: EVENT_ONLY; ``true`` as older instrumentations had it)
CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
#: every variable the OTLP exporters take a URL from
URL_VARIABLES = (*ENDPOINTS, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")


def disabled(env: Mapping[str, str] | None = None) -> bool:
    """``OTEL_SDK_DISABLED=true``: no telemetry at all, whatever else asks for it."""
    env = os.environ if env is None else env
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint is set, and the SDK is not disabled."""
    env = os.environ if env is None else env
    return not disabled(env) and any(env.get(name, "").strip() for name in ENDPOINTS)


def capture_content(env: Mapping[str, str] | None = None) -> bool:
    """Whether prompts, answers, tool arguments and results go on spans (opt-in; off by default)."""
    env = os.environ if env is None else env
    return env.get(CAPTURE, "").strip().lower() in ("span_only", "span_and_event", "true")


def check_endpoint(url: str, given_as: str) -> str:
    """``url`` if it can be a collector's OTLP/HTTP address (``http://`` or ``https://`` and a host), else a
    :class:`ConfigError` naming where it was ``given_as`` (the SDK would only say so when a run's spans leave)."""
    try:
        parts = urlsplit(url.strip())
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 -- a port that is not a number (or out of range) raises here
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{given_as}: {url!r} is not a collector's address: give an http:// or https:// URL "
                          "with a host, as in http://localhost:4318")
    return url


def check_environment(env: Mapping[str, str] | None = None) -> None:
    """A :class:`ConfigError` if a variable the exporters read a URL from holds something else."""
    env = os.environ if env is None else env
    for name in URL_VARIABLES:
        if env.get(name, "").strip():
            check_endpoint(env[name], name)


def require() -> None:
    """Raise a :class:`ConfigError` saying how to install the extra, if OpenTelemetry is missing."""
    missing = [name for name in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
               if _spec(name) is None]
    if missing:
        raise ConfigError("tracing was asked for, but OpenTelemetry is not installed (missing "
                          f"{', '.join(missing)}): pip install 'charter[otel]'")


def _spec(name: str) -> Any:
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None


def make_tracer(**options: Any) -> Tracer:
    """A :class:`~charter.telemetry.tracer.Tracer` (options as its), or a clear error if the extra is missing."""
    require()
    from .tracer import Tracer

    return Tracer(**options)


def tracer_for(tracing: Any, model: Model | None, observe: Callable[[Any], None]) -> Any:
    """The tracer ``Charter(tracing=...)`` asks for (observed with ``observe``), or None; see :class:`Charter`."""
    if tracing is False or (tracing is None and not requested()):
        return None
    if tracing is None or tracing is True:
        if disabled():
            return None
        tracing = make_tracer()
    if getattr(tracing, "default_model", "") is None:  # to name a model call that failed
        tracing.default_model = model.name if model is not None else os.environ.get("CHARTER_MODEL") or None
    observe(tracing)
    return tracing


def run_context(tracer: Any) -> dict[str, str]:
    """A new run's ``RunCreated.trace``: under the caller's span, or a new trace if ``tracer``; nothing to
    store if neither (and OpenTelemetry is not imported for it)."""
    if tracer is None and "opentelemetry.trace" not in sys.modules:
        return {}
    from .context import new_run_trace

    return new_run_trace(tracing=tracer is not None)


def close(tracer: Any, feeds: Sequence[Feed]) -> None:
    """At an app's close: the tracer is given what its feeds hold, then sends it, in bounded time."""
    if tracer is None:
        return
    for feed in feeds:
        feed.flush(tracer.close_timeout)
    tracer.close()


def __getattr__(name: str) -> Any:
    if name == "Tracer":  # imported when asked for: OpenTelemetry loads only for those who trace
        require()
        from .tracer import Tracer

        return Tracer
    raise AttributeError(name)


__all__ = [
    "Tracer",
    "capture_content",
    "check_endpoint",
    "check_environment",
    "close",
    "disabled",
    "make_tracer",
    "requested",
    "require",
    "run_context",
    "tracer_for",
]
