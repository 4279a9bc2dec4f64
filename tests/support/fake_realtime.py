"""A fake Realtime API upstream: a WebSocket server (wsproto's own `WSConnection`, handshake
included, on trio: independent of sidegate's server side; hypercorn's would not report the peer's
close code) speaking OpenAI's documented realtime events, or Azure's handshake.

OpenAI: `GET /v1/realtime?model=<m>` with `Authorization: Bearer <key>`; Azure:
`GET /openai/realtime?api-version=<v>&deployment=<d>` with `api-key: <key>`. A wrong key is refused
before the upgrade with 401 and OpenAI's error envelope; an unknown model with 404 (as the real
API). After `session.created`: `session.update` -> `session.updated`; `conversation.item.create` ->
`conversation.item.added` + `conversation.item.done`; `input_audio_buffer.append` (base64 audio,
counted) -> nothing; `response.create` -> `response.created`, the output item and content part,
`response.output_text.delta` per word, the done events and `response.done` with `usage`; anything
else -> an `error` event (`invalid_request_error`), as the real API answers.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import orjson
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

MODELS = frozenset({"gpt-realtime", "gpt-4o-realtime-preview"})


@dataclass
class Session:
    """What one session through the fake saw."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    events: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: int = 0
    close_code: int | None = None
    """The close code sidegate sent (None while open)."""
    closed: trio.Event = field(default_factory=trio.Event)


class FakeRealtime:
    """The server; `close_on` makes it close the session (1011) on that client event type."""

    def __init__(self, key: str = "sk-upstream-realtime", *, azure: bool = False) -> None:
        self.key = key
        self.azure = azure
        self.tls: ssl.SSLContext | None = None
        """Serve `wss://` with this server context (None: plain `ws://`)."""
        self.port = 0
        self.sessions: list[Session] = []
        self.opened = trio.Event()
        self.close_on: str | None = None
        self.text = "Hello from the realtime fake."
        self.usage = {"total_tokens": 57, "input_tokens": 40, "output_tokens": 17,
                      "input_token_details": {"text_tokens": 30, "audio_tokens": 10, "cached_tokens": 8,
                                              "cached_tokens_details": {"text_tokens": 8, "audio_tokens": 0}},
                      "output_token_details": {"text_tokens": 17, "audio_tokens": 0}}
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}" + ("" if self.azure else "/v1")

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "websocket":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await receive()  # websocket.connect
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = parse_qs(scope["query_string"].decode())
        refusal = self._check(scope["path"], query, headers)
        if refusal is not None:
            status, message = refusal
            body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "code": None}})
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        session = Session(scope["path"], query, headers)
        self.sessions.append(session)
        model = (query.get("deployment") or query.get("model") or [""])[0]
        await send({"type": "websocket.accept"})
        self.opened.set()
        state: dict[str, Any] = {"id": self._id("sess"), "object": "realtime.session", "type": "realtime",
                                 "model": model, "output_modalities": ["audio"], "instructions": ""}
        await self._event(send, "session.created", session=state)
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    session.close_code = message.get("code", 1005)
                    return
                raw = message.get("text") or message.get("bytes") or b""
                try:
                    event = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    await self._error(send, "invalid_json", "the event is not valid JSON")
                    continue
                session.events.append(event)
                kind = event.get("type")
                if kind == self.close_on:
                    if kind == "response.create":
                        await self._event(send, "response.created", response={"id": self._id("resp"),
                                                                              "object": "realtime.response",
                                                                              "status": "in_progress"})
                    await send({"type": "websocket.close", "code": 1011, "reason": "upstream failure"})
                    session.close_code = 1011
                    return
                await self._answer(send, session, state, event)
        finally:
            session.closed.set()

    def _check(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, str] | None:
        if self.azure:
            if path != "/openai/realtime" or not query.get("api-version") or not query.get("deployment"):
                return 404, "Resource not found"
            if headers.get("api-key") != self.key:
                return 401, "Access denied due to invalid subscription key or wrong API endpoint."
            return None
        if path != "/v1/realtime":
            return 404, "Invalid URL"
        if headers.get("authorization") != f"Bearer {self.key}":
            return 401, "Incorrect API key provided."
        if (query.get("model") or [""])[0] not in MODELS:
            return 404, "The model does not exist or you do not have access to it."
        return None

    async def _event(self, send: Any, kind: str, **fields: Any) -> None:
        await send({"type": "websocket.send", "text": orjson.dumps({"type": kind, "event_id": self._id("event"),
                                                                     **fields}).decode()})

    async def _error(self, send: Any, code: str, message: str) -> None:
        await self._event(send, "error", error={"type": "invalid_request_error", "code": code, "message": message,
                                                "param": None, "event_id": None})

    async def _answer(self, send: Any, session: Session, state: dict[str, Any], event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "session.update":
            state.update(event.get("session") or {})
            await self._event(send, "session.updated", session=state)
        elif kind == "conversation.item.create":
            item = {"id": self._id("item"), "object": "realtime.item", "status": "completed",
                    **(event.get("item") or {})}
            await self._event(send, "conversation.item.added", previous_item_id=None, item=item)
            await self._event(send, "conversation.item.done", previous_item_id=None, item=item)
        elif kind == "input_audio_buffer.append":
            session.audio_bytes += len(base64.b64decode(event.get("audio") or ""))
        elif kind == "response.create":
            await self._respond(send)
        else:
            await self._error(send, "invalid_value", f"Invalid value: '{kind}'. Supported values are: ...")

    async def _respond(self, send: Any) -> None:
        rid, iid = self._id("resp"), self._id("item")
        base = {"id": rid, "object": "realtime.response", "output_modalities": ["text"]}
        await self._event(send, "response.created", response={**base, "status": "in_progress", "output": []})
        item = {"id": iid, "object": "realtime.item", "type": "message", "role": "assistant", "status": "in_progress",
                "content": []}
        await self._event(send, "response.output_item.added", response_id=rid, output_index=0, item=item)
        await self._event(send, "response.content_part.added", response_id=rid, item_id=iid, output_index=0,
                          content_index=0, part={"type": "output_text", "text": ""})
        words = self.text.split(" ")
        for i, word in enumerate(words):
            await self._event(send, "response.output_text.delta", response_id=rid, item_id=iid, output_index=0,
                              content_index=0, delta=word if i == 0 else " " + word)
        await self._event(send, "response.output_text.done", response_id=rid, item_id=iid, output_index=0,
                          content_index=0, text=self.text)
        part = {"type": "output_text", "text": self.text}
        await self._event(send, "response.content_part.done", response_id=rid, item_id=iid, output_index=0,
                          content_index=0, part=part)
        done_item = {**item, "status": "completed", "content": [part]}
        await self._event(send, "response.output_item.done", response_id=rid, output_index=0, item=done_item)
        await self._event(send, "response.done", response={**base, "status": "completed", "output": [done_item],
                                                           "usage": self.usage})


class _Peer:
    """One TCP connection as the ASGI websocket calls the fake uses (`receive`, `send`)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self.parts: list[Any] = []

    async def _write(self, event: Any) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.send_all(self.ws.send(event))

    async def receive(self) -> dict[str, Any]:
        while True:
            for event in self.ws.events():
                if isinstance(event, Request):
                    self.request = event
                    return {"type": "websocket.connect"}
                if isinstance(event, Message):
                    self.parts.append(event.data)
                    if event.message_finished:
                        data, self.parts = self.parts, []
                        if isinstance(event, TextMessage):
                            return {"type": "websocket.receive", "text": "".join(data)}
                        return {"type": "websocket.receive", "bytes": b"".join(data)}
                elif isinstance(event, Ping):
                    await self._write(event.response())
                elif isinstance(event, CloseConnection):
                    if self.ws.state.name == "REMOTE_CLOSING":
                        await self._write(event.response())
                    return {"type": "websocket.disconnect", "code": event.code}
            try:
                got = bytes(await self.stream.receive_some(65536))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                got = b""
            if not got:
                return {"type": "websocket.disconnect", "code": 1006}
            self.ws.receive_data(got)

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            await self._write(AcceptConnection())
        elif kind == "websocket.http.response.start":
            await self._write(RejectConnection(status_code=message["status"], headers=message["headers"],
                                               has_body=True))
        elif kind == "websocket.http.response.body":
            await self._write(RejectData(data=message["body"]))
        elif kind == "websocket.send":
            await self._write(TextMessage(data=message["text"]) if "text" in message
                              else BytesMessage(data=message["bytes"]))
        elif kind == "websocket.close":
            await self._write(CloseConnection(code=message["code"], reason=message.get("reason", "")))


async def _serve(fake: FakeRealtime, stream: Any) -> None:
    if fake.tls is not None:
        stream = trio.SSLStream(stream, fake.tls, server_side=True)
    peer = _Peer(stream)
    if (await peer.receive())["type"] != "websocket.connect":
        return
    target = peer.request.target
    path, _, query = target.partition("?")
    headers = [(k.lower(), v) for k, v in peer.request.extra_headers]
    scope = {"type": "websocket", "path": path, "query_string": query.encode(),
             "headers": [(b"host", peer.request.host.encode()), *headers]}
    connected = iter([{"type": "websocket.connect"}])

    async def receive() -> dict[str, Any]:
        return next(connected, None) or await peer.receive()

    try:
        await fake(scope, receive, peer.send)
    finally:
        with trio.move_on_after(1):
            await stream.aclose()


@asynccontextmanager
async def open_fake_realtime(fake: FakeRealtime) -> AsyncIterator[FakeRealtime]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, partial(_serve, fake), 0, host="127.0.0.1"))
        fake.port = listeners[0].socket.getsockname()[1]
        yield fake
        nursery.cancel_scope.cancel()
