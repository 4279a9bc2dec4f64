"""The span recorder: ids and the sampling decision from the SDK's provider, children in the same
trace and decision, one hand-off per span, nothing changed after it, and W3C headers as the SDK's
propagator writes them."""

from __future__ import annotations

import types
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanKind, StatusCode, TraceState, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sidegate.runtime.observe.record import Recorder


class _Queue:
    def __init__(self) -> None:
        self.ended: list[Any] = []

    def put(self, span: Any) -> None:
        self.ended.append(span)


def _recorder(ratio: float) -> tuple[Recorder, _Queue]:
    queue = _Queue()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    return Recorder(provider, queue, TraceIdRatioBased(ratio)), queue  # type: ignore[arg-type]


def _client(flags: str, state: str | None = None) -> Any:
    carrier = {"traceparent": f"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"}
    if state:
        carrier["tracestate"] = state
    return TraceContextTextMapPropagator().extract(carrier)


def test_a_root_under_the_clients_trace_and_its_child() -> None:
    recorder, processor = _recorder(0.0)  # the client's sampled flag wins over the ratio
    root = recorder.root("POST /v1/chat/completions", SpanKind.SERVER, _client("01", "v=1"), {"a": 1})
    child = root.child("chat m", SpanKind.CLIENT, {"b": "x"})
    child.event("gen_ai.first_token", {"t": 0.1})
    child.fail("boom")
    child.end()
    child.end()  # twice: handed off once
    child.fail("late")
    child.event("late", {})
    root.end()
    assert [s.name for s in processor.ended] == ["chat m", "POST /v1/chat/completions"]
    exported_child, exported_root = processor.ended
    assert exported_root.parent is not None and exported_root.parent.span_id == 0x00F067AA0BA902B7
    assert exported_root.parent.is_remote and exported_root.context is not None
    assert exported_root.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert exported_child.parent == root.span_context()
    assert exported_child.status.status_code is StatusCode.ERROR and exported_child.status.description == "boom"
    assert [e.name for e in exported_child.events] == ["gen_ai.first_token"]
    assert exported_child.start_time is not None and exported_child.end_time is not None
    assert exported_child.start_time <= exported_child.end_time
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, set_span_in_context(NonRecordingSpan(child.span_context())))
    assert dict(child.headers()) == carrier and carrier["tracestate"] == "v=1"


def test_unsampled_spans_have_ids_and_propagate_but_export_nothing() -> None:
    recorder, processor = _recorder(0.0)
    root = recorder.root("POST /v1/chat/completions", SpanKind.SERVER, None, {})
    child = root.child("chat m", SpanKind.CLIENT, {})
    child.end()
    root.end()
    assert processor.ended == []
    (name, value), = child.headers()
    assert name == "traceparent" and value == f"00-{root.trace_id:032x}-{child.span_id:016x}-00"
    not_sampled_by_client = recorder.root("x", SpanKind.SERVER, _client("00"), {})
    assert not not_sampled_by_client.recording


def test_the_ratio_decides_for_new_traces() -> None:
    recorder, processor = _recorder(1.0)
    spans = [recorder.root("r", SpanKind.SERVER, None, {}) for _ in range(50)]
    for span in spans:
        span.end()
    assert len(processor.ended) == 50 and len({s.trace_id for s in spans}) == 50


def test_a_batch_that_cannot_be_encoded_is_dropped_and_counted() -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult
    from prometheus_client import CollectorRegistry, Counter

    from sidegate.runtime.observe.otlp_send import http_spans
    from sidegate.runtime.observe.tracing import _Spans

    failed = Counter("dropped", "d", ["signal", "reason"], registry=CollectorRegistry())
    exporter = _Spans(http_spans(endpoint="http://127.0.0.1:9/v1/traces", timeout=1), failed.labels("spans", "x"))
    recorder, processor = _recorder(1.0)
    span = recorder.root("r", SpanKind.SERVER, None, {"odd": object()})  # no attribute type the wire knows
    span.end()
    assert exporter.export(processor.ended) is SpanExportResult.FAILURE
    assert failed.labels("spans", "x")._value.get() == 1
    exporter.shutdown()


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1), st.integers(1, 2**128 - 1), st.sampled_from([None, "00", "01"]))
def test_the_decisions_are_the_sdk_samplers(ratio: float, trace_id: int, client: str | None) -> None:
    """ParentBased(TraceIdRatioBased(ratio)) itself, asked about the same trace."""
    sdk = ParentBased(TraceIdRatioBased(ratio))
    recorder, _ = _recorder(ratio)
    recorder.ids = types.SimpleNamespace(generate_trace_id=lambda: trace_id,  # type: ignore[assignment]
                                         generate_span_id=lambda: 7)
    parent = None if client is None else _client(client)
    ours = recorder.root("r", SpanKind.SERVER, parent, {})
    theirs = sdk.should_sample(parent, ours.trace_id, "r", SpanKind.SERVER)
    assert ours.recording == theirs.decision.is_sampled()  # type: ignore[no-untyped-call]
    assert ours.trace_state == (theirs.trace_state or TraceState())


def test_the_queue_drops_the_oldest_when_full_exports_in_batches_and_drains_on_shutdown() -> None:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from prometheus_client import CollectorRegistry, Counter

    from sidegate.runtime.observe.batch import SpanQueue

    class Exporter(SpanExporter):
        def __init__(self) -> None:
            self.batches: list[list[int]] = []
            self.closed = False

        def export(self, spans: Any) -> SpanExportResult:
            self.batches.append(list(spans))
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            self.closed = True

    dropped = Counter("d", "d", ["reason"], registry=CollectorRegistry())
    exporter = Exporter()
    queue = SpanQueue(exporter, 5, 2, 3600.0, dropped.labels("full"), dropped.labels("shutdown"))
    queue._wake.set = lambda: None  # type: ignore[method-assign]  # no early export: all stays queued
    for i in range(8):
        queue.put(i)
    assert list(queue._queue) == [3, 4, 5, 6, 7] and dropped.labels("full")._value.get() == 3
    del queue._wake.set
    queue.shutdown()
    queue.put(99)
    assert exporter.batches == [[3, 4], [5, 6], [7]] and exporter.closed
    assert dropped.labels("shutdown")._value.get() == 1


def test_a_record_encodes_as_the_sdk_encodes_the_same_span() -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
    from opentelemetry.sdk.trace import ReadableSpan

    from sidegate.runtime.observe.otlp_encode import encode_spans

    recorder, queue = _recorder(0.0)
    root = recorder.root("POST /v1/chat/completions", SpanKind.SERVER, _client("01", "v=1"), {"a": 1, "l": ["x"]})
    child = root.child("chat m", SpanKind.CLIENT, {"b": "x", "f": 0.5, "t": True})
    child.event("gen_ai.first_token", {"gen_ai.server.time_to_first_token": 0.1})
    child.fail("boom")
    child.end()
    root.end()
    same = [ReadableSpan(s.name, s.context, s.parent, s.resource, dict(s.attributes), list(s.events), (), s.kind,
                         status=s.status, start_time=s.start_time, end_time=s.end_time,
                         instrumentation_scope=s.instrumentation_scope) for s in queue.ended]
    assert encode_spans(queue.ended) == sdk_encode(same) == encode_spans(same)
