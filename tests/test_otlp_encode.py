"""sidegate's OTLP span encoder against the SDK's own (`encode_spans` of opentelemetry-exporter-otlp-
proto-common): for any spans, the same request, byte for byte."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from sidegate.runtime.observe import otlp_encode
from sidegate.runtime.observe.otlp_encode import encode_spans, encode_spans_bytes

_text = st.text(max_size=12)
_scalar = st.one_of(st.none(), st.booleans(), _text, st.integers(-(2**63), 2**63 - 1),
                    st.floats(allow_nan=False), st.binary(max_size=8))
_value = st.one_of(_scalar, st.lists(st.one_of(st.booleans(), _text, st.integers(0, 99)), max_size=3),
                   st.dictionaries(_text, _scalar, max_size=2))
_attrs = st.dictionaries(st.text(min_size=1, max_size=10), _value, max_size=5)
_ids = st.tuples(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1))
_state = st.one_of(st.none(), st.just(TraceState()), st.just(TraceState([("vendor", "v1"), ("other", "x-2")])))
_RESOURCES = [Resource.create({"service.name": "sidegate"}), Resource({"a": 1}, "https://schema/1")]
_SCOPES = [None, InstrumentationScope("sidegate"), InstrumentationScope("lib", "1.2", "https://s", {"k": "v"})]


@st.composite
def _span(draw: st.DrawFn) -> ReadableSpan:
    trace_id, span_id = draw(_ids)
    context = SpanContext(trace_id, span_id, False, TraceFlags(1), draw(_state))
    parent = draw(st.one_of(st.none(), st.builds(lambda s, r: SpanContext(trace_id, s, r, TraceFlags(1)),
                                                 st.integers(1, 2**64 - 1), st.booleans())))
    events = [Event(draw(_text), draw(st.one_of(st.none(), _attrs)), draw(st.integers(0, 2**63)))
              for _ in range(draw(st.integers(0, 2)))]
    links = [Link(SpanContext(*draw(_ids), draw(st.booleans())), draw(st.one_of(st.none(), _attrs)))
             for _ in range(draw(st.integers(0, 1)))]
    status = draw(st.sampled_from([Status(StatusCode.UNSET), Status(StatusCode.OK),
                                   Status(StatusCode.ERROR, "boom"), Status(StatusCode.ERROR)]))
    start = draw(st.one_of(st.none(), st.integers(0, 2**63)))
    return ReadableSpan(draw(_text), context, parent, draw(st.sampled_from(_RESOURCES)), draw(_attrs), events, links,
                        draw(st.sampled_from(list(SpanKind))), status=status, start_time=start,
                        end_time=None if start is None else start + 5, instrumentation_scope=draw(st.sampled_from(_SCOPES)))


@settings(max_examples=150, deadline=None)
@given(st.lists(_span(), max_size=6))
def test_the_same_request_as_the_sdk_encoder(spans: list[ReadableSpan]) -> None:
    ours, theirs = encode_spans(spans), sdk_encode(spans)
    assert ours == theirs
    assert encode_spans_bytes(spans) == theirs.SerializeToString(), "the bytes sent are the SDK's, as serialised"
    assert encode_spans_bytes(spans) == theirs.SerializeToString(), "the same again, from the attribute cache"


def test_the_attribute_cache_is_bounded_and_never_confuses_a_value_with_its_type() -> None:
    """Kept encodings are looked up by (field, key, type, value): True and 1 hash alike but encode
    differently; past `_CACHE_MAX` entries the table starts over (request ids are all different)."""
    context = SpanContext(1, 2, False, TraceFlags(1))
    scope = InstrumentationScope("sidegate")

    def span(value: object) -> ReadableSpan:
        return ReadableSpan("s", context, None, _RESOURCES[0], {"k": value}, instrumentation_scope=scope)

    spans = [span(True), span(1), span(1.0), span("1"), *(span(f"id-{n}") for n in range(otlp_encode._CACHE_MAX + 10))]
    assert encode_spans_bytes(spans) == sdk_encode(spans).SerializeToString()
    assert len(otlp_encode._cache) <= otlp_encode._CACHE_MAX
