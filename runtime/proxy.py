"""The OpenAI-compatible model call: validate, resolve the model, pick a deployment, call it inside
the request's single deadline, and relay the answer (whole or streamed) to the client."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import orjson
import trio

from runtime.balance import choose
from runtime.errors import (
    BadRequest,
    GatewayError,
    ModelNotFound,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from runtime.openai_wire import Usage
from runtime.state import Deployment, Runtime
from runtime.transport import UpstreamRequest

__all__ = ["Call", "parse_request", "serve_call"]

_REQUIRED = {"chat": "messages", "completions": "prompt", "embeddings": "input"}


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
    started: bool = False
    """True once response headers were sent (errors must then go in-stream)."""
    complete: bool = False
    """True once the last byte of the answer is being sent."""
    usage: Usage | None = None
    error: str | None = None
    log_bodies: bool = False
    """The spec asked for bodies in the request log (`observability.logs.bodies`)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def overhead_ms(self) -> str:
        """Time spent inside sidegate so far, upstream wait excluded, in milliseconds."""
        return f"{max(0.0, perf_counter() - self.t0 - self.upstream) * 1000:.2f}"

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Headers every answer carries."""
        out = [(b"x-request-id", self.request_id.encode())]
        if self.deployment:
            out.append((b"x-sidegate-deployment", self.deployment.encode()))
        out.append((b"x-sidegate-overhead-ms", self.overhead_ms().encode()))
        return out


def parse_request(op: str, body: bytes) -> dict[str, Any]:
    """The request's JSON object, with the fields every operation needs checked."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
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


async def serve_call(rt: Runtime, call: Call, data: dict[str, Any], send: Any) -> None:
    """Route and answer one parsed request; raises GatewayError when nothing was sent yet."""
    call.model = data["model"]
    route = rt.routes.resolve(call.model)
    if route is None:
        raise ModelNotFound(f"model '{call.model}' is not served by this gateway", param="model")
    group = route.group
    call.group = group.name
    call.stream = data.get("stream") is True
    deps = rt.deployments[group.name]
    with trio.move_on_after(group.timeout) as deadline:
        choice = choose(group.targets, [d.state for d in deps], trio.current_time(), random.random())
        if choice.index is None:
            raise RateLimited(
                f"every deployment of '{group.name}' is at its rpm/tpm/parallel cap",
                retry_after=choice.retry_after,
                code="deployment_caps_reached",
            )
        dep = deps[choice.index]
        call.deployment = dep.target.id
        upstream_model = route.suffix if dep.target.model == "*" and route.suffix else dep.target.model
        request = dep.adapter.request(
            dep.provider, dep.target, dep.url(call.op, upstream_model), dep.headers, call.op, upstream_model, data
        )
        state = dep.state
        state.start(trio.current_time())
        try:
            if call.stream:
                await _relay_stream(dep, request, call, data, send)
            else:
                await _relay_whole(dep, request, call, send)
        finally:
            u = call.usage
            state.finish(trio.current_time(), (u.prompt + u.completion) if u else 0)
    if deadline.cancelled_caught:
        err = UpstreamTimeout(f"no complete answer from the upstream within {group.timeout:g}s")
        if not call.started:
            raise err
        await _stream_error(send, call, err)


async def _relay_whole(dep: Deployment, request: UpstreamRequest, call: Call, send: Any) -> None:
    t = perf_counter()
    try:
        response = await dep.transport.send(request)
    finally:
        call.upstream += perf_counter() - t
    if response.status >= 400:
        raise dep.adapter.error(response.status, response.headers, response.body)
    body, call.usage = dep.adapter.response(call.op, response.body)
    call.status = 200
    if call.log_bodies:
        call.extra["response_body"] = body.decode("utf-8", "replace")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *call.headers(),
    ]
    call.started = True
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    call.complete = True
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _relay_stream(
    dep: Deployment, request: UpstreamRequest, call: Call, data: dict[str, Any], send: Any
) -> None:
    options = data.get("stream_options")
    relay = dep.adapter.stream(call.op, isinstance(options, dict) and options.get("include_usage") is True)
    t = perf_counter()
    async with dep.transport.stream(request) as upstream:
        call.upstream += perf_counter() - t
        if upstream.status >= 400:
            t = perf_counter()
            body = await upstream.read()
            call.upstream += perf_counter() - t
            raise dep.adapter.error(upstream.status, upstream.headers, body)
        if not upstream.headers.get("content-type", "").startswith(dep.adapter.stream_content_type):
            raise UpstreamError("upstream did not answer the stream with server-sent events")
        call.status = 200
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            *call.headers(),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        call.started = True
        try:
            t = perf_counter()
            async for chunk in upstream.iter_bytes():
                call.upstream += perf_counter() - t
                out = relay.feed(chunk)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                t = perf_counter()
            if not relay.done:
                raise UpstreamError("the upstream closed the stream before it was complete")
        except GatewayError as err:
            await _stream_error(send, call, err)
            return
    call.usage = relay.usage
    call.complete = True
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _stream_error(send: Any, call: Call, err: GatewayError) -> None:
    """End a started stream with an error event in OpenAI's shape, then close it."""
    call.error = err.message
    call.status = err.status
    payload = {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}
    body = b"data: " + orjson.dumps(payload) + b"\n\n"
    call.complete = True
    with trio.CancelScope(shield=True):
        await send({"type": "http.response.body", "body": body, "more_body": False})
