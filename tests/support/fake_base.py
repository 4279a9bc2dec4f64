"""Shared plumbing of the fake native upstreams: a hypercorn ASGI server on 127.0.0.1 in the test's
Trio loop that records every request and lets a subclass answer it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    raw: bytes


async def lifespan(receive: Any, send: Any) -> None:
    """Answer an ASGI lifespan conversation (every fake server and test app needs it)."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_all(receive: Any) -> bytes:
    """The whole request body."""
    raw = b""
    while True:
        msg = await receive()
        raw += msg.get("body", b"")
        if not msg.get("more_body"):
            return raw


@dataclass
class FakeServer:
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    step: int = 37
    """Streams are written in pieces of this many bytes (odd boundaries split events and lines)."""

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        raw = await read_all(receive)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        seen = Seen(scope["method"], scope["path"], scope["query_string"].decode(),
                    {k.decode().lower(): v.decode() for k, v in scope["headers"]}, body, raw)
        self.seen.append(seen)
        await self.answer(seen, send)

    async def answer(self, seen: Seen, send: Any) -> None:
        raise NotImplementedError

    async def json(self, send: Any, status: int, obj: Any, headers: list[tuple[bytes, bytes]] = []) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers]})
        await send({"type": "http.response.body", "body": json.dumps(obj).encode()})

    async def stream(self, send: Any, raw: bytes, content_type: bytes = b"text/event-stream") -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        for start in range(0, len(raw), self.step):
            await send({"type": "http.response.body", "body": raw[start : start + self.step], "more_body": True})
            await trio.lowlevel.checkpoint()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def sse(events: list[tuple[str | None, Any]], sep: str = "\n\n") -> bytes:
    """SSE bytes for (event name or None, JSON payload) pairs."""
    out = []
    for name, payload in events:
        head = f"event: {name}\n" if name else ""
        out.append(f"{head}data: {json.dumps(payload)}{sep}")
    return "".join(out).encode()


F = TypeVar("F", bound=FakeServer)


@asynccontextmanager
async def open_fake(fake: F) -> AsyncIterator[F]:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, fake, config)  # type: ignore[arg-type]
        fake.port = int(binds[0].rsplit(":", 1)[1])
        yield fake
        nursery.cancel_scope.cancel()


# ---- helpers for translator tests ----

def native_provider(base_url: str = "http://upstream.test", name: str = "native") -> Any:
    """A provider for adapter tests (the adapters read only connect_timeout from it; the plans
    helper keeps up with the Provider type's fields)."""
    from tests.support.plans import openai_provider

    return openai_provider(name, base_url)


def feed_split(translator: Any, raw: bytes, step: int) -> bytes:
    """Feed `raw` to a stream translator `step` bytes at a time; the joined output."""
    return b"".join(translator.feed(raw[i : i + step]) for i in range(0, len(raw), step))


def openai_events(out: bytes) -> list[Any]:
    """The `data:` payloads of OpenAI SSE bytes (`[DONE]` kept as the string)."""
    events = []
    for block in out.decode().split("\n\n"):
        if block:
            assert block.startswith("data: "), block
            data = block[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


@dataclass
class Assembled:
    role_first: bool
    text: str
    reasoning: str
    calls: dict[int, dict[str, str]]
    finish: str | None
    usage: dict[str, Any] | None
    done: bool


def assemble(out: bytes) -> Assembled:
    """What an OpenAI client would rebuild from the chunk events."""
    events = openai_events(out)
    chunks = [e for e in events if isinstance(e, dict)]
    first = chunks[0]["choices"][0]["delta"] if chunks and chunks[0]["choices"] else {}
    text = reasoning = ""
    calls: dict[int, dict[str, str]] = {}
    finish = None
    usage = None
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        if chunk.get("usage"):
            assert chunk["choices"] == [], "usage rides on its own chunk"
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function") or {}
                slot["name"] = fn.get("name") or slot["name"]
                slot["arguments"] += fn.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    return Assembled(first.get("role") == "assistant", text, reasoning, calls, finish, usage,
                     bool(events) and events[-1] == "[DONE]")
