"""A fault-injecting upstream: a raw Trio TCP server on 127.0.0.1 driven by h11, so a test can script
what each request gets, at the socket level: an answer in OpenAI's or Anthropic's wire format, a 429
with any Retry-After, a hang, a stream that stalls, a connection reset after the request was read,
or a keep-alive connection the server closes once it has answered.

Like the real APIs it refuses requests without credentials (401 in the provider's envelope) and
bodies that are not JSON objects with `model` (400). Every request that arrived whole is counted in
`hits` (the thing retry-safety tests measure), with the time it arrived.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import trio


@dataclass
class Act:
    """What one request gets. `status`/`headers`/`body` answer whole; `events` answer as SSE (each
    event written on its own, `gap` seconds apart), stalling forever after `stall_after` events;
    `hang` never answers (until the client closes the connection); `reset` closes the connection with a TCP reset after reading the request;
    `close_after` closes the connection after answering (keep-alive was announced)."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None
    events: list[bytes] | None = None
    gap: float = 0.0
    stall_after: int | None = None
    hang: bool = False
    reset: bool = False
    close_after: bool = False
    delay: float = 0.0


def openai_completion(text: str = "Hi there!", model: str = "m") -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


def openai_error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def openai_events(words: list[str], model: str = "m") -> list[bytes]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


def anthropic_message(text: str = "Hi there!", model: str = "claude") -> dict[str, Any]:
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 2}}


def anthropic_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011"}


Script = Callable[[int, dict[str, Any]], Act]
"""(hit number from 1, the request's JSON body) -> what it gets."""


@dataclass
class FaultUpstream:
    script: Script
    anthropic: bool = False
    port: int = 0
    hits: list[float] = field(default_factory=list)
    """trio.current_time() of each request that arrived whole."""
    closed: int = 0
    """Connections this server closed (after `close_after`, `reset`, or the client leaving)."""
    connections: int = 0
    changed: trio.Event = field(default_factory=trio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _note(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds (re-checked whenever the server records something)."""
        while not predicate():
            await self.changed.wait()

    def _refusal(self, headers: dict[str, str], body: bytes) -> tuple[int, Any] | None:
        if self.anthropic:
            if "x-api-key" not in headers:
                return 401, anthropic_error("authentication_error", "x-api-key header is required")
            if "anthropic-version" not in headers:
                return 400, anthropic_error("invalid_request_error", "anthropic-version header is required")
        elif not headers.get("authorization", "").startswith("Bearer "):
            return 401, openai_error("You didn't provide an API key.", "invalid_request_error", None)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("model"), str):
            return 400, openai_error("model is required", "invalid_request_error", None)
        return None

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await _read_request(stream, conn)
                if request is None:
                    return
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                self.hits.append(trio.current_time())
                self._note()
                refused = self._refusal(headers, body)
                data = json.loads(body) if refused is None else {}
                act = Act(status=refused[0], body=refused[1]) if refused else self.script(len(self.hits), data)
                if act.delay:
                    await trio.sleep(act.delay)
                if act.hang:  # until the client hangs up
                    while await stream.receive_some(65536):
                        pass
                    return
                if act.reset:
                    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                await self._answer(stream, conn, act)
                if act.close_after or conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)
            self.closed += 1
            self._note()

    async def _answer(self, stream: trio.SocketStream, conn: h11.Connection, act: Act) -> None:
        if act.events is None:
            raw = json.dumps(act.body if act.body is not None else (
                anthropic_message() if self.anthropic else openai_completion())).encode()
            head = [("content-type", "application/json"), ("content-length", str(len(raw))), *act.headers]
            await stream.send_all(conn.send(h11.Response(status_code=act.status, headers=head)) or b"")
            await stream.send_all((conn.send(h11.Data(data=raw)) or b"") + (conn.send(h11.EndOfMessage()) or b""))
            return
        head = [("content-type", "text/event-stream; charset=utf-8"), ("transfer-encoding", "chunked"), *act.headers]
        await stream.send_all(conn.send(h11.Response(status_code=act.status, headers=head)) or b"")
        for i, event in enumerate(act.events):
            if act.stall_after is not None and i >= act.stall_after:
                await trio.sleep_forever()
            if i and act.gap:
                await trio.sleep(act.gap)
            await stream.send_all(conn.send(h11.Data(data=event)) or b"")
        if act.stall_after is not None and act.stall_after >= len(act.events):
            await trio.sleep_forever()
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(bytes(data))
            continue
        if type(event) is h11.Request:
            request = event
        elif type(event) is h11.Data:
            body += bytes(event.data)
        elif type(event) is h11.EndOfMessage:
            return request, body
        elif type(event) is h11.ConnectionClosed or event is h11.PAUSED:
            return None, b""


@asynccontextmanager
async def open_fault_upstream(script: Script, *, anthropic: bool = False) -> AsyncIterator[FaultUpstream]:
    fake = FaultUpstream(script, anthropic=anthropic)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, fake._serve, 0, host="127.0.0.1"))
        fake.port = listeners[0].socket.getsockname()[1]
        yield fake
        nursery.cancel_scope.cancel()
