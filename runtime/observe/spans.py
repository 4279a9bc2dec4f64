"""The spans of one request, after the OpenTelemetry GenAI semantic conventions: a server span per
request, a client span per upstream attempt (router decisions as `sidegate.*` attributes, time to
first token as an event), and spans of MCP tool calls and A2A relays under the request's context.

Spans are :mod:`runtime.observe.record`'s plain records (handed to the SDK's batch processor when
they end). Parents are passed explicitly (never the SDK's ambient context: Trio tasks move between
awaits); :data:`runtime.observe.context.CURRENT` holds the innermost open handle for logs and
propagation.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sidegate.runtime.observe.context import CURRENT
from sidegate.runtime.observe.record import Span, traceparent

if TYPE_CHECKING:
    from sidegate.runtime.observe.telemetry import Telemetry

__all__ = ["PROPAGATOR", "Attempt", "Child", "Incoming", "Request", "operation"]

PROPAGATOR = TraceContextTextMapPropagator()
_OPERATION = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings", "messages": "chat",
              "responses": "chat"}
_FINISH = re.compile(rb'"(?:finish_reason|stop_reason)":\s*"([A-Za-z_]{1,40})"')
_MODEL = re.compile(rb'"model":\s*"([^"\\]{1,200})"')
CONTENT_LIMIT = 32 << 10
"""Bytes of prompt or completion recorded on a span (with `content: true`)."""
Attrs = dict[str, Any]


def operation(op: str) -> str:
    """`gen_ai.operation.name` of a sidegate operation."""
    return _OPERATION.get(op, op)


def extract(headers: list[tuple[bytes, bytes]] | Any) -> Context | None:
    """The client's trace context from its `traceparent`/`tracestate` headers (None without one)."""
    carrier = {}
    for name, value in headers:
        if name == b"traceparent" or name == b"tracestate":
            carrier[name.decode()] = value.decode("latin-1")
    return PROPAGATOR.extract(carrier) if carrier else None


class _Scope:
    """A span that is a parent: its trace id, its propagation headers, its children."""

    __slots__ = ("span", "tel", "trace_id")

    def __init__(self, tel: Telemetry, span: Span) -> None:
        self.tel, self.span = tel, span
        self.trace_id = format(span.trace_id, "032x")

    @property
    def context(self) -> Context:
        """An OpenTelemetry context naming this span (the SDK's log records take it)."""
        return self.span.otel_context()

    def headers(self) -> list[tuple[str, str]]:
        return self.span.headers()

    def child(self, kind: str, name: str, attributes: Attrs) -> Child:
        return Child(self.tel, self.span, kind, name, attributes)


class Incoming:
    """An MCP or A2A request: no span of its own; its tool-call or relay span is the server span,
    under the client's context (when it sent one)."""

    __slots__ = ("context", "remote", "tel", "trace_id")

    def __init__(self, tel: Telemetry, parent: Context | None) -> None:
        self.tel, self.context = tel, parent if parent is not None else Context()
        self.remote = get_current_span(self.context).get_span_context()
        self.trace_id = format(self.remote.trace_id, "032x") if self.remote.is_valid else ""

    def headers(self) -> list[tuple[str, str]]:
        """The client's own trace context, passed on (it sent none: nothing)."""
        remote = self.remote
        return traceparent(remote.trace_id, remote.span_id, remote.trace_flags, remote.trace_state) \
            if remote.is_valid else []

    def child(self, kind: str, name: str, attributes: Attrs) -> Child:
        return Child(self.tel, self.context, kind, name, attributes, SpanKind.SERVER)


class Child(_Scope):
    """An MCP tool call's or an A2A relay's span: `with` it; while open it is the current scope."""

    __slots__ = ("_token",)

    def __init__(self, tel: Telemetry, parent: Span | Context, kind: str, name: str, attributes: Attrs,
                 span_kind: SpanKind = SpanKind.CLIENT) -> None:
        if kind == "tool":
            attributes = {"gen_ai.operation.name": "execute_tool", "mcp.method.name": "tools/call",
                          "gen_ai.tool.name": name, **attributes}
            title = f"tools/call {name}"
        else:
            attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name, **attributes}
            title = f"invoke_agent {name}"
        if isinstance(parent, Span):
            span = parent.child(title, span_kind, attributes)
        else:
            span = tel.recorder.root(title, span_kind, parent, attributes)
        super().__init__(tel, span)

    def __enter__(self) -> Child:
        self._token = CURRENT.set(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        CURRENT.reset(self._token)
        if exc is not None:
            self.fail((getattr(exc, "code", None) and str(exc.code)) or type(exc).__name__)  # type: ignore[attr-defined]
        self.span.end()

    def note(self, **attributes: Any) -> None:
        self.span.attributes.update(attributes)

    def fail(self, error_type: str) -> None:
        self.span.attributes["error.type"] = error_type
        self.span.fail()


class Request(_Scope):
    """The server span of one model call."""

    __slots__ = ("provider", "response_model", "ttft")

    def __init__(self, tel: Telemetry, scope: MutableMapping[str, Any], op: str, request_id: str) -> None:
        path: str = scope["path"]
        attributes: Attrs = {"http.request.method": scope["method"], "url.path": path,
                             "gen_ai.operation.name": operation(op), "sidegate.request_id": request_id}
        super().__init__(tel, tel.recorder.root(f"{scope['method']} {path}", SpanKind.SERVER,
                                                extract(scope["headers"]), attributes))
        self.ttft: float | None = None
        self.provider = ""
        self.response_model = ""

    def end(self, call: Any) -> None:
        """Close the span with what the call did (`call` is the routing loop's `Call`)."""
        span, status = self.span, call.status
        if not span.recording:
            if self.tel.genai is not None:
                self.tel.genai.record(call, self, perf_counter() - call.t0, str(status) if status >= 400 else None)
            return
        # Usage, provider and served model are on the attempt span that served (the generation): a
        # backend adding up a trace's tokens counts them once.
        attributes: Attrs = {"http.response.status_code": status, "gen_ai.request.model": call.model,
                             "sidegate.model_group": call.group}
        if call.attempts != 1:
            attributes["sidegate.attempts"] = call.attempts
        error = str(status) if status >= 400 else None
        if error is not None:
            attributes["error.type"] = error
            if status >= 500 or status == 499:
                span.fail(call.error or None)
        span.attributes.update(attributes)
        span.end()
        if self.tel.genai is not None:
            self.tel.genai.record(call, self, perf_counter() - call.t0, error)


class Attempt:
    """The client span of one upstream attempt."""

    __slots__ = ("_output", "_request", "_scrub", "finish", "model", "scan", "span")

    def __init__(self, request: Request, group: Any, dep: Any, model: str, number: int, op: str,
                 data: dict[str, Any], hedged: bool, fallback: bool, now: float) -> None:
        tel = request.tel
        provider = tel.provider_name(dep.provider)
        self._request, self.model = request, ""
        self.finish: list[str] = []
        self._output: list[bytes] | None = None
        request.provider = provider
        self.scan = tel.genai is not None
        """Read the served model off the answer (for the span, or for the GenAI metrics)."""
        opname = operation(op)
        if not request.span.recording:  # not sampled: a span for its context (traceparent) only
            self.span = request.span.child(opname, SpanKind.CLIENT, {})
            return
        self.scan = True
        address, port = tel.address(dep.provider.base_url)
        attributes: Attrs = {
            "gen_ai.operation.name": opname, "gen_ai.provider.name": provider, "gen_ai.request.model": model,
            "server.address": address, "sidegate.deployment": dep.target.id, "sidegate.model_group": group.name,
            "sidegate.routing.strategy": group.strategy.value, "sidegate.routing.attempt": number,
            "sidegate.breaker.state": dep.state.breaker.state(now),
        }
        if fallback:  # set only when true (each attribute costs its share of every export)
            attributes["sidegate.routing.fallback"] = True
        if hedged:
            attributes["sidegate.routing.hedged"] = True
        if port:
            attributes["server.port"] = port
        for key, name in (("max_tokens", "gen_ai.request.max_tokens"), ("temperature", "gen_ai.request.temperature"),
                          ("top_p", "gen_ai.request.top_p")):
            value = data.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[name] = value
        self._scrub = dep.scrubber
        if tel.content:
            prompt = data.get("messages", data.get("prompt", data.get("input")))
            attributes["gen_ai.input.messages"] = self._scrub.text(
                orjson.dumps(prompt)[:CONTENT_LIMIT].decode("utf-8", "replace"))
            self._output = []
        self.span = request.span.child(f"{opname} {model}", SpanKind.CLIENT, attributes)

    def headers(self) -> tuple[tuple[str, str], ...]:
        """`traceparent` (and `tracestate`) for the upstream request, naming this span."""
        return tuple(self.span.headers())

    def first_token(self, seconds: float) -> None:
        """The first event of a stream is out (`seconds` after the attempt started)."""
        self.span.event("gen_ai.first_token", {"gen_ai.server.time_to_first_token": seconds})
        self._request.ttft = seconds

    def output(self, data: bytes) -> None:
        """Bytes of the answer relayed to the client: finish reasons and the served model are read off them."""
        if not self.scan:
            return
        if not self.model:
            found = _MODEL.search(data, 0, 4096)
            if found is not None:
                self.model = found.group(1).decode("utf-8", "replace")
        # the regex only where a reason is not the `"finish_reason":null` of every OpenAI chunk
        if data.count(b"_reason") != data.count(b'_reason":null'):
            self.finish.extend(m.decode() for m in _FINISH.findall(data))
        if self._output is not None and sum(map(len, self._output)) < CONTENT_LIMIT:
            self._output.append(data)

    def end(self, call: Any, error: Any, served: bool) -> None:
        """Close the span: `error` is the GatewayError that failed it (None when it did not fail);
        `served` whether this attempt answered the client."""
        span = self.span
        if served and self.model:
            self._request.response_model = self.model
        if not span.recording:
            return
        attributes = span.attributes
        if self.model:
            attributes["gen_ai.response.model"] = self.model
        if self.finish:
            attributes["gen_ai.response.finish_reasons"] = self.finish
        if served and call.usage is not None:
            attributes["gen_ai.usage.input_tokens"] = call.usage.prompt
            attributes["gen_ai.usage.output_tokens"] = call.usage.completion
        if error is not None:
            attributes["error.type"] = error.code or type(error).__name__
            if error.upstream_status:
                attributes["http.response.status_code"] = error.upstream_status
            span.fail(error.message[:200])
        elif not served:
            attributes["error.type"] = "cancelled"  # a hedge that lost, or the client went away
        else:
            attributes["http.response.status_code"] = 200
        if self._output:
            attributes["gen_ai.output.messages"] = self._scrub.text(
                b"".join(self._output)[:CONTENT_LIMIT].decode("utf-8", "replace"))
        span.end()
