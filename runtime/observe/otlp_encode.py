"""Spans to the OTLP protobuf request, into the official `opentelemetry-proto` messages, the way the
SDK's own encoder (`opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans`) does it,
field for field (a test holds the two to the same bytes), at a third of its cost.

Why not the SDK's: it builds every attribute as a free-standing `KeyValue` and `AnyValue`, then
copies the lists into each span, and hashes the resource (serialising all its attributes to JSON)
once per span. That was 100 us of a two-span request, in the export thread but under the GIL on the
event loop's core: the largest share of what tracing cost. Here each message is filled in place
(`add()` on the repeated fields) and the resource and scope are encoded once per batch. Only the
encoding is ours: the SDK's exporters still send it (HTTP with their retries, headers and
compression; gRPC through their channel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

__all__ = ["encode_spans"]

_KIND = {SpanKind.INTERNAL: PbSpan.SPAN_KIND_INTERNAL, SpanKind.SERVER: PbSpan.SPAN_KIND_SERVER,
         SpanKind.CLIENT: PbSpan.SPAN_KIND_CLIENT, SpanKind.PRODUCER: PbSpan.SPAN_KIND_PRODUCER,
         SpanKind.CONSUMER: PbSpan.SPAN_KIND_CONSUMER}
_HAS_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def _value(value: Any, out: AnyValue) -> None:
    """`value` into `out` (the SDK's `_encode_value`: bool before int, sequences and mappings nested)."""
    if value is None:
        out.SetInParent()
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, Sequence):
        values = out.array_value.values
        out.array_value.SetInParent()
        for item in value:
            _value(item, values.add())
    elif isinstance(value, Mapping):
        out.kvlist_value.SetInParent()
        _attributes({str(k): v for k, v in value.items()}, out.kvlist_value.values)
    else:
        raise TypeError(f"invalid attribute type {type(value).__name__}")


def _attributes(attributes: Mapping[str, Any] | None, out: Any) -> None:
    if attributes:
        for key, value in attributes.items():
            kv: KeyValue = out.add(key=key)
            _value(value, kv.value)


def _flags(parent: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else _HAS_IS_REMOTE


def _span(span: ReadableSpan, out: PbSpan) -> None:
    context, parent = span.context, span.parent
    assert context is not None
    out.trace_id = context.trace_id.to_bytes(16, "big")
    out.span_id = context.span_id.to_bytes(8, "big")
    if context.trace_state is not None:
        out.trace_state = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
    if parent:
        out.parent_span_id = parent.span_id.to_bytes(8, "big")
    out.name = span.name
    out.kind = _KIND[span.kind]
    if span.start_time is not None:
        out.start_time_unix_nano = span.start_time
    if span.end_time is not None:
        out.end_time_unix_nano = span.end_time
    _attributes(span.attributes, out.attributes)
    for event in span.events:
        pb_event = out.events.add(name=event.name, time_unix_nano=event.timestamp,
                                  dropped_attributes_count=getattr(event, "dropped_attributes", 0))
        _attributes(event.attributes, pb_event.attributes)

    for link in span.links:
        pb_link = out.links.add(trace_id=link.context.trace_id.to_bytes(16, "big"),
                                span_id=link.context.span_id.to_bytes(8, "big"), flags=_flags(link.context),
                                dropped_attributes_count=link.dropped_attributes)
        _attributes(link.attributes, pb_link.attributes)
    if span.status is not None:
        out.status.SetInParent()
        out.status.code = span.status.status_code.value  # type: ignore[assignment]
        if span.status.description is not None:
            out.status.message = span.status.description
    out.dropped_attributes_count = span.dropped_attributes
    out.dropped_events_count = span.dropped_events
    out.dropped_links_count = span.dropped_links
    out.flags = _flags(parent)


def encode_spans(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """One export request holding `spans`, grouped by resource, then by instrumentation scope."""
    groups: dict[Resource, dict[InstrumentationScope | None, list[ReadableSpan]]] = {}
    for span in spans:
        groups.setdefault(span.resource, {}).setdefault(span.instrumentation_scope or None, []).append(span)
    request = ExportTraceServiceRequest()
    for resource, scopes in groups.items():
        pb_resource = request.resource_spans.add()
        pb_resource.resource.SetInParent()
        _attributes(resource.attributes, pb_resource.resource.attributes)
        if resource.schema_url:
            pb_resource.schema_url = resource.schema_url
        for scope, members in scopes.items():
            pb_scope = pb_resource.scope_spans.add()
            pb_scope.scope.SetInParent()
            if scope is not None:
                pb_scope.scope.name = scope.name
                if scope.version:
                    pb_scope.scope.version = scope.version
                _attributes(scope.attributes, pb_scope.scope.attributes)
                if scope.schema_url:
                    pb_scope.schema_url = scope.schema_url
            out = pb_scope.spans
            for span in members:
                _span(span, out.add())
    return request
