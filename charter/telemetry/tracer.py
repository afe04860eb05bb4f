"""The tracer: a watcher of committed events that sends runs to OpenTelemetry as spans and GenAI metrics.

It is given each commit on a thread of its own (see
:mod:`charter.engine.watchers`), turns it into finished spans with
:class:`~charter.telemetry.spans.SpanBuilder`, and hands them to the SDK's
batch processor, which exports over OTLP/HTTP on another thread, with the
SDK's bounded timeouts: a collector that is slow, gone, or never answers
costs a run nothing. :meth:`Tracer.close` waits a bounded time for the last
spans and metrics to leave, so a process exits promptly either way.

Spans are made with the ids :mod:`charter.telemetry.context` derives (an id
generator that hands out the id asked for), so that the spans of one run made
in several processes join one trace. This is the one module that imports
OpenTelemetry (the ``charter[otel]`` extra); the package imports it lazily.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from ..engine.watchers import RunSnapshot
from ..events import Event
from . import capture_content as _capture_from_env
from . import check_endpoint, check_environment
from .spans import CLIENT, Measure, SpanBuilder, SpanRecord

log = logging.getLogger("charter.telemetry")

#: the semantic conventions followed: the GenAI conventions as of v1.41.0 (the last release of them
#: in open-telemetry/semantic-conventions), what ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``
#: selects in instrumentations that had an older version to keep
SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.0"
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


class _ExportLog(logging.Filter):
    """Keeps the OTLP exporters' retries out of a person's terminal: a collector that cannot be reached is
    said in one line on Charter's logger, and each retry goes there at debug. What is not about reaching it
    (a 404 for a wrong path, a refused key, a bad certificate) passes as the SDK logs it: that needs fixing."""

    #: the messages of a batch that did not reach the collector, or is waiting to be sent to it again
    UNREACHED = ("Transient error", "Failed to export %s batch due to timeout", "Shutdown in progress")

    def __init__(self) -> None:
        super().__init__()
        self.url = ""
        self.said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.UNREACHED):
            return True
        log.debug("OpenTelemetry: %s", record.getMessage())
        if not self.said:
            self.said = True
            why = _why(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
            log.warning("the OpenTelemetry collector at %s could not be reached%s: traces and metrics are not "
                        "sent while it cannot be (the runs' log keeps everything)", self.url or "(unknown)",
                        f" ({why})" if why else "")
        return False


def _why(error: object) -> str:
    """The words that matter in a failed export's error: the SDK retries a refused connection, a name that
    does not resolve and a refused certificate alike, and the last two are a configuration to fix."""
    if isinstance(error, str):  # an HTTP reason: "Service Unavailable"
        return error
    text = str(error)
    for pattern in (r"\[SSL: [A-Z_]+\] ([^'\"()]+)", r"\[Errno -?\d+\] ([^'\"()]+)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1).strip()
    return "timed out" if "timed out" in text.lower() else type(error).__name__


_EXPORT_LOG = _ExportLog()
_EXPORTERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
              "opentelemetry.exporter.otlp.proto.http.metric_exporter")


def _quiet_exporters(url: str) -> None:
    """Route the exporters' retries (see :class:`_ExportLog`); a new tracer may say its line again."""
    _EXPORT_LOG.url, _EXPORT_LOG.said = url, False
    for name in _EXPORTERS:
        logger = logging.getLogger(name)
        if _EXPORT_LOG not in logger.filters:
            logger.addFilter(_EXPORT_LOG)


class _GivenIds(IdGenerator):
    """Hands out the ids the tracer asks for (derived, the same in every process), else random ones."""

    def __init__(self) -> None:
        self.trace_id: int | None = None
        self.span_id: int | None = None
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        given, self.span_id = self.span_id, None
        return given or self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        given, self.trace_id = self.trace_id, None
        return given or self._random.generate_trace_id()


class Tracer:
    """Charter's runs as OpenTelemetry traces and GenAI metrics: give it to ``Charter(tracing=...)``
    or :meth:`Charter.observe <charter.Charter.observe>`.

    Args:
        endpoint: an OTLP/HTTP base URL (``http://collector:4318``); default: the SDK's reading of
            ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (headers, timeout,
            compression and certificates from their ``OTEL_EXPORTER_OTLP_*`` variables too).
        exporter: a span exporter instead of OTLP (the SDK's ``InMemorySpanExporter`` in tests).
        metric_reader: a metric reader instead of OTLP (``InMemoryMetricReader`` in tests); with an
            ``exporter`` and no reader, no metrics.
        capture_content: record prompts, answers, tool arguments and results on spans (secrets masked);
            default: ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (``SPAN_ONLY``, ...).
        default_model: the model of steps that name none (``provider:model``), to name a model call that
            failed; the facade sets its own.
        close_timeout: the most :meth:`close` waits for the last spans and metrics to leave.
        resource: resource attributes (``service.name`` defaults to ``charter``; ``OTEL_SERVICE_NAME``
            and ``OTEL_RESOURCE_ATTRIBUTES`` are read as the SDK reads them).
    """

    def __init__(self, *, endpoint: str | None = None, exporter: SpanExporter | None = None,
                 metric_reader: MetricReader | None = None, capture_content: bool | None = None,
                 default_model: str | None = None, close_timeout: float = 2.0,
                 resource: Mapping[str, Any] | None = None) -> None:
        self.close_timeout = close_timeout
        self._builder = SpanBuilder(capture_content=_capture_from_env() if capture_content is None else capture_content,
                                    default_model=default_model)
        self._lock = threading.Lock()
        self._closed = False
        res = _resource(resource)
        if exporter is None:  # a URL that cannot be a collector's is refused now, not when spans leave
            if endpoint is None:
                check_environment()
            else:
                check_endpoint(endpoint, "Tracer(endpoint=...)")
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=_signal(endpoint, "traces"))
            _quiet_exporters(endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
                             or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())
            if metric_reader is None and _metrics_wanted(endpoint):
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

                metric_reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=_signal(endpoint, "metrics")))
        self._ids = _GivenIds()
        # the SDK's exit hooks would wait up to 30 s for a collector that never answers: close() is bounded
        self._provider = TracerProvider(resource=res, id_generator=self._ids, shutdown_on_exit=False)
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        version = _version()
        self._tracer = self._provider.get_tracer("charter", version, schema_url=SCHEMA_URL)
        self._meters = MeterProvider(metric_readers=[metric_reader] if metric_reader else [], resource=res,
                                     shutdown_on_exit=False)
        meter = self._meters.get_meter("charter", version, schema_url=SCHEMA_URL)
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)

    @property
    def default_model(self) -> str | None:
        return self._builder.default_model

    @default_model.setter
    def default_model(self, spec: str | None) -> None:
        self._builder.default_model = spec

    def __call__(self, snap: RunSnapshot, events: Sequence[Event]) -> None:
        """A commit of one run: its finished spans to the processor, its model calls to the metrics."""
        with self._lock:  # the engine's feed and a worker's may call at once
            if self._closed:
                return
            try:
                spans, measures = self._builder.feed(snap, events)
                for record in spans:
                    self._emit(record)
                for m in measures:
                    self._record(m)
            except Exception:  # one odd commit loses its spans, not every later one
                log.warning("run %s: spans of a commit could not be made", snap.run_id, exc_info=True)

    def _emit(self, r: SpanRecord) -> None:
        t = r.trace
        flags = TraceFlags(TraceFlags.SAMPLED if t.sampled else TraceFlags.DEFAULT)
        state = TraceState.from_header([t.state]) if t.state else None
        parent = r.parent_id if r.parent_id is not None else t.parent_id
        if parent is None:
            ctx = Context()  # the run's root, in a trace of its own: the id generator gives the run's trace id
        else:
            ctx = trace_api.set_span_in_context(NonRecordingSpan(SpanContext(t.trace_id, parent, True, flags, state)))
        self._ids.trace_id, self._ids.span_id = t.trace_id, r.span_id
        span = self._tracer.start_span(r.name, context=ctx, kind=SpanKind.CLIENT if r.kind == CLIENT else
                                       SpanKind.INTERNAL, attributes=r.attributes, start_time=_ns(r.start))
        self._ids.trace_id = self._ids.span_id = None
        if r.error is not None:
            span.set_status(Status(StatusCode.ERROR, r.error))
        span.end(end_time=_ns(max(r.end, r.start)))

    def _record(self, m: Measure) -> None:
        (self._tokens if m.metric == "tokens" else self._duration).record(m.value, m.attributes)

    def flush(self, timeout: float = 10.0) -> None:
        """Export what is pending now (for tests, and before a report that wants the spans out)."""
        self._provider.force_flush(int(timeout * 1000))
        self._meters.force_flush(int(timeout * 1000))

    def close(self, timeout: float | None = None) -> None:
        """Export what is left and stop, waiting at most ``timeout`` (default ``close_timeout``) seconds:
        past it, what did not leave is dropped and the process may exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        done = threading.Thread(target=self._shutdown, name="charter-otel-close", daemon=True)
        done.start()
        done.join(self.close_timeout if timeout is None else timeout)
        if done.is_alive():  # said once: not again if it could not be reached at all
            log.log(logging.DEBUG if _EXPORT_LOG.said else logging.WARNING,
                    "the OpenTelemetry collector did not take the last spans in time; they are dropped")

    def _shutdown(self) -> None:
        for provider in (self._meters, self._provider):
            try:
                provider.shutdown()
            except Exception:  # a collector that failed is the collector's problem, never the run's
                log.warning("OpenTelemetry shutdown failed", exc_info=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("charter")
    except PackageNotFoundError:
        return ""


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _signal(endpoint: str | None, signal: str) -> str | None:
    """The URL of a signal under a base endpoint, as the SDK forms it from ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    return None if endpoint is None else endpoint.rstrip("/") + f"/v1/{signal}"


def _metrics_wanted(endpoint: str | None) -> bool:
    """Metrics go where an endpoint for them was given (a traces-only endpoint sends no metrics)."""
    if os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none":
        return False
    return endpoint is not None or any(os.environ.get(n, "").strip() for n in (
        "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


def _resource(given: Mapping[str, Any] | None) -> Resource:
    attrs = dict(given or {})
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not named:
        attrs.setdefault("service.name", "charter")
    return Resource.create(attrs)


__all__ = ["DURATION_BUCKETS", "SCHEMA_URL", "TOKEN_BUCKETS", "Tracer"]
