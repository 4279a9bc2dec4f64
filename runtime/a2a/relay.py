"""Relaying one A2A call to its upstream: the request body and the A2A headers go up with the
agent's own credentials; the answer comes back with its status (JSON-RPC errors keep their codes).
Server-sent event streams are relayed chunk by chunk as they arrive, never buffered; a stream the
agent breaks is broken for the client too, one cut for idleness ends cleanly."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from sidegate.runtime.asgi import Receive, Scope, Send
from sidegate.runtime.observe.context import outbound_headers
from sidegate.runtime.plan import A2AAgent

__all__ = ["FORWARDED", "Outcome", "UpstreamFailed", "relay"]

FORWARDED = (b"content-type", b"accept", b"a2a-version", b"a2a-extensions", b"x-a2a-extensions", b"x-request-id")
"""Client headers passed to the agent; never the client's credentials."""
_RETURNED = ("content-type", "a2a-version", "a2a-extensions", "x-a2a-extensions", "cache-control")
_UNARY_LIMIT = 32 << 20


class UpstreamFailed(Exception):
    """The agent could not be reached or did not answer in time (before any byte was relayed)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(slots=True)
class Outcome:
    """What happened to a relayed call (for logs and metrics)."""

    status: int
    streamed: bool = False
    body: bytes | None = None
    """The unary answer (to read a JSON-RPC error code from); None for streams."""
    broken: str | None = None
    """Why a stream ended early, if it did."""


def _headers(scope: Scope, agent_headers: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k in FORWARDED]
    out.append(("accept-encoding", "identity"))  # relay bytes as they come, no re-encoding
    out.extend(agent_headers)
    out.extend(outbound_headers())  # W3C trace context of the relay's span (none with tracing off)
    return out


async def _watch_disconnect(receive: Receive, scope: trio.CancelScope, done: list[bool]) -> None:
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            if not done[0]:
                scope.cancel()
            return


async def relay(
    client: httpx.AsyncClient,
    agent: A2AAgent,
    agent_headers: tuple[tuple[str, str], ...],
    method: str,
    url: str,
    body: bytes,
    scope: Scope,
    receive: Receive,
    send: Send,
    rewrite: Callable[[bytes], bytes] | None = None,
) -> Outcome:
    """Relay one call; raises UpstreamFailed when nothing could be relayed. `rewrite` transforms a
    successful unary body (cards in answers)."""
    # No per-read limit from httpx: the unary deadline and the stream idle limit are trio scopes.
    limits = httpx.Timeout(agent.timeout, connect=agent.connect_timeout, read=None)
    headers = _headers(scope, agent_headers)
    outcome = Outcome(status=0)
    done = [False]
    failure: UpstreamFailed | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope, done)
        try:
            await _exchange(client, agent, method, url, body, headers, limits, send, rewrite, outcome)
        except UpstreamFailed as exc:
            failure = exc  # raised outside the nursery, so it is not wrapped in an ExceptionGroup
        finally:
            done[0] = True
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if outcome.status == 0:
        outcome.status = 499  # the client went away first
    return outcome


async def _pump(resp: httpx.Response, send: Send, idle: float) -> str | None:
    """Relay an event stream chunk by chunk as it arrives; why it ended early, or None at its end."""
    chunks = resp.aiter_raw()
    while True:
        chunk = None
        with trio.move_on_after(idle):
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return None
        if chunk is None:
            return f"stream idle for more than {idle:g}s"
        await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _unary(resp: httpx.Response, send: Send, back: list[tuple[bytes, bytes]],
                 rewrite: Callable[[bytes], bytes] | None, outcome: Outcome) -> None:
    """Relay a whole answer (bounded), rewritten when asked."""
    data = b""
    async for chunk in resp.aiter_raw():
        data += chunk
        if len(data) > _UNARY_LIMIT:
            raise UpstreamFailed("the agent's answer exceeds 32 MiB", 502)
    if rewrite is not None and resp.status_code == 200:
        data = rewrite(data)
    outcome.status, outcome.body = resp.status_code, data
    await send({"type": "http.response.start", "status": resp.status_code,
                "headers": [*back, (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def _exchange(
    client: httpx.AsyncClient, agent: A2AAgent, method: str, url: str, body: bytes,
    headers: list[tuple[str, str]], limits: httpx.Timeout, send: Send,
    rewrite: Callable[[bytes], bytes] | None, outcome: Outcome,
) -> None:
    started = False
    with trio.CancelScope(deadline=trio.current_time() + agent.timeout) as deadline:
        try:
            async with client.stream(method, url, content=body or None, headers=headers, timeout=limits) as resp:
                back = [(k.encode(), resp.headers[k].encode("latin-1")) for k in _RETURNED if k in resp.headers]
                if resp.headers.get("content-type", "").startswith("text/event-stream"):
                    deadline.deadline = math.inf  # a stream is bounded by stream_idle between reads instead
                    outcome.status, outcome.streamed = resp.status_code, True
                    await send({"type": "http.response.start", "status": resp.status_code,
                                "headers": [*back, (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]})
                    started = True
                    outcome.broken = await _pump(resp, send, agent.stream_idle)
                    if outcome.broken is None:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                        return
                else:
                    await _unary(resp, send, back, rewrite, outcome)
        except httpx.TimeoutException as exc:
            if not started:
                raise UpstreamFailed(f"the agent did not answer in time ({type(exc).__name__})", 504) from None
            # The stream broke: returning without the last body message has the server close the
            # connection mid-response, so the client sees the break (as it would from the agent
            # directly), not a clean end that reads as "no more events".
            outcome.broken = f"stream broken: {type(exc).__name__}"
            return
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            if not started:
                raise UpstreamFailed(f"the agent could not be reached: {type(exc).__name__}", 502) from None
            outcome.broken = f"stream broken: {type(exc).__name__}"
            return  # broken for the client too, as above
        if outcome.broken is not None:
            # Cut for idleness (headers are out): end the stream cleanly so the client sees the end.
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    if deadline.cancelled_caught:
        raise UpstreamFailed(f"the agent did not answer within {agent.timeout:g}s", 504)
