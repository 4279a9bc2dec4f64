"""One attempt on one deployment: send the upstream request and relay the answer to the client.

Nothing reaches the client before the upstream has produced its first byte of answer, so a failed
attempt (an error status, a broken connection, a stream that ends before any event) can still be
retried or hedged invisibly. `claim` is asked just before the first byte goes out: with hedging,
only the first attempt to get there may answer; the others stop quietly.

Each attempt has its own deadlines inside the request's: `first_byte` (to the answer's headers and
first event; a whole answer: to its end) and `idle` (between stream events). Hitting one is a
timeout failure of the deployment, and the router's next attempt starts at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson
import trio

from sidegate.runtime.errors import (
    GatewayError,
    GuardrailBlocked,
    RateLimited,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from sidegate.runtime.plan import ModelGroup
from sidegate.runtime.routing.breaker import FailureKind
from sidegate.runtime.routing.call import Call
from sidegate.runtime.routing.state import Deployment
from sidegate.runtime.upstream.adapter import StreamTranslator
from sidegate.runtime.upstream.headers import redacted_url, relayed_headers
from sidegate.runtime.upstream.transport import UpstreamRequest, UpstreamStream, answer_too_large

if TYPE_CHECKING:
    from sidegate.runtime.observe.spans import Attempt

__all__ = ["TIMEOUT_CODES", "attempt", "attempt_limits", "classify", "stream_error"]

TIMEOUT_CODES = frozenset({"upstream_first_byte_timeout", "upstream_idle_timeout"})
"""Codes of the per-attempt deadline failures (the next attempt starts without backoff)."""


def attempt_limits(group: ModelGroup, dep: Deployment, budget: float | None = None) -> tuple[float, float]:
    """(first_byte, idle) seconds for one attempt on `dep`: the provider's `timeouts`, or by default
    `budget` (the router's share of the request's remaining deadline for this attempt; without one,
    the group's deadline divided by its attempts), so a hung upstream leaves time for the next one."""
    share = group.timeout / max(1, group.retry.attempts) if budget is None else budget
    first = dep.provider.first_byte_timeout
    first = share if first is None else first
    idle = dep.provider.idle_timeout
    # Without an explicit `idle`, silence is bounded by `first_byte` until the first event (the
    # stream may still fail over) and only by the request's deadline after it (nothing could).
    return first, math.inf if idle is None else idle


def _upstream_failure(err: GatewayError, status: int, headers: Any) -> GatewayError:
    err.upstream_status = status
    err.upstream_headers = relayed_headers(headers)
    return err


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
    number = call.attempts
    span = None
    if call.trace is not None:
        span = call.trace.tel.attempt(call.trace, group, dep, model, number, call.op, data, claim is not None,
                                      call.fallback)
        request = replace(request, headers=(*request.headers, *span.headers()))
    state.start(trio.current_time())
    call.upstream_url = redacted_url(request.url)
    tokens = 0
    t0 = perf_counter()
    limits = attempt_limits(group, dep, call.attempt_budget)
    failed: GatewayError | None = None
    try:
        if dep.authorizer is not None:
            request = await dep.authorizer.authorize(request)
        if request.max_answer != dep.max_answer:
            request = replace(request, max_answer=dep.max_answer)
        if call.stream:
            await _stream(dep, request, model, call, data, send, claim, limits, span)
        else:
            await _whole(dep, request, model, call, data, send, claim, limits, span)
        if call.usage is not None:
            tokens = call.usage.prompt + call.usage.completion
    except GatewayError as err:
        dep.scrubber.error(err)  # whatever the upstream said, it never carries a secret past here
        failed = err
        kind = classify(err)
        now = trio.current_time()
        if kind is not None:
            state.breaker.failure(now, kind, group.cooldown, err.retry_after, error=err.message,
                                  last=dep.last_available(now))
        if call.log is not None and not isinstance(err, GuardrailBlocked):  # a during_call block is no failure
            call.log("upstream_attempt_failed", request_id=call.request_id, group=group.name,
                     deployment=dep.target.id, url=call.upstream_url, attempt=number,
                     upstream_status=err.upstream_status, status=err.status, code=err.code,
                     kind=None if kind is None else kind.value, error=err.message,
                     breaker=state.breaker.state(now), elapsed_ms=round((perf_counter() - t0) * 1000, 2))
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
        if span is not None:
            span.end(call, failed, failed is None and call.started and call.deployment == dep.target.id)


def _answer_type(call: Call, headers: Any) -> bytes | None:
    """The answer's content type when a media dialect sets it from the upstream's (audio, a transcript
    as text); None: the default (JSON, or server-sent events)."""
    media = getattr(call.dialect, "media_type", None)
    return None if media is None else bytes(media(headers))


def _begin(dep: Deployment, call: Call, claim: Callable[[], bool] | None, headers: Any) -> bool:
    if claim is not None and not claim():
        return False
    call.relayed = relayed_headers(headers)
    call.deployment = dep.target.id
    call.price = dep.target.price
    call.started = True
    return True


async def _whole(
    dep: Deployment, request: UpstreamRequest, model: str, call: Call, data: dict[str, Any], send: Any,
    claim: Callable[[], bool] | None, limits: tuple[float, float], span: Attempt | None,
) -> None:
    t = perf_counter()
    try:
        with trio.move_on_after(limits[0]) as waiting:
            response = await dep.transport.send(request)
    finally:
        call.upstream += perf_counter() - t
    if waiting.cancelled_caught:
        raise UpstreamTimeout(f"no answer from the upstream within {limits[0]:g}s (timeouts.first_byte)",
                              code="upstream_first_byte_timeout")
    if response.status >= 400:
        failed = dep.scrubber.error(dep.adapter.error(response.status, response.headers, response.body))
        raise _upstream_failure(failed, response.status, response.headers)
    if call.dialect is None:
        body, usage = dep.adapter.response(call.op, response.body, model=model, request=data)
    else:
        body, usage = call.dialect.response(dep, model, response.body)
    if not _begin(dep, call, claim, response.headers):
        return
    if span is not None:
        span.output(body)
    if call.dialect is not None:
        await call.dialect.complete()
    call.usage, call.status = usage, 200
    if usage is None:
        call.request, call.answer = data, [body]  # metered locally once the answer is out
    if call.log_bodies:
        call.extra["response_body"] = body.decode("utf-8", "replace")
    kind = _answer_type(call, response.headers) or b"application/json"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode()), *call.headers()]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    call.complete = True
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Late:
    """An async context entered later, within its own deadline, and left with the block around it: an
    AsyncExitStack for one context (which cost ~0.9 KB a stream, its deque of callbacks mostly)."""

    __slots__ = ("_cm", "_entered")

    def __init__(self, cm: AbstractAsyncContextManager[UpstreamStream]) -> None:
        self._cm = cm
        self._entered = False

    async def __aenter__(self) -> _Late:
        return self

    async def enter(self) -> UpstreamStream:
        upstream = await self._cm.__aenter__()
        self._entered = True
        return upstream

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._cm.__aexit__(*exc) if self._entered else None


async def _stream(
    dep: Deployment, request: UpstreamRequest, model: str, call: Call, data: dict[str, Any], send: Any,
    claim: Callable[[], bool] | None, limits: tuple[float, float], span: Attempt | None,
) -> None:
    relay: StreamTranslator
    if call.dialect is None:
        options = data.get("stream_options")
        keep = isinstance(options, dict) and options.get("include_usage") is True
        relay = dep.adapter.stream(call.op, keep, model=model)
    else:
        relay = call.dialect.stream(dep, model)
    call.request = data  # with `call.answer`: metered locally if the upstream reports no usage
    first_byte, idle = limits
    t = perf_counter()
    t_first = t
    first_due = trio.current_time() + first_byte
    async with _Late(dep.transport.stream(request)) as late:
        with trio.move_on_after(first_byte) as opening:
            upstream = await late.enter()
        call.upstream += perf_counter() - t
        if opening.cancelled_caught:
            raise UpstreamTimeout(f"no answer from the upstream within {first_byte:g}s (timeouts.first_byte)",
                                  code="upstream_first_byte_timeout")
        if upstream.status >= 400:
            t = perf_counter()
            body = b""  # an error answer whose body stalls is judged by its status alone
            with trio.move_on_after(min(idle, first_byte)):
                body = await upstream.read()
            call.upstream += perf_counter() - t
            failed = dep.scrubber.error(dep.adapter.error(upstream.status, upstream.headers, body))
            raise _upstream_failure(failed, upstream.status, upstream.headers)
        kind = _answer_type(call, upstream.headers)  # (a media stream's own type is checked by its dialect)
        if kind is None and not upstream.headers.get("content-type", "").startswith(dep.adapter.stream_content_type):
            raise UpstreamError("upstream did not answer the stream with server-sent events")
        received = pending = 0
        try:
            chunks = upstream.iter_bytes().__aiter__()
            # One cancel scope for the whole stream whose deadline is moved before each read (a new
            # scope per event would cost ~4x more); it is infinite while relaying to the client.
            waiting = trio.CancelScope()
            limit = idle
            with waiting:
                while True:
                    t = perf_counter()
                    if not call.started or idle != math.inf:  # (no deadline to move: skip the scope's cost)
                        now = trio.current_time()
                        limit = idle if call.started else max(0.0, min(idle, first_due - now))
                        waiting.deadline = now + limit
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        call.upstream += perf_counter() - t
                    if waiting.deadline != math.inf:
                        waiting.deadline = math.inf
                    received += len(chunk)
                    if received > dep.max_answer:
                        raise answer_too_large(dep.max_answer)
                    out = relay.feed(chunk)
                    # Bytes that completed no event: bounded, so one endless event cannot hold the buffer
                    # (the parsers are linear, so it cannot hold the loop either).
                    pending = 0 if out else pending + len(chunk)
                    if pending > dep.max_event:
                        raise UpstreamError(f"the upstream's stream sent over {dep.max_event:,} bytes without "
                                            "completing an event (server.max_upstream_event)",
                                            code="upstream_event_too_large")
                    if out:
                        if not call.started:
                            call.extra["_ttft"] = perf_counter() - t_first
                            if span is not None:
                                span.first_token(call.extra["_ttft"])
                            if not _begin(dep, call, claim, upstream.headers):
                                return
                            call.status = 200
                            headers = [(b"content-type", kind or b"text/event-stream; charset=utf-8"),
                                       (b"cache-control", b"no-cache"), *call.headers()]
                            # the first events follow at once: the front writes them with the headers
                            await send({"type": "http.response.start", "status": 200, "headers": headers,
                                        "sidegate.body_follows": True})
                        failure: GatewayError | None = getattr(relay, "failure", None)
                        if failure is not None:
                            # The upstream's own error event goes to the client (scrubbed); the call is
                            # accounted as that error (set first: the client may hang up on reading it).
                            dep.scrubber.error(failure)
                            out = dep.scrubber.event(out)
                            call.status, call.error, call.complete = failure.status, failure.message, True
                        else:
                            out = dep.scrubber.data(out)
                        if relay.usage is None:  # kept to meter locally (not needed once usage is known)
                            call.keep(out)
                        if span is not None:
                            span.output(out)
                        if relay.done and call.dialect is not None and failure is None:
                            await call.dialect.complete()
                        await send({"type": "http.response.body", "body": out, "more_body": failure is None})
                        if failure is not None:
                            raise failure
            if waiting.cancelled_caught:
                if call.started or limit >= idle:
                    raise UpstreamTimeout(f"the upstream stream was idle for {idle:g}s (timeouts.idle)",
                                          code="upstream_idle_timeout")
                raise UpstreamTimeout(f"no stream event from the upstream within {first_byte:g}s (timeouts.first_byte)",
                                      code="upstream_first_byte_timeout")
            if not relay.done:
                raise UpstreamError("the upstream closed the stream before it was complete")
        except GatewayError as err:
            if call.complete:
                raise
            if not call.started:
                raise
            await stream_error(send, call, dep.scrubber.error(err))
            raise
        finally:
            if relay.usage is not None and call.started and call.deployment == dep.target.id:
                # a stream cut after the upstream reported its usage is charged that usage
                call.usage = relay.usage
    call.usage = relay.usage
    if call.usage is not None:
        call.answer.clear()
        call.answer_text = None
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
