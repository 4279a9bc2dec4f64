"""The plan's observability section: Prometheus metrics, the log lines, and OpenTelemetry export
(traces, and over the same OTLP endpoint the log records and the GenAI metrics)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from sidegate.runtime.plan.values import Header

__all__ = ["LogFormat", "LogLevel", "Logs", "Metrics", "Observability", "OtlpProtocol", "Tracing"]


class LogFormat(enum.Enum):
    """How log lines are written."""

    JSON = "json"
    TEXT = "text"


class LogLevel(enum.Enum):
    """The lowest level written."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class Metrics:
    """The Prometheus endpoint."""

    enabled: bool
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Logs:
    """Request and server logs."""

    format: LogFormat
    level: LogLevel
    bodies: bool


class OtlpProtocol(enum.Enum):
    """The OTLP transport."""

    HTTP = "http/protobuf"
    GRPC = "grpc"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tracing:
    """OpenTelemetry export (`observability.tracing`). Values left out of the spec are None here and
    come from the standard `OTEL_*` environment variables at start, else the SDK's defaults."""

    endpoint: str | None
    """The OTLP base URL (`/v1/traces`, `/v1/logs`, `/v1/metrics` are appended for OTLP/HTTP)."""
    protocol: OtlpProtocol
    headers: tuple[Header, ...]
    """Sent with every export (values are secret references); empty: `OTEL_EXPORTER_OTLP_HEADERS`."""
    sampling: float | None
    """The ratio of new traces sampled (parent-based: a client's sampled flag is followed)."""
    resource: Mapping[str, str]
    """Resource attributes over `OTEL_RESOURCE_ATTRIBUTES` (`service.name` defaults to sidegate)."""
    content: bool
    """Record prompts and completions on the attempt spans (scrubbed of secrets)."""
    logs: bool
    """Export the log records over OTLP too."""
    metrics: bool
    """Export the GenAI metrics over OTLP."""
    metrics_interval: float
    """Seconds between two metric exports."""
    timeout: float
    """Seconds one export may take (retries included) before its batch is dropped and counted."""
    queue_size: int
    """Spans (and log records) buffered for export; past it they are dropped and counted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Observability:
    """Metrics, logs and traces."""

    metrics: Metrics
    logs: Logs
    tracing: Tracing | None = None
