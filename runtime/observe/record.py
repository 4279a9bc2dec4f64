"""Spans recorded as plain data, queued as they are when they end.

The SDK's live `Span` validates and copies every attribute into a locked `BoundedAttributes`, runs
the processors' `on_start`, and takes locks at each change; its `BatchSpanProcessor` then checks the
process id (a system call) for every span: on the event loop that was most of what tracing cost a
request (27% of a non-stream request's throughput at c=50 with two spans each). Here a span is a
slotted record of what sidegate itself sets (a dict of attributes it builds from values it
controls, its events, its status); when it ends, if sampled, the record itself goes to the span
queue (:mod:`runtime.observe.batch`, an append), and the export thread's encoder reads it through
the properties of the SDK's `ReadableSpan`. Ids come from the SDK provider's id generator; the
sampling decision is the SDK's `ParentBased(TraceIdRatioBased)`, taken once per trace root (children
inherit it).
"""

from __future__ import annotations

from time import time_ns
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, TracerProvider
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
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

if TYPE_CHECKING:
    from sidegate.runtime.observe.batch import SpanQueue

__all__ = ["HashedResource", "Recorder", "Span", "traceparent"]

_SAMPLED, _UNSAMPLED = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
_EMPTY_STATE = TraceState()


def traceparent(trace_id: int, span_id: int, flags: int, state: TraceState | None) -> list[tuple[str, str]]:
    """W3C `traceparent` (and `tracestate`) naming a span, as the SDK's propagator writes them."""
    out = [("traceparent", f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}")]
    if state:
        out.append(("tracestate", state.to_header()))
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
    """Ids, sampling decisions and the hand-off of finished spans to the span queue."""

    def __init__(self, provider: TracerProvider, queue: SpanQueue, ratio: TraceIdRatioBased) -> None:
        resource = provider.resource
        self.resource = resource if isinstance(resource, HashedResource) else HashedResource(resource)
        self.ids = provider.id_generator
        self.scope = InstrumentationScope("sidegate")
        self.put = queue.put
        self._bound = ratio.bound

    def root(self, name: str, kind: SpanKind, parent: Context | None, attributes: dict[str, Any]) -> Span:
        """A span opened under a context that is not one of ours (the client's `traceparent`, or none).

        The decision is the SDK's `ParentBased(TraceIdRatioBased(ratio))`, made here (a test holds
        the two to the same answers): a client's span decides by its sampled flag and passes its
        tracestate on; a new trace is sampled when the low 64 bits of its id are under the ratio's
        bound."""
        remote = INVALID_SPAN_CONTEXT if parent is None else get_current_span(parent).get_span_context()
        if remote.is_valid:
            return Span(self, name, kind, remote.trace_id, remote, remote.trace_flags.sampled,
                        remote.trace_state or _EMPTY_STATE, attributes)
        trace_id = self.ids.generate_trace_id()
        return Span(self, name, kind, trace_id, None, trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._bound,
                    _EMPTY_STATE, attributes)


class Span:
    """One span being recorded. Not sampled, it still has ids: its context propagates (flags 00).
    Ended and sampled, it is queued as it is: the encoder reads it through the same properties as
    the SDK's `ReadableSpan` (context, parent, times, attributes, events, links, status, resource)."""

    __slots__ = ("_events", "attributes", "end_time", "ended", "kind", "name", "parent", "recorder", "recording",
                 "span_id", "start_time", "status", "trace_id", "trace_state")

    dropped_attributes = dropped_events = dropped_links = 0
    links: tuple[Any, ...] = ()

    def __init__(self, recorder: Recorder, name: str, kind: SpanKind, trace_id: int, parent: SpanContext | None,
                 recording: bool, trace_state: TraceState, attributes: dict[str, Any]) -> None:
        self.recorder, self.name, self.kind = recorder, name, kind
        self.trace_id, self.parent, self.recording, self.trace_state = trace_id, parent, recording, trace_state
        self.span_id = recorder.ids.generate_span_id()
        self.attributes = attributes
        self._events: list[Event] | None = None
        self.status = _UNSET
        self.ended = False
        self.start_time = time_ns()
        self.end_time: int | None = None

    def child(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Span:
        """A span under this one (same trace, same sampling decision)."""
        return Span(self.recorder, name, kind, self.trace_id, self.span_context(), self.recording, self.trace_state,
                    attributes)

    def span_context(self) -> SpanContext:
        return SpanContext(self.trace_id, self.span_id, False, _SAMPLED if self.recording else _UNSAMPLED,
                           self.trace_state)

    def otel_context(self) -> Context:
        """An OpenTelemetry context naming this span (for the SDK's log records)."""
        return set_span_in_context(NonRecordingSpan(self.span_context()))

    def headers(self) -> list[tuple[str, str]]:
        """W3C `traceparent` (and `tracestate`) naming this span."""
        return traceparent(self.trace_id, self.span_id, 1 if self.recording else 0, self.trace_state)

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        if self.recording and not self.ended:
            if self._events is None:
                self._events = []
            self._events.append(Event(name, attributes))

    def fail(self, description: str | None = None) -> None:
        if not self.ended:
            self.status = Status(StatusCode.ERROR, description)

    def end(self) -> None:
        if self.recording and not self.ended:
            self.ended = True  # once; from here the record is the export thread's (no change reaches it)
            self.end_time = time_ns()
            self.recorder.put(self)

    # --- read as a finished span (by the encoder, in the export thread)

    @property
    def context(self) -> SpanContext:
        return self.span_context()  # queued spans are sampled ones

    def get_span_context(self) -> SpanContext:
        return self.context

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(self._events or ())

    @property
    def resource(self) -> Resource:
        return self.recorder.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self.recorder.scope
