"""One client request's record (for headers, the log line and metrics) and its validation."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import trio

from sidegate.runtime.errors import BadRequest, GatewayError
from sidegate.runtime.plan import Price
from sidegate.runtime.upstream.openai_wire import Usage
from sidegate.runtime.upstream.tokens import prompt_tokens, text_of_events
from sidegate.runtime.upstream.urlpath import check_model_name

if TYPE_CHECKING:
    from sidegate.runtime.observe.spans import Request
    from sidegate.runtime.routing.state import Deployment
    from sidegate.runtime.upstream.adapter import StreamTranslator
    from sidegate.runtime.upstream.transport import UpstreamRequest

__all__ = ["Call", "Dialect", "estimate_tokens", "estimate_tokens_off_loop", "parse_request"]


class Dialect(Protocol):
    """A client API other than OpenAI's (Anthropic's Messages): the hook the routing loop calls to
    build each attempt's upstream request and to shape its answer, stream and errors for the client.
    A request in OpenAI's shape has no dialect and takes the adapters' path directly. A media dialect
    (`runtime.http.media`) also has `media_type(headers) -> bytes`: the answer's content type, from
    the upstream's (audio, a transcript as text), checked before anything is relayed."""

    def request(self, dep: Deployment, model: str) -> UpstreamRequest:
        """The upstream request for one attempt on `dep` (upstream model `model`)."""
        ...

    def response(self, dep: Deployment, model: str, body: bytes) -> tuple[bytes, Usage | None]:
        """The client's answer for `dep`'s whole answer, and its usage."""
        ...

    def stream(self, dep: Deployment, model: str) -> StreamTranslator:
        """A translator of `dep`'s stream into the client's events."""
        ...

    def error_event(self, err: GatewayError) -> bytes:
        """The event that ends a started stream with an error."""
        ...

    async def complete(self) -> None:
        """The answer is whole and about to be finished for the client (a stored answer is kept now,
        so that a client reading its end can already ask for it)."""
        ...

_REQUIRED = {"chat": "messages", "completions": "prompt", "embeddings": "input"}
_FIELD = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _field_list(names: tuple[str, ...]) -> bytes:
    """Client-chosen field names as a safe header value: plain names only, at most 16 of them."""
    plain = [n for n in names if _FIELD.fullmatch(n)]
    shown = plain[:16]
    rest = len(names) - len(shown)
    return (",".join(shown) + (f",+{rest} more" if rest else "")).lstrip(",").encode()


KEEP_EVENTS = 16384
"""Bytes of a stream's events kept as they are for local metering before they are reduced to text."""


@dataclass(slots=True)
class Call:
    """What one request did, for its response headers, log line and metrics."""

    request_id: str
    op: str
    t0: float
    model: str = ""
    group: str = "unknown"
    deployment: str = ""
    stream: bool = False
    upstream: float = 0.0
    status: int = 0
    attempts: int = 0
    started: bool = False
    """True once response headers were sent (errors must then go in-stream)."""
    complete: bool = False
    """True once the last byte of the answer is being sent."""
    client_gone: bool = False
    """The client disconnected before the answer was complete (the request was cancelled)."""
    usage: Usage | None = None
    price: Price | None = None
    """The serving deployment's prices (for the request's cost)."""
    error: str | None = None
    log_bodies: bool = False
    """The spec asked for bodies in the request log (`observability.logs.bodies`)."""
    dialect: Dialect | None = None
    """The client's API when it is not OpenAI's."""
    prompt_estimate: int = 0
    """The prompt's estimated tokens (set by routing; an Anthropic stream's `message_start` reports it)."""
    dropped: tuple[str, ...] = ()
    """Request fields the serving target could not take and that were dropped (`x-sidegate-dropped`)."""
    extra: dict[str, Any] = field(default_factory=dict)
    relayed: list[tuple[bytes, bytes]] = field(default_factory=list)
    """Headers of the serving upstream's answer that go to the client (rate limits, request id)."""
    log: Callable[..., None] | None = None
    """Where failed attempts are logged (a warning line each)."""
    planned: int = 1
    """Attempts this request may make in all (its group's and its fallbacks')."""
    attempt_budget: float | None = None
    """The current attempt's default deadline (see `runtime.routing.relay.attempt_limits`)."""
    upstream_url: str = ""
    """The last attempt's upstream URL without credentials or query (for the request's log line)."""
    request: dict[str, Any] | None = None
    """The request body, kept when the upstream reported no usage (to count its tokens locally)."""
    answer: list[bytes] = field(default_factory=list)
    """What the client was sent of the answer, kept when the upstream reported no usage (counted locally
    at settle time, after the answer went out); a stream's events since `answer_text` (see `keep`)."""
    answer_text: list[str] | None = None
    """The generated text of a long streamed answer's first events, which `keep` no longer holds."""
    kept: int = 0
    """Bytes in `answer`."""
    trace: Request | None = None
    """The request's server span (`observability.tracing`); None when tracing is off."""
    fallback: bool = False
    """The group being tried is a fallback of the requested one (for the attempt spans)."""

    def keep(self, events: bytes) -> None:
        """Keep streamed events (whole ones) to meter the answer locally should no usage come. Past
        `KEEP_EVENTS` bytes of server-sent events they are reduced to their generated text, what would
        be counted: a long answer then costs its text, not its SSE framing (~20x more; an answer of
        2,000 events held ~400 KB until its end)."""
        self.answer.append(events)
        self.kept += len(events)
        if self.kept < KEEP_EVENTS:
            return
        raw = b"".join(self.answer)
        end = raw.rfind(b"\n") + 1
        if end and (self.answer_text is not None or not raw.lstrip().startswith(b"{")):
            self.answer_text = [*(self.answer_text or ()), text_of_events(raw[:end])]
            raw = raw[end:]
            self.kept = len(raw)
        else:  # (not events: looked at again after as many bytes more)
            self.kept = 0
        self.answer[:] = [raw] if raw else []

    def answer_events(self) -> tuple[bytes, str | None]:
        """The kept answer for :func:`runtime.upstream.tokens.estimate_usage`: its bytes, and the text
        of the events already reduced (None when none were)."""
        return b"".join(self.answer), None if self.answer_text is None else "".join(self.answer_text)

    def overhead_ms(self) -> str:
        """Time spent inside sidegate so far, upstream wait excluded, in milliseconds."""
        return f"{max(0.0, perf_counter() - self.t0 - self.upstream) * 1000:.2f}"

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Headers every answer carries."""
        out = [(b"x-request-id", self.request_id.encode())]
        if self.deployment:
            out.append((b"x-sidegate-deployment", self.deployment.encode()))
        if self.attempts:
            out.append((b"x-sidegate-attempts", str(self.attempts).encode()))
        out.append((b"x-sidegate-overhead-ms", self.overhead_ms().encode()))
        if self.dropped:
            out.append((b"x-sidegate-dropped", _field_list(self.dropped)))
        if self.trace is not None:
            out.append((b"x-sidegate-trace-id", self.trace.trace_id.encode()))
        if self.op in ("messages", "count_tokens"):
            out.append((b"request-id", self.request_id.encode()))  # what Anthropic's SDKs read
        out.extend(self.relayed)
        return out


def json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object (400 otherwise)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


async def cancel_on_disconnect(receive: Callable[[], Awaitable[Any]], scope: trio.CancelScope, call: Call) -> None:
    """Cancel the request (and so its upstream call) when the client goes away first.

    The server also reports a disconnect once the last byte of the answer is sent; cancelling
    then would interrupt the server's own connection recycling, so a complete answer is left be.
    """
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            if not call.complete:
                call.client_gone = True
                scope.cancel()
            return


def parse_request(op: str, body: bytes) -> dict[str, Any]:
    """The request's JSON object, with the fields every operation needs checked."""
    data = json_object(body)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
    check_model_name(model)
    needed = _REQUIRED[op]
    if needed not in data:
        raise BadRequest(f"'{needed}' is required", param=needed)
    if op == "chat" and (not isinstance(data["messages"], list) or not data["messages"]):
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    stream = data.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream")
    if op == "embeddings" and stream:
        raise BadRequest("embeddings cannot be streamed", param="stream")
    return data


def estimate_tokens(data: dict[str, Any], window: int | None = None) -> tuple[int, int]:
    """A (prompt, completion) token estimate before the call, for routing and context-window checks.

    The prompt is ~4 characters a token (no encoding: nothing on the hot path) unless a context window
    is in question: when the prompt's JSON is longer in bytes than `window` (the smallest context
    window of the deployments that may serve it; a token is at least one byte, so a shorter prompt
    fits for sure), tiktoken counts it exactly (~37 us a KB). The completion is `max_tokens` or 256.
    """
    size = _prompt_size(data)
    prompt = prompt_tokens(data) if window is not None and size > window else size // 4
    return prompt, _completion_budget(data)


async def estimate_tokens_off_loop(data: dict[str, Any], window: int | None = None) -> tuple[int, int]:
    """`estimate_tokens`, with an exact count (a long prompt: milliseconds) done in a worker thread."""
    size = _prompt_size(data)
    if window is not None and size > window:
        prompt = await trio.to_thread.run_sync(prompt_tokens, data)
    else:
        prompt = size // 4
    return prompt, _completion_budget(data)


def _prompt_size(data: dict[str, Any]) -> int:
    return len(orjson.dumps(data.get("messages", data.get("prompt", data.get("input", "")))))


def _completion_budget(data: dict[str, Any]) -> int:
    limit = data.get("max_completion_tokens", data.get("max_tokens", data.get("max_output_tokens")))
    return limit if isinstance(limit, int) and limit > 0 else 256
