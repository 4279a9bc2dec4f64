"""The SDK's OTLP span exporters, sending what :mod:`runtime.observe.otlp_encode` encodes.

gRPC: the exporter's own hook (`_translate_data`) is the encoder. HTTP: the SDK's exporter encodes
inline in `export`, so `export` here encodes and hands the bytes to the exporter's own HTTP client
(its retries with backoff, its headers, compression and timeout), keeping its size limit. Should a
later SDK no longer have that client, the exporter's own `export` runs instead: slower, the same
on the wire. Each protocol's SDK module is imported only when the spec asks for it (gRPC's is large).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from sidegate.runtime.observe.otlp_encode import encode_spans, encode_spans_bytes

__all__ = ["grpc_spans", "http_spans"]

_LOG = logging.getLogger("opentelemetry.sidegate")


def grpc_spans(**options: Any) -> SpanExporter:
    """OTLP/gRPC spans (the SDK's exporter; `options` are its own), encoded by sidegate's encoder."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    class GrpcSpans(OTLPSpanExporter):
        def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
            return encode_spans(data)

    return GrpcSpans(**options)


def http_spans(**options: Any) -> SpanExporter:
    """OTLP/HTTP (protobuf) spans (the SDK's exporter; `options` are its own), encoded by sidegate's."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    class HttpSpans(OTLPSpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            client = getattr(self, "_client", None)
            if client is None or self._shutdown:
                return super().export(spans)
            data = encode_spans_bytes(spans)
            limit = getattr(self, "_max_request_size", None)
            if limit is not None and len(data) > limit:
                _LOG.warning("Dropping span batch: %d bytes exceeds max_request_size %d bytes.", len(data), limit)
                return SpanExportResult.FAILURE
            return SpanExportResult.SUCCESS if client.export(data).success else SpanExportResult.FAILURE

    return HttpSpans(**options)
