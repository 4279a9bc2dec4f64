"""A real OTLP/HTTP receiver for tests: a threaded HTTP server on 127.0.0.1 that decodes the
protobuf export requests (`opentelemetry-proto`) of traces, logs and metrics into plain records."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trio
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def value(v: Any) -> Any:
    """An AnyValue as a Python value."""
    which = v.WhichOneof("value")
    if which == "array_value":
        return [value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return None if which is None else getattr(v, which)


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


@dataclass
class Span:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status: int
    resource: dict[str, Any]


@dataclass
class Log:
    body: Any
    severity: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    event_name: str


@dataclass
class Receiver:
    port: int = 0
    spans: list[Span] = field(default_factory=list)
    logs: list[Log] = field(default_factory=list)
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Metric name -> its data points (attributes and, for histograms, count and sum)."""
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take(self, path: str, body: bytes) -> bytes:
        if path == "/v1/traces":
            req = ExportTraceServiceRequest.FromString(body)
            for rs in req.resource_spans:
                resource = attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append(Span(
                            s.name, KINDS.get(s.kind, str(s.kind)), s.trace_id.hex(), s.span_id.hex(),
                            s.parent_span_id.hex(), attrs(s.attributes),
                            [(e.name, attrs(e.attributes)) for e in s.events], s.status.code, resource))
            return ExportTraceServiceResponse().SerializeToString()
        if path == "/v1/logs":
            logs = ExportLogsServiceRequest.FromString(body)
            for rl in logs.resource_logs:
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        self.logs.append(Log(value(r.body), r.severity_text, r.trace_id.hex(), r.span_id.hex(),
                                             attrs(r.attributes), r.event_name))
            return ExportLogsServiceResponse().SerializeToString()
        if path == "/v1/metrics":
            metrics = ExportMetricsServiceRequest.FromString(body)
            for rm in metrics.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        points = self.metrics.setdefault(m.name, [])
                        if m.WhichOneof("data") == "histogram":
                            points.extend({"attributes": attrs(p.attributes), "count": p.count, "sum": p.sum}
                                          for p in m.histogram.data_points)
            return ExportMetricsServiceResponse().SerializeToString()
        raise KeyError(path)

    def trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans if s.trace_id == trace_id]


async def wait_for(condition: Callable[[], Any], within: float = 15.0, what: str = "condition") -> Any:
    """Poll `condition` until it is truthy (returned), failing after `within` seconds."""
    with trio.move_on_after(within):
        while True:
            found = condition()
            if found:
                return found
            await trio.sleep(0.02)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
            receiver.paths.append(self.path)
            try:
                answer = receiver.take(self.path, body)
            except KeyError:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


_GRPC_PATHS = {"opentelemetry.proto.collector.trace.v1.TraceService": "/v1/traces",
               "opentelemetry.proto.collector.logs.v1.LogsService": "/v1/logs",
               "opentelemetry.proto.collector.metrics.v1.MetricsService": "/v1/metrics"}


@contextmanager
def otlp_grpc_receiver() -> Iterator[Receiver]:
    """The same receiver over OTLP/gRPC (grpcio's server, the three collector services' Export)."""
    from concurrent import futures

    import grpc

    receiver = Receiver()

    def handler(path: str) -> Any:
        def export(body: bytes, context: Any) -> bytes:
            receiver.headers.append(dict(context.invocation_metadata()))
            receiver.paths.append(path)
            return receiver.take(path, body)
        return grpc.unary_unary_rpc_method_handler(export)  # raw bytes in and out

    handlers = [grpc.method_handlers_generic_handler(service, {"Export": handler(path)})
                for service, path in _GRPC_PATHS.items()]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=handlers)
    receiver.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver
    finally:
        server.stop(grace=None)
