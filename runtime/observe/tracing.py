"""OpenTelemetry export (`observability.tracing`): the SDK's TracerProvider (resource, ids, sampler)
with sidegate's span queue (:mod:`runtime.observe.batch`) and the SDK's OTLP exporter (HTTP/protobuf
or gRPC), and with `logs`/`metrics` a LoggerProvider (the SDK's batch processor) and a MeterProvider
on the same endpoint.

Imported only when the plan has a `tracing` section (so a sidecar without it loads nothing of
OpenTelemetry). Exporting happens in threads of its own: on the event loop a span's end and a log
record only append to a bounded queue. When the queue is full the oldest item is dropped, and a batch the
collector does not take within `timeout` is dropped too; both are counted in
`sidegate_otlp_dropped{signal, reason}`. Values the spec leaves out come from the standard `OTEL_*`
environment variables (endpoint, headers, sampler argument, resource attributes, batch delays).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from prometheus_client import Counter

from sidegate.runtime.observe.batch import SpanQueue
from sidegate.runtime.observe.otlp_send import grpc_spans, http_spans
from sidegate.runtime.observe.record import HashedResource
from sidegate.runtime.plan import OtlpProtocol, Tracing

__all__ = ["Exporters", "build_exporters", "sampling_ratio", "service_resource"]

_LOG = logging.getLogger("opentelemetry")


class _Errors(logging.Handler):
    """Keeps the SDK's last export complaint (its own log lines would break the JSON log stream);
    sidegate reports it in a warning line of its own (see `Telemetry.run`)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()[:500]


class _QueueDrops:
    """The batch processor's metrics hook: counts what it drops from a full queue."""

    def __init__(self, dropped: Counter, signal: str) -> None:
        self._full = dropped.labels(signal, "queue_full")
        self._closed = dropped.labels(signal, "shutdown")

    def register_queue_size(self, get_queue_size: Callable[[], int]) -> None:
        return None

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        (self._full if error_type == "queue_full" else self._closed).inc(count)

    def finish_items(self, count: int) -> None:
        return None


def _count_queue_drops(processor: BatchLogRecordProcessor, hook: _QueueDrops) -> None:
    inner = getattr(processor, "_batch_processor", None)
    if inner is not None and hasattr(inner, "_metrics"):
        inner._metrics = hook


class _Spans(SpanExporter):
    """The OTLP span exporter, counting the spans of every batch it could not deliver."""

    def __init__(self, inner: SpanExporter, failed: Counter) -> None:
        self.inner, self._failed, self._closed = inner, failed, False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # e.g. a batch that cannot be encoded: dropped, counted, reported
            _LOG.error("span export failed: %s", exc)
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._failed.inc(len(spans))
        return result

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _Logs(LogRecordExporter):
    """The OTLP log exporter, counting the records of every batch it could not deliver."""

    def __init__(self, inner: LogRecordExporter, failed: Counter) -> None:
        self.inner, self._failed, self._closed = inner, failed, False

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result = self.inner.export(batch)
        if result is not LogRecordExportResult.SUCCESS:
            self._failed.inc(len(batch))
        return result

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _schedule_delay() -> float:
    """Seconds between span exports: `OTEL_BSP_SCHEDULE_DELAY` (milliseconds), else the SDK's 5 s."""
    try:
        return max(0.001, float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "5000")) / 1000)
    except ValueError:
        return 5.0


def sampling_ratio(config: Tracing) -> float:
    """The spec's ratio, else `OTEL_TRACES_SAMPLER_ARG`, else 1."""
    if config.sampling is not None:
        return config.sampling
    try:
        return min(1.0, max(0.0, float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1"))))
    except ValueError:
        return 1.0


def service_resource(config: Tracing) -> Resource:
    """The spec's resource attributes over `OTEL_RESOURCE_ATTRIBUTES`; `service.name` is the spec's,
    else `OTEL_SERVICE_NAME` (or the environment's attribute), else `sidegate`."""
    attributes = dict(config.resource)
    from_env = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if "service.name" not in attributes and not from_env:
        attributes["service.name"] = "sidegate"
    return HashedResource(Resource.create(attributes))


def _url(config: Tracing, signal: str) -> str | None:
    if config.endpoint is None:
        return None  # OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT or the SDK's default
    return config.endpoint if config.protocol is OtlpProtocol.GRPC else f"{config.endpoint.rstrip('/')}/v1/{signal}"


def _exporter(config: Tracing, signal: str, headers: Mapping[str, str] | None) -> Any:
    """The SDK's OTLP exporter of `signal` (traces, logs, metrics) for the configured protocol."""
    url, timeout = _url(config, signal), config.timeout
    if config.protocol is OtlpProtocol.GRPC:
        meta = None if headers is None else {k.lower(): v for k, v in headers.items()}
        if signal == "traces":
            return grpc_spans(endpoint=url, headers=meta, timeout=timeout)
        if signal == "logs":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
            return GrpcLogs(endpoint=url, headers=meta, timeout=timeout)
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
        return GrpcMetrics(endpoint=url, headers=meta, timeout=timeout)
    if signal == "traces":
        return http_spans(endpoint=url, headers=headers, timeout=timeout)
    if signal == "logs":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        return OTLPLogExporter(endpoint=url, headers=headers, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    return OTLPMetricExporter(endpoint=url, headers=headers, timeout=timeout)


class Exporters:
    """The providers and their exporters, and their orderly (bounded) shutdown."""

    def __init__(self, tracer: TracerProvider, spans: SpanQueue, ratio: TraceIdRatioBased,
                 logger: LoggerProvider | None, meter: MeterProvider | None, closers: list[Callable[[], None]],
                 errors: _Errors) -> None:
        self.tracer_provider, self.logger_provider, self.meter_provider = tracer, logger, meter
        self.span_queue, self.ratio = spans, ratio
        self._closers = closers
        self.errors = errors

    def shutdown(self, budget: float) -> None:
        """Flush what is queued and stop (blocking: call in a worker thread). Past `budget` seconds the
        exporters are closed: what is left is dropped and counted, so a collector that is down
        cannot hold the sidecar's exit."""
        timer = threading.Timer(budget, self._abort)
        timer.daemon = True
        timer.start()
        try:
            self.tracer_provider.shutdown()
            if self.logger_provider is not None:
                self.logger_provider.shutdown()
            if self.meter_provider is not None:
                self.meter_provider.shutdown(timeout_millis=budget * 1000)
        finally:
            timer.cancel()

    def _abort(self) -> None:
        for close in self._closers:
            with contextlib.suppress(Exception):  # best effort: the process is stopping anyway
                close()


def build_exporters(config: Tracing, headers: Mapping[str, str] | None, dropped: Counter) -> Exporters:
    """Set up the providers (blocking only in the SDK's constructors; no network I/O happens here)."""
    errors = next((h for h in _LOG.handlers if isinstance(h, _Errors)), None)
    if errors is None:  # once per process (a test process serves many gateways)
        errors = _Errors()
        _LOG.addHandler(errors)
    _LOG.propagate = False  # the SDK's complaints go to `errors`, not as plain text onto stderr
    # a warning per span dropped from a full queue would cost more than the span: they are counted instead
    logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)
    resource = service_resource(config)
    ratio = TraceIdRatioBased(sampling_ratio(config))
    tracer = TracerProvider(resource=resource, sampler=ParentBased(ratio))
    spans = _Spans(_exporter(config, "traces", headers), dropped.labels("spans", "export_failed"))
    processor = SpanQueue(spans, config.queue_size, min(512, config.queue_size), _schedule_delay(),
                          dropped.labels("spans", "queue_full"), dropped.labels("spans", "shutdown"))
    tracer.add_span_processor(processor)
    closers: list[Callable[[], None]] = [spans.shutdown]
    logger = meter = None
    if config.logs:
        logs = _Logs(_exporter(config, "logs", headers), dropped.labels("logs", "export_failed"))
        logger = LoggerProvider(resource=resource)
        log_processor = BatchLogRecordProcessor(logs, max_queue_size=config.queue_size,
                                                max_export_batch_size=min(512, config.queue_size))
        _count_queue_drops(log_processor, _QueueDrops(dropped, "logs"))
        logger.add_log_record_processor(log_processor)
        closers.append(logs.shutdown)
    if config.metrics:
        metric_exporter = _exporter(config, "metrics", headers)
        reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=config.metrics_interval * 1000,
                                               export_timeout_millis=config.timeout * 1000)
        meter = MeterProvider(resource=resource, metric_readers=[reader])
        closers.append(metric_exporter.shutdown)
    return Exporters(tracer, processor, ratio, logger, meter, closers, errors)

