"""Spans recorded as plain data and handed to the SDK's batch processor when they end.

The SDK's live `Span` validates and copies every attribute into a locked `BoundedAttributes`, runs
the processors' `on_start`, and takes locks at each change: on the event loop that was most of what
tracing cost a request (27% of a non-stream request's throughput at c=50 with two spans each). Here a
span is a slotted record of what sidegate itself sets (a dict of attributes it builds from values it
controls, its events, its status); at its end, when sampled, it becomes the SDK's `ReadableSpan` and
goes to the `BatchSpanProcessor`'s `on_end` (one queue append), from which the SDK's own OTLP
exporter sends it as before. Ids come from the provider's id generator and the sampling decision
from its sampler (`ParentBased(TraceIdRatioBased)`), once per trace root: children inherit it.
"""

from __future__ import annotations

from time import time_ns
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    get_current_span,
    set_span_in_context,
)

__all__ = ["HashedResource", "Recorder", "Span", "traceparent"]

_SAMPLED, _UNSAMPLED = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
_EMPTY_STATE = TraceState()


def traceparent(context: SpanContext) -> list[tuple[str, str]]:
    """W3C `traceparent` (and `tracestate`) of a span context, as the SDK's propagator writes them."""
    out = [("traceparent", f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}")]
    if context.trace_state:
        out.append(("tracestate", context.trace_state.to_header()))
    return out


class HashedResource(Resource):
    """A resource with its hash computed once: the OTLP encoders group every span and log record of
    a batch by resource, and `Resource.__hash__` serialises all its attributes to JSON each time."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return other is self or super().__eq__(other)


class Recorder:
    """Ids, sampling decisions and the hand-off of finished spans to the SDK's processor."""

    def __init__(self, provider: TracerProvider, processor: SpanProcessor) -> None:
        resource = provider.resource
        self.resource = resource if isinstance(resource, HashedResource) else HashedResource(resource)
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.scope = InstrumentationScope("sidegate")
        self.on_end = processor.on_end

    def root(self, name: str, kind: SpanKind, parent: Context | None, attributes: dict[str, Any]) -> Span:
        """A span opened under a context that is not one of ours (the client's `traceparent`, or none)."""
        remote = INVALID_SPAN_CONTEXT if parent is None else get_current_span(parent).get_span_context()
        parent_ctx = remote if remote.is_valid else None
        trace_id = remote.trace_id if parent_ctx is not None else self.ids.generate_trace_id()
        result = self.sampler.should_sample(parent, trace_id, name, kind, attributes)
        if result.attributes:
            attributes.update(result.attributes)
        return Span(self, name, kind, trace_id, parent_ctx, result.decision.is_sampled(),  # type: ignore[no-untyped-call]
                    result.trace_state or _EMPTY_STATE, attributes)

    def finish(self, span: Span) -> None:
        """Hand a sampled span that ended to the batch processor (a bounded queue append)."""
        context = SpanContext(span.trace_id, span.span_id, False, _SAMPLED, span.trace_state)
        self.on_end(ReadableSpan(span.name, context, span.parent, self.resource, span.attributes, span.events or (),
                                 (), span.kind, status=span.status, start_time=span.start, end_time=time_ns(),
                                 instrumentation_scope=self.scope))


class Span:
    """One span being recorded. Not sampled, it still has ids: its context propagates (flags 00)."""

    __slots__ = ("attributes", "ended", "events", "kind", "name", "parent", "recorder", "recording", "span_id",
                 "start", "status", "trace_id", "trace_state")

    def __init__(self, recorder: Recorder, name: str, kind: SpanKind, trace_id: int, parent: SpanContext | None,
                 recording: bool, trace_state: TraceState, attributes: dict[str, Any]) -> None:
        self.recorder, self.name, self.kind = recorder, name, kind
        self.trace_id, self.parent, self.recording, self.trace_state = trace_id, parent, recording, trace_state
        self.span_id = recorder.ids.generate_span_id()
        self.attributes = attributes
        self.events: list[Event] | None = None
        self.status = _UNSET
        self.ended = False
        self.start = time_ns()

    def child(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Span:
        """A span under this one (same trace, same sampling decision)."""
        return Span(self.recorder, name, kind, self.trace_id, self.span_context(), self.recording, self.trace_state,
                    attributes)

    def span_context(self) -> SpanContext:
        return SpanContext(self.trace_id, self.span_id, False, _SAMPLED if self.recording else _UNSAMPLED,
                           self.trace_state)

    def context(self) -> Context:
        """An OpenTelemetry context naming this span (for the SDK's log records)."""
        return set_span_in_context(NonRecordingSpan(self.span_context()))

    def headers(self) -> list[tuple[str, str]]:
        """W3C `traceparent` (and `tracestate`) naming this span."""
        return traceparent(self.span_context())

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        if self.recording:
            if self.events is None:
                self.events = []
            self.events.append(Event(name, attributes))

    def fail(self, description: str | None = None) -> None:
        self.status = Status(StatusCode.ERROR, description)

    def end(self) -> None:
        if self.recording and not self.ended:
            self.ended = True  # once
            self.recorder.finish(self)
            # what was handed off is the export thread's now: a late change goes nowhere
            self.attributes, self.events = {}, None
