"""A scripted upstream behind the transport seam, for router tests under Trio's MockClock: each
provider host answers by a script the test controls (OpenAI wire format), with no sockets, so
`autojump_clock` can skip backoffs, cooldowns and deadlines. The client side is driven through the
ASGI app directly (see `asgi_call`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio
import trio.lowlevel

from sidegate.runtime.errors import UpstreamError
from sidegate.runtime.http.app import App
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.observe.metrics import Metrics
from sidegate.runtime.plan import Plan
from sidegate.runtime.routing.state import build_runtime
from sidegate.runtime.upstream.transport import UpstreamRequest, UpstreamResponse

JSON = httpx.Headers({"content-type": "application/json"})
SSE = httpx.Headers({"content-type": "text/event-stream"})


def completion(text: str = "ok", model: str = "m") -> bytes:
    return json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}).encode()


def sse(text: str = "ok") -> list[bytes]:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in text.split()]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def error(status: int, code: str | None = None, headers: dict[str, str] | None = None) -> UpstreamResponse:
    body = json.dumps({"error": {"message": f"scripted {status}", "type": "x", "param": None, "code": code}})
    return UpstreamResponse(status, httpx.Headers({"content-type": "application/json", **(headers or {})}),
                            body.encode())


@dataclass
class Reply:
    """What a host answers: a whole response, SSE events (optionally breaking after `break_after`),
    an exception, and a delay before answering."""

    response: UpstreamResponse | None = None
    events: list[bytes] | None = None
    break_after: int | None = None
    delay: float = 0.0
    raise_: Exception | None = None
    gap: float = 0.0
    """Seconds between two stream events."""


@dataclass
class ScriptedTransport:
    script: dict[str, Callable[[UpstreamRequest], Reply]] = field(default_factory=dict)
    calls: list[tuple[str, float]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    def count(self, host: str) -> int:
        return sum(1 for h, _ in self.calls if h == host)

    async def _reply(self, request: UpstreamRequest) -> Reply:
        host = urlsplit(request.url).hostname or ""
        self.calls.append((host, trio.current_time()))
        reply = self.script[host](request)
        try:
            if reply.delay:
                await trio.sleep(reply.delay)
        except trio.Cancelled:
            self.cancelled.append(host)
            raise
        if reply.raise_ is not None:
            raise reply.raise_
        return reply

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        reply = await self._reply(request)
        if reply.response is not None:
            return reply.response
        if request.method == "GET":
            return UpstreamResponse(200, JSON, b'{"object":"list","data":[]}')
        return UpstreamResponse(200, JSON, completion())

    @asynccontextmanager
    async def stream(self, request: UpstreamRequest) -> AsyncIterator[Any]:
        reply = await self._reply(request)
        if reply.response is not None:
            yield _Whole(reply.response)
            return
        yield _Events(reply.events or sse(), reply.break_after, reply.gap)

    async def aclose(self) -> None:
        pass


class _Whole:
    def __init__(self, r: UpstreamResponse) -> None:
        self.status, self.headers, self._body = r.status, r.headers, r.body

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        yield self._body

    async def read(self) -> bytes:
        return self._body


class _Events:
    status = 200
    headers = SSE

    def __init__(self, events: list[bytes], break_after: int | None, gap: float = 0.0) -> None:
        self._events, self._break, self._gap = events, break_after, gap

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        for i, e in enumerate(self._events):
            if self._break is not None and i >= self._break:
                raise UpstreamError("upstream connection broke: ReadError")
            if i and self._gap:
                await trio.sleep(self._gap)
            await trio.lowlevel.checkpoint()
            yield e

    async def read(self) -> bytes:
        return b"".join(self._events)


def make_app(plan: Plan, transport: ScriptedTransport) -> App:
    return App(build_runtime(plan, transport), Logger(plan.observability.logs), Metrics())


async def asgi_call(app: App, body: dict[str, Any], path: str = "/v1/chat/completions",
                    method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    """One request straight into the ASGI app (no sockets): status, headers, body."""
    raw = json.dumps(body).encode()
    sent = False
    done = trio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    status, headers, chunks = 0, {}, []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                done.set()

    scope = {"type": "http", "method": method, "path": path, "headers": [(b"content-type", b"application/json")]}
    await app(scope, receive, send)  # type: ignore[arg-type]
    done.set()
    return status, headers, b"".join(chunks)
