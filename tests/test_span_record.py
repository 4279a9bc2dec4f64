"""The span recorder: ids and the sampling decision from the SDK's provider, children in the same
trace and decision, one hand-off per span, nothing changed after it, and W3C headers as the SDK's
propagator writes them."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanKind, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sidegate.runtime.observe.record import Recorder


class _Processor:
    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


def _recorder(ratio: float) -> tuple[Recorder, _Processor]:
    processor = _Processor()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    return Recorder(provider, processor), processor  # type: ignore[arg-type]


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
    child.attributes["late"] = True
    root.end()
    assert [s.name for s in processor.ended] == ["chat m", "POST /v1/chat/completions"]
    exported_child, exported_root = processor.ended
    assert exported_root.parent is not None and exported_root.parent.span_id == 0x00F067AA0BA902B7
    assert exported_root.parent.is_remote and exported_root.context is not None
    assert exported_root.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert exported_child.parent == root.span_context() and "late" not in exported_child.attributes
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
