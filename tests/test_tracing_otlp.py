"""OpenTelemetry end to end: sidegate served on 127.0.0.1 in front of a fake OpenAI upstream,
exporting to a real OTLP/HTTP receiver that decodes the protobuf payloads. Spans, their GenAI
attributes and parent/child links from a client `traceparent`, the header the upstream received,
the exported log records and GenAI metrics; and a collector that is down."""

from __future__ import annotations

import json
import socket
import time
import types
from dataclasses import replace

import httpx
import pytest
import trio

from sidegate.runtime.plan import OtlpProtocol, Plan, Tracing
from tests.support.gateway import base_url, open_gateway
from tests.support.otlp import otlp_grpc_receiver, otlp_receiver, wait_for
from tests.support.plans import group, openai_provider, plan, target
from tests.support.upstream import FakeOpenAI, open_fake_openai

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


@pytest.fixture(autouse=True)
def _fast_export(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK reads its batch delays from the standard variables (defaults: 5 s and 1 s).
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret-value")
    monkeypatch.setenv("OTLP_TOKEN", "collector-token-1234")


def tracing(endpoint: str, **kw: object) -> Tracing:
    values: dict[str, object] = dict(
        endpoint=endpoint, protocol=OtlpProtocol.HTTP, headers=(), sampling=1.0,
        resource=types.MappingProxyType({"deployment.environment.name": "test"}), content=False, logs=True,
        metrics=True, metrics_interval=60.0, timeout=2.0, queue_size=2048)
    values.update(kw)
    return Tracing(**values)  # type: ignore[arg-type]


def traced_plan(fake: FakeOpenAI, config: Tracing) -> Plan:
    up = openai_provider("up", fake.base_url, "FAKE_UPSTREAM_KEY")
    models = [group("gpt", target("up", "ok"), timeout=10.0),
              group("broken", target("up", "fail-500"), fallbacks=("gpt",), timeout=10.0)]
    p = plan([up], models)
    return replace(p, observability=replace(p.observability, tracing=config))


def chat(model: str, stream: bool = False) -> dict[str, object]:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def _one(spans: list, kind: str) -> object:  # type: ignore[type-arg]
    found = [s for s in spans if s.kind == kind]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


async def test_spans_follow_the_client_trace_into_the_upstream_call() -> None:
    with otlp_receiver() as rx, trio.fail_after(30):
        config = tracing(rx.endpoint, headers=(replace_header("Authorization", "Bearer ", "OTLP_TOKEN"),))
        async with open_fake_openai() as fake, open_gateway(traced_plan(fake, config)) as gw:
            async with httpx.AsyncClient(base_url=base_url(gw)) as client:
                r = await client.post("/chat/completions", json=chat("gpt"),
                                      headers={"traceparent": TRACEPARENT, "tracestate": "vendor=opaque-1"})
                assert r.status_code == 200, r.text
                assert r.headers["x-sidegate-trace-id"] == CLIENT_TRACE
                spans = await wait_for(lambda: len(rx.trace(CLIENT_TRACE)) >= 2 and rx.trace(CLIENT_TRACE),
                                       what="the server and attempt spans")
                sent = fake.seen[-1].headers["traceparent"]
                assert fake.seen[-1].headers["tracestate"] == "vendor=opaque-1", "the client's tracestate goes on"
    server, attempt = _one(spans, "server"), _one(spans, "client")
    assert server.parent_id == CLIENT_SPAN, "the server span is a child of the client's span"
    assert attempt.parent_id == server.span_id, "the attempt span is a child of the server span"
    assert sent == f"00-{CLIENT_TRACE}-{attempt.span_id}-01", "the upstream got the attempt span as its parent"
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gen_ai.request.model"] == "gpt"
    assert server.attributes["gen_ai.operation.name"] == "chat"
    a = attempt.attributes
    assert attempt.name == "chat ok"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "ok" and a["gen_ai.response.model"] == "ok"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (11, 2)
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == fake.port
    assert a["sidegate.routing.strategy"] == "weighted" and a["sidegate.routing.attempt"] == 1
    assert "sidegate.routing.fallback" not in a and a["sidegate.breaker.state"] == "closed"
    assert "gen_ai.usage.input_tokens" not in server.attributes, "usage is counted once: on the attempt"
    assert "gen_ai.input.messages" not in a, "content is recorded only when the spec opts in"
    assert server.resource["service.name"] == "sidegate"
    assert server.resource["deployment.environment.name"] == "test"
    assert rx.headers[0]["authorization"] == "Bearer collector-token-1234", "the header's reference was resolved"


def replace_header(name: str, prefix: str, env: str):  # type: ignore[no-untyped-def]
    from sidegate.runtime.plan import Header, Secret, SecretPart, SecretSource

    return Header(name=name, value=Secret(parts=(SecretPart(source=SecretSource.TEXT, value=prefix),
                                                 SecretPart(source=SecretSource.ENV, value=env))))


async def test_streams_fallbacks_logs_and_metrics_are_exported() -> None:
    with otlp_receiver() as rx, trio.fail_after(30):
        async with open_fake_openai() as fake, open_gateway(traced_plan(fake, tracing(rx.endpoint, content=True))) as gw:
            async with httpx.AsyncClient(base_url=base_url(gw)) as client:
                r = await client.post("/chat/completions", json=chat("gpt", stream=True))
                assert r.status_code == 200 and "[DONE]" in r.text
                stream_trace = r.headers["x-sidegate-trace-id"]
                r = await client.post("/chat/completions", json=chat("broken"))
                assert r.status_code == 200, r.text
                fallback_trace = r.headers["x-sidegate-trace-id"]
                assert stream_trace != fallback_trace and len(stream_trace) == 32
                await wait_for(lambda: len(rx.trace(stream_trace)) >= 2 and len(rx.trace(fallback_trace)) >= 3,
                               what="the stream's and the fallback's spans")
                logs = await wait_for(lambda: [lg for lg in rx.logs if lg.event_name == "request"
                                               and lg.trace_id in (stream_trace, fallback_trace)][1:] and rx.logs,
                                      what="the request log records")
    # the stream: its time to first token is an event of the attempt span
    server = _one(rx.trace(stream_trace), "server")
    attempt = _one(rx.trace(stream_trace), "client")
    assert attempt.parent_id == server.span_id and server.parent_id == "", "no client trace: a new root"
    events = dict(attempt.events)
    assert "gen_ai.first_token" in events and events["gen_ai.first_token"]["gen_ai.server.time_to_first_token"] > 0
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert (attempt.attributes["gen_ai.usage.input_tokens"], attempt.attributes["gen_ai.usage.output_tokens"]) == (9, 3)
    assert '"content": "hi"' in attempt.attributes["gen_ai.input.messages"].replace('":"', '": "')
    assert "there" in attempt.attributes["gen_ai.output.messages"]
    # the fallback: a failed attempt on `broken`, then one on `gpt` marked as a fallback
    attempts = sorted((s for s in rx.trace(fallback_trace) if s.kind == "client"),
                      key=lambda s: s.attributes["sidegate.routing.attempt"])
    assert [s.attributes["sidegate.model_group"] for s in attempts] == ["broken", "gpt"]
    failed, served = attempts
    assert failed.attributes["http.response.status_code"] == 500 and failed.status == 2  # STATUS_CODE_ERROR
    assert failed.attributes["error.type"] and "sidegate.routing.fallback" not in failed.attributes
    assert served.attributes["sidegate.routing.fallback"] is True and "error.type" not in served.attributes
    # the log records: the same JSON lines, with the trace (and span) they belong to
    by_trace = {lg.trace_id: lg for lg in logs if lg.event_name == "request"}
    record = json.loads(by_trace[fallback_trace].body)
    assert record["event"] == "request" and record["trace_id"] == fallback_trace and record["status"] == 200
    assert by_trace[fallback_trace].severity == "INFO" and by_trace[fallback_trace].span_id
    warned = [json.loads(lg.body) for lg in logs if lg.event_name == "upstream_attempt_failed"]
    assert warned and warned[0]["trace_id"] == fallback_trace
    assert all("sk-upstream-secret-value" not in str(lg.body) for lg in logs)
    # GenAI metrics: exported as the gateway stopped (the final collection)
    durations = rx.metrics["gen_ai.server.request.duration"]
    assert sum(p["count"] for p in durations) == 2
    usage = rx.metrics["gen_ai.client.token.usage"]
    types_seen = {p["attributes"]["gen_ai.token.type"] for p in usage}
    assert types_seen == {"input", "output"}
    assert sum(p["count"] for p in rx.metrics["gen_ai.server.time_to_first_token"]) == 1


async def test_a_collector_that_is_down_costs_only_counted_drops() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    config = tracing(f"http://127.0.0.1:{dead}", queue_size=4, timeout=0.5, metrics=False)
    with trio.fail_after(40):
        async with open_fake_openai() as fake:
            t0 = time.monotonic()
            async with open_gateway(traced_plan(fake, config)) as gw:
                async with httpx.AsyncClient(base_url=base_url(gw)) as client:
                    for _ in range(20):
                        r = await client.post("/chat/completions", json=chat("gpt"))
                        assert r.status_code == 200 and r.headers["x-sidegate-trace-id"]

                    async def dropped() -> dict[str, float]:
                        text = (await client.get(f"http://127.0.0.1:{gw.port}/metrics")).text
                        return {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
                                for line in text.splitlines() if line.startswith("sidegate_otlp_dropped_total{")}

                    counts: dict[str, float] = {}

                    def spans_dropped() -> float:
                        return sum(v for k, v in counts.items() if 'signal="spans"' in k)

                    # every span (a server and an attempt span per request) is dropped and counted: from
                    # the full queue, or with the batch the collector did not take
                    with trio.move_on_after(20):
                        while spans_dropped() < 40:
                            counts.update(await dropped())
                            await trio.sleep(0.05)
                    assert spans_dropped() == 40, counts
                    assert counts['reason="export_failed",signal="spans"'] > 0, counts
                    assert counts['reason="export_failed",signal="logs"'] > 0, counts
            assert time.monotonic() - t0 < 30, "stopping is bounded with the collector down"


async def test_unsampled_requests_propagate_their_trace_and_export_nothing() -> None:
    with otlp_receiver() as rx, trio.fail_after(30):
        config = tracing(rx.endpoint, sampling=0.0, logs=False)
        async with open_fake_openai() as fake, open_gateway(traced_plan(fake, config)) as gw:
            async with httpx.AsyncClient(base_url=base_url(gw)) as client:
                r = await client.post("/chat/completions", json=chat("gpt"))
                assert r.status_code == 200
                trace_id = r.headers["x-sidegate-trace-id"]
                sent = fake.seen[-1].headers["traceparent"]
                # a client's sampled flag wins over the ratio (parent-based sampling)
                r = await client.post("/chat/completions", json=chat("gpt"), headers={"traceparent": TRACEPARENT})
                assert r.status_code == 200
                await wait_for(lambda: rx.trace(CLIENT_TRACE), what="the client-sampled trace")
    assert sent.startswith(f"00-{trace_id}-") and int(sent[-2:], 16) & 1 == 0, "propagated, flagged as not sampled"
    assert rx.trace(trace_id) == [], "an unsampled request exports no span"
    assert len(rx.trace(CLIENT_TRACE)) == 2
    assert sum(p["count"] for p in rx.metrics["gen_ai.server.request.duration"]) == 2, "metrics count every request"


async def test_spans_and_logs_over_grpc() -> None:
    with otlp_grpc_receiver() as rx, trio.fail_after(30):
        config = tracing(rx.endpoint, protocol=OtlpProtocol.GRPC, metrics=False)
        async with open_fake_openai() as fake, open_gateway(traced_plan(fake, config)) as gw:
            async with httpx.AsyncClient(base_url=base_url(gw)) as client:
                r = await client.post("/chat/completions", json=chat("gpt", stream=True),
                                      headers={"traceparent": TRACEPARENT})
                assert r.status_code == 200 and "[DONE]" in r.text
                spans = await wait_for(lambda: len(rx.trace(CLIENT_TRACE)) >= 2 and rx.trace(CLIENT_TRACE),
                                       what="the spans over gRPC")
                await wait_for(lambda: [lg for lg in rx.logs if lg.trace_id == CLIENT_TRACE], what="a log record")
    server, attempt = _one(spans, "server"), _one(spans, "client")
    assert server.parent_id == CLIENT_SPAN and attempt.parent_id == server.span_id
    assert attempt.attributes["gen_ai.usage.output_tokens"] > 0 and "gen_ai.first_token" in dict(attempt.events)
    assert "/v1/traces" in rx.paths and server.resource["service.name"] == "sidegate"
