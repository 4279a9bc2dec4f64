"""The `observability` section: Prometheus metrics, log lines, and OpenTelemetry export. OTLP header
values are secret references; one naming a credential must not be literal (it would be in the plan)."""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Mapping
from typing import Any

from sidegate.compiler.diagnostics import Collector, join_pointer
from sidegate.runtime.plan import (
    Header,
    LogFormat,
    LogLevel,
    Logs,
    Metrics,
    Observability,
    OtlpProtocol,
    Secret,
    SecretSource,
    Tracing,
)

__all__ = ["resolve_observability"]

_CREDENTIAL = re.compile(r"(?i)authorization|.*(key|token|secret|password|auth|team).*")


def resolve_observability(
    raw: Mapping[str, Any], secret: Callable[[Any, str], Secret | None], seconds: Callable[[str], float],
    out: Collector,
) -> Observability:
    """Lower `observability`; problems go to `out`."""
    metrics = raw.get("metrics", {})
    logs = raw.get("logs", {})
    return Observability(
        metrics=Metrics(enabled=metrics.get("enabled", True), path=metrics.get("path", "/metrics")),
        logs=Logs(
            format=LogFormat(logs.get("format", "json")),
            level=LogLevel(logs.get("level", "info")),
            bodies=logs.get("bodies", False),
        ),
        tracing=None if "tracing" not in raw else _tracing(raw["tracing"], secret, seconds, out),
    )


def _tracing(
    raw: Mapping[str, Any], secret: Callable[[Any, str], Secret | None], seconds: Callable[[str], float],
    out: Collector,
) -> Tracing:
    pointer = "/observability/tracing"
    headers = []
    for name in sorted(raw.get("headers", {})):
        where = join_pointer(pointer, "headers", name)
        value = secret(raw["headers"][name], where) or Secret(parts=())
        if _CREDENTIAL.fullmatch(name) and value.parts and all(p.source is SecretSource.TEXT for p in value.parts):
            out.error("secret.literal", where, f"the {name} header must be a reference (${{ENV}}, {{env: ...}} or "
                      "{file: ...}); literal secrets would be written into the plan")
        headers.append(Header(name=name, value=value))
    interval = seconds(raw.get("metrics_interval", "60s"))
    if interval < 1.0:
        out.error("observability.interval-range", f"{pointer}/metrics_interval",
                  f"metrics_interval must be at least 1s (got {raw['metrics_interval']})")
    timeout = seconds(raw.get("timeout", "10s"))
    if not 0.1 <= timeout <= 300:
        out.error("observability.timeout-range", f"{pointer}/timeout",
                  f"timeout must be between 100ms and 300s (got {raw['timeout']})")
    endpoint = raw.get("endpoint")
    protocol = OtlpProtocol(raw.get("protocol", "http/protobuf"))
    if protocol is OtlpProtocol.GRPC and endpoint is not None and endpoint.rstrip("/").endswith(("/v1/traces",
                                                                                                  "/otel")):
        out.error("observability.grpc-path", f"{pointer}/endpoint",
                  "a gRPC endpoint is host and port only (http://host:4317); this looks like an OTLP/HTTP URL "
                  "(protocol: http/protobuf)")
    return Tracing(
        endpoint=endpoint,
        protocol=protocol,
        headers=tuple(headers),
        sampling=None if "sampling" not in raw else float(raw["sampling"]),
        resource=types.MappingProxyType(dict(sorted(raw.get("resource", {}).items()))),
        content=raw.get("content", False),
        logs=raw.get("logs", False),
        metrics=raw.get("metrics", False),
        metrics_interval=interval,
        timeout=timeout,
        queue_size=raw.get("queue_size", 2048),
    )
