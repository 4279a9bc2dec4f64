"""One attempt on one deployment: send the upstream request and relay the answer to the client.

Nothing reaches the client before the upstream has produced its first byte of answer, so a failed
attempt (an error status, a broken connection, a stream that ends before any event) can still be
retried or hedged invisibly. `claim` is asked just before the first byte goes out: with hedging,
only the first attempt to get there may answer; the others stop quietly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from time import perf_counter
from typing import Any

import orjson
import trio

from runtime.errors import GatewayError, RateLimited, Unavailable, UpstreamError, UpstreamTimeout
from runtime.plan import ModelGroup
from runtime.routing.breaker import FailureKind
from runtime.routing.call import Call
from runtime.routing.state import Deployment
from runtime.upstream.adapter import StreamTranslator
from runtime.upstream.transport import answer_too_large

__all__ = ["attempt", "classify", "stream_error"]


def classify(err: GatewayError) -> FailureKind | None:
    """The failure kind of an upstream error, or None for errors retrying cannot fix."""
    if isinstance(err, RateLimited):
        return None if err.code == "deployment_caps_reached" else FailureKind.RATE_LIMIT
    if isinstance(err, UpstreamTimeout):
        return FailureKind.TIMEOUT
    if isinstance(err, UpstreamError):
        return FailureKind.CONNECT if err.code == "upstream_connect_error" else FailureKind.SERVER_ERROR
    if isinstance(err, Unavailable):
        return FailureKind.SERVER_ERROR
    return None


async def attempt(
    group: ModelGroup,
    dep: Deployment,
    model: str,
    call: Call,
    data: dict[str, Any],
    send: Any,
    claim: Callable[[], bool] | None = None,
) -> None:
    """Try `dep` once; raises GatewayError when it failed before anything was sent to the client.

    A client dialect other than OpenAI's (`call.dialect`) builds the request and shapes the answer.
    """
    dialect = call.dialect
    if dialect is None:
        request = dep.adapter.request(dep.provider, dep.target, dep.url(call.op, model), dep.headers, call.op, model,
                                      data)
    else:
        request = dialect.request(dep, model)
    state = dep.state
    state.start(trio.current_time())
    tokens = 0
    t0 = perf_counter()
    try:
        if dep.authorizer is not None:
            request = await dep.authorizer.authorize(request)
        if request.max_answer != dep.max_answer:
            request = replace(request, max_answer=dep.max_answer)
        if call.stream:
            await _stream(dep, request, model, call, data, send, claim)
        else:
            await _whole(dep, request, model, call, data, send, claim)
        if call.usage is not None:
            tokens = call.usage.prompt + call.usage.completion
    except GatewayError as err:
        dep.scrubber.error(err)  # whatever the upstream said, it never carries a secret past here
        kind = classify(err)
        if kind is not None:
            state.breaker.failure(trio.current_time(), kind, group.cooldown, err.retry_after)
        raise
    else:
        if call.status == 200:
            elapsed = perf_counter() - t0
            completion = call.usage.completion if call.usage else 0
            per_token = None if call.stream or not completion else elapsed / completion
            state.breaker.success(trio.current_time(), group.cooldown, ttft=call.extra.pop("_ttft", None),
                                  per_token=per_token)
    finally:
        call.extra.pop("_ttft", None)
        state.finish(trio.current_time(), tokens)


def _begin(dep: Deployment, call: Call, claim: Callable[[], bool] | None) -> bool:
    if claim is not None and not claim():
        return False
    call.deployment = dep.target.id
    call.price = dep.target.price
    call.started = True
    return True


async def _whole(
    dep: Deployment, request: Any, model: str, call: Call, data: dict[str, Any], send: Any,
    claim: Callable[[], bool] | None,
) -> None:
    t = perf_counter()
    try:
        response = await dep.transport.send(request)
    finally:
        call.upstream += perf_counter() - t
    if response.status >= 400:
        raise dep.scrubber.error(dep.adapter.error(response.status, response.headers, response.body))
    if call.dialect is None:
        body, usage = dep.adapter.response(call.op, response.body, model=model, request=data)
    else:
        body, usage = call.dialect.response(dep, model, response.body)
    if not _begin(dep, call, claim):
        return
    call.usage, call.status = usage, 200
    if usage is None:
        call.request, call.answer = data, [body]  # metered locally once the answer is out
    if call.log_bodies:
        call.extra["response_body"] = body.decode("utf-8", "replace")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *call.headers()]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    call.complete = True
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _stream(
    dep: Deployment, request: Any, model: str, call: Call, data: dict[str, Any], send: Any,
    claim: Callable[[], bool] | None,
) -> None:
    relay: StreamTranslator
    if call.dialect is None:
        options = data.get("stream_options")
        keep = isinstance(options, dict) and options.get("include_usage") is True
        relay = dep.adapter.stream(call.op, keep, model=model)
    else:
        relay = call.dialect.stream(dep, model)
    call.request = data  # with `call.answer`: metered locally if the upstream reports no usage
    t = perf_counter()
    t_first = t
    async with dep.transport.stream(request) as upstream:
        call.upstream += perf_counter() - t
        if upstream.status >= 400:
            t = perf_counter()
            body = await upstream.read()
            call.upstream += perf_counter() - t
            raise dep.scrubber.error(dep.adapter.error(upstream.status, upstream.headers, body))
        if not upstream.headers.get("content-type", "").startswith(dep.adapter.stream_content_type):
            raise UpstreamError("upstream did not answer the stream with server-sent events")
        received = pending = 0
        try:
            t = perf_counter()
            async for chunk in upstream.iter_bytes():
                call.upstream += perf_counter() - t
                received += len(chunk)
                if received > dep.max_answer:
                    raise answer_too_large(dep.max_answer)
                out = relay.feed(chunk)
                # Bytes that completed no event: bounded, so one endless event cannot hold the buffer
                # (the parsers are linear, so it cannot hold the loop either).
                pending = 0 if out else pending + len(chunk)
                if pending > dep.max_event:
                    raise UpstreamError(f"the upstream's stream sent over {dep.max_event:,} bytes without completing "
                                        "an event (server.max_upstream_event)", code="upstream_event_too_large")
                if out:
                    if not call.started:
                        call.extra["_ttft"] = perf_counter() - t_first
                        if not _begin(dep, call, claim):
                            return
                        call.status = 200
                        headers = [(b"content-type", b"text/event-stream; charset=utf-8"),
                                   (b"cache-control", b"no-cache"), *call.headers()]
                        await send({"type": "http.response.start", "status": 200, "headers": headers})
                    failure: GatewayError | None = getattr(relay, "failure", None)
                    if failure is not None:
                        # The upstream's own error event goes to the client (scrubbed); the call is
                        # accounted as that error (set first: the client may hang up on reading it).
                        dep.scrubber.error(failure)
                        out = dep.scrubber.event(out)
                        call.status, call.error, call.complete = failure.status, failure.message, True
                    else:
                        out = dep.scrubber.data(out)
                    call.answer.append(out)
                    await send({"type": "http.response.body", "body": out, "more_body": failure is None})
                    if failure is not None:
                        raise failure
                t = perf_counter()
            if not relay.done:
                raise UpstreamError("the upstream closed the stream before it was complete")
        except GatewayError as err:
            if call.complete:
                raise
            if not call.started:
                raise
            await stream_error(send, call, dep.scrubber.error(err))
            raise
    call.usage = relay.usage
    if call.usage is not None:
        call.answer.clear()
    call.complete = True
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def stream_error(send: Any, call: Call, err: GatewayError) -> None:
    """End a started stream with an error event in the client's dialect (OpenAI's shape by default),
    then close it."""
    call.error = err.message
    call.status = err.status
    if call.dialect is not None:
        body = call.dialect.error_event(err)
    else:
        payload = {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}
        body = b"data: " + orjson.dumps(payload) + b"\n\n"
    call.complete = True
    with trio.CancelScope(shield=True):
        await send({"type": "http.response.body", "body": body, "more_body": False})
