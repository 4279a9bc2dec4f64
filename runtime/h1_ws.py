"""WebSocket on the h1 front: a request with `Upgrade: websocket` taken over from `runtime.h1`, the
handshake answered (RFC 6455, no extensions), and the connection spoken to the ASGI app as an ASGI
`websocket` scope (`websocket.connect`, `accept`, `receive`, `send`, `close`, `disconnect`), so the
app serves the same under hypercorn's front.

The app may refuse the upgrade with an HTTP answer (the `websocket.http.response` extension: an
error in the client's dialect with its status) or with `websocket.close` before accepting (403, as
ASGI says). Messages are at most `max_message` bytes (a longer one closes with 1009). An app that
returns without closing closes with 1000; after a close the peer's answer is awaited briefly.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import h11
import trio
from wsproto.utilities import generate_accept_token

from sidegate.runtime.errors import BadRequest, from_exception, openai_body
from sidegate.runtime.websocket import BROKEN, Closed, Socket

__all__ = ["serve_websocket", "wants_websocket"]

App = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


def _tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    return {t.strip().lower() for k, v in headers if k == name for t in v.split(b",")}


def wants_websocket(request: h11.Request) -> bool:
    """Whether `request` asks to become a WebSocket (a GET with `Upgrade: websocket`; cheap for the
    POSTs of the hot path)."""
    if request.method != b"GET":
        return False
    for name, value in request.headers:
        if name == b"upgrade":
            return b"websocket" in value.lower()
    return False


def _key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The client's `Sec-WebSocket-Key` when the handshake is one RFC 6455 accepts, else None."""
    values = [v for k, v in headers if k == b"sec-websocket-key"]
    if len(values) != 1 or b"13" not in _tokens(headers, b"sec-websocket-version") \
            or b"upgrade" not in _tokens(headers, b"connection"):
        return None
    try:
        if len(base64.b64decode(values[0], validate=True)) != 16:
            return None
    except ValueError:
        return None
    return values[0].strip()


class _Session:
    """One upgraded request: the ASGI `receive` and `send` of its websocket scope."""

    def __init__(self, stream: trio.abc.HalfCloseableStream, machine: h11.Connection, key: bytes, date: bytes,
                 max_message: int) -> None:
        self.stream = stream
        self.h11 = machine
        self.key = key
        self.date = date
        self.max_message = max_message
        self.socket: Socket | None = None
        self.connected = False
        """`websocket.connect` was handed to the app."""
        self.answered = False
        """The request was answered: accepted (101) or refused with an HTTP answer."""
        self.http_started = False
        self.gone: Closed | None = None

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        if self.socket is None:  # not accepted (refused, or the app reads before accepting)
            if not self.answered:
                await trio.sleep_forever()
            return {"type": "websocket.disconnect", "code": 1006}
        message = await self.socket.receive()
        if isinstance(message, Closed):
            self.gone = message
            return {"type": "websocket.disconnect", "code": message.code, "reason": message.reason}
        if isinstance(message, str):
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            await self._accept(message)
        elif kind == "websocket.send":
            if self.socket is None:
                raise RuntimeError("websocket.send before websocket.accept")
            text, data = message.get("text"), message.get("bytes")
            await self.socket.send(text if text is not None else bytes(data or b""))
        elif kind == "websocket.close":
            if self.socket is not None:
                await self.socket.close(int(message.get("code", 1000)), str(message.get("reason") or ""))
            elif not self.answered:
                await self._refuse(403, b"")
        elif kind == "websocket.http.response.start":
            if self.answered:
                raise RuntimeError("websocket.http.response.start after the request was answered")
            self.answered = self.http_started = True
            headers = [*message.get("headers", ()), (b"connection", b"close"), (b"date", self.date)]
            await self._write(self.h11.send(h11.Response(status_code=int(message["status"]), headers=headers)))
        elif kind == "websocket.http.response.body":
            if not self.http_started:
                raise RuntimeError("websocket.http.response.body before its start")
            out = self.h11.send(h11.Data(data=bytes(message.get("body", b"")))) or b""
            if not message.get("more_body", False):
                out += self.h11.send(h11.EndOfMessage()) or b""
            await self._write(out)

    async def _accept(self, message: MutableMapping[str, Any]) -> None:
        if self.answered:
            raise RuntimeError("websocket.accept after the request was answered")
        self.answered = True
        headers = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
                   (b"sec-websocket-accept", generate_accept_token(self.key)), (b"date", self.date)]
        if message.get("subprotocol"):
            headers.append((b"sec-websocket-protocol", str(message["subprotocol"]).encode()))
        headers.extend(message.get("headers", ()))
        await self._write(self.h11.send(h11.InformationalResponse(status_code=101, headers=headers)) or b"")
        trailing, _ = self.h11.trailing_data
        self.socket = Socket(self.stream, client=False, trailing=bytes(trailing), max_message=self.max_message)

    async def _refuse(self, status: int, body: bytes) -> None:
        self.answered = True
        head = h11.Response(status_code=status, headers=[
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"), (b"date", self.date)])
        out = self.h11.send(head) or b""
        if body:
            out += self.h11.send(h11.Data(data=body)) or b""
        await self._write(out + (self.h11.send(h11.EndOfMessage()) or b""))

    async def _write(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except BROKEN:
            self.gone = Closed(1006, "connection lost")

    async def end(self) -> None:
        """After the app returned: finish what it left open."""
        try:
            if self.socket is not None:
                if self.gone is None:
                    await self.socket.close(1000)
                await self.socket.finish()
            elif not self.answered:
                await self._refuse(403, b"")
            elif self.http_started and self.h11.our_state is h11.SEND_BODY:
                await self._write(self.h11.send(h11.EndOfMessage()) or b"")
        except (h11.LocalProtocolError, *BROKEN):
            pass


async def serve_websocket(app: App, stream: trio.abc.HalfCloseableStream, machine: h11.Connection,
                          request: h11.Request, *,
                          client: tuple[str, int] | None, server: tuple[str, int] | None, state: dict[str, Any],
                          date: bytes, max_message: int, warn: Callable[..., None] | None = None) -> None:
    """Serve the upgrade `request` on `stream` until the WebSocket closes (the connection closes after)."""
    headers = list(request.headers)
    key = _key(headers) if request.method == b"GET" else None
    if key is None:
        body = openai_body(BadRequest("not a valid WebSocket handshake (RFC 6455: GET, Connection: Upgrade, "
                                      "Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key)",
                                      code="bad_websocket_handshake"))
        session = _Session(stream, machine, b"", date, max_message)
        await session._refuse(400, body)
        return
    path, _, query = request.target.partition(b"?")
    protocols = [p.strip().decode("latin-1") for k, v in headers if k == b"sec-websocket-protocol"
                 for p in v.split(b",") if p.strip()]
    scope: dict[str, Any] = {
        "type": "websocket", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.http_version.decode("ascii"), "scheme": "ws",
        "path": unquote(path.decode("ascii")), "raw_path": path, "query_string": query, "root_path": "",
        "headers": headers, "client": client, "server": server, "subprotocols": protocols,
        "state": state.copy(), "extensions": {"websocket.http.response": {}},
    }
    session = _Session(stream, machine, key, date, max_message)
    try:
        await app(scope, session.receive, session.send)
    except Exception as exc:  # the app's own boundary answers every error; this is a bug, logged
        if warn is not None:
            warn("websocket_app_error", error=f"{type(exc).__name__}: {exc}"[:300])
        if session.socket is not None and session.gone is None:
            await session.socket.close(1011, "internal error")
        elif not session.answered:
            await session._refuse(500, openai_body(from_exception(RuntimeError())))
            return
    await session.end()
