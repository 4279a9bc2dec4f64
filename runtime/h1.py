"""The client side of the sidecar: HTTP/1.1 on h11 and trio, calling the ASGI app directly.

Measured against hypercorn's per-connection server (which sidegate ran before, and which
`SIDEGATE_FRONT=hypercorn` still selects for comparison), the costs of a request were the framework's
rather than the protocol's: a task and memory channels per request, an idle-timer task restarted
twice per request, a lock and a shielded scope per write, and three socket writes for a whole
answer (headers, body, end). Here a request runs in its connection's task, and what the app sends
goes out in as few writes as the ASGI messages allow: a whole answer (its start message declares
`content-length`, or `sidegate.body_follows`) is one write of headers, body and end; a stream's
last body message carries its end.

HTTP/1.1 as hypercorn served it, kept: keep-alive with `keep_alive` seconds to wait for the next
request's head (a head that does not arrive whole within it, the first one included, closes the
connection: slow-header clients cannot hold one open), `max_header` bytes for a head arriving in
pieces (431), malformed requests answered 400 and closed, `Expect: 100-continue`, HEAD, chunked
request bodies, `http.disconnect` when the client goes away or once the answer is complete, 500 for
an app that fails before answering, and on drain: idle connections close at once, busy ones after
their answer (`connection: close`). A request with `Upgrade: websocket` hands the connection to
`runtime.h1_ws` (the ASGI websocket scope).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, MutableMapping
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import h11
import trio

from sidegate.runtime.errors import BadRequest, from_exception, openai_body
from sidegate.runtime.h1_ws import serve_websocket, wants_websocket
from sidegate.runtime.netio import LeanStream

__all__ = ["Front"]

_RECV = 65536
_PIPELINE_BUFFER = 65536
"""Bytes of a next (pipelined) request read while watching for a disconnect, at most."""
_NO_BODY_STATUS = frozenset({204, 304})
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
App = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]
ClientStream = trio.SocketStream | LeanStream


class _Date:
    """The `date` header value, formatted once a second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.value = formatdate(second, usegmt=True).encode()
        return self.value


class Front:
    """Serves client connections (one `serve` call each) for one ASGI app."""

    def __init__(self, app: App, *, keep_alive: float, max_header: int, state: dict[str, Any] | None = None,
                 warn: Callable[..., None] | None = None, max_message: int = 16 << 20) -> None:
        self.app = app
        self.max_message = max_message
        """Bytes of one WebSocket message, at most (`runtime.h1_ws`)."""
        self.warn = warn
        self.keep_alive = keep_alive
        self.max_header = max_header
        self.state = state if state is not None else {}
        self.draining = False
        self._idle: set[trio.CancelScope] = set()
        self._date = _Date()

    def drain(self) -> None:
        """Stop taking requests: idle connections close now, busy ones after their answer."""
        self.draining = True
        for scope in list(self._idle):
            scope.cancel()

    async def serve(self, stream: ClientStream) -> None:
        """Serve one connection until it closes, times out idle, or the front drains."""
        with contextlib.suppress(*_BROKEN):
            await _Connection(self, stream).run()


def _address(sockaddr: Any) -> tuple[str, int] | None:
    return (str(sockaddr[0]), int(sockaddr[1])) if isinstance(sockaddr, tuple) and len(sockaddr) >= 2 else None


class _Connection:
    """One client connection: reads requests, runs the app for each, writes its answers."""

    def __init__(self, front: Front, stream: ClientStream) -> None:
        self.front = front
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=front.max_header)
        self.client = _address(stream.socket.getpeername())
        self.server = _address(stream.socket.getsockname())
        self.gone = False
        """The client went away (a read saw EOF or a write failed)."""

    async def run(self) -> None:
        while not self.front.draining:
            request = await self._next_request()
            if request is None:
                return
            if wants_websocket(request):  # the connection becomes a WebSocket (runtime.h1_ws) and ends with it
                await serve_websocket(self.front.app, self.stream, self.h11, request, client=self.client,
                                      server=self.server, state=self.front.state, date=self.front._date.now(),
                                      max_message=self.front.max_message, warn=self.front.warn)
                await self.linger()  # after a refusal (an accepted WebSocket closed its stream already)
                return
            exchange = _Exchange(self, request)
            await exchange.run()
            if exchange.complete and not self.gone and self.h11.their_state is h11.SEND_BODY:
                await exchange.skip_body()  # answered without reading it all (a 413, a refusal)
            if self.gone or not exchange.complete or self.h11.our_state is not h11.DONE \
                    or self.h11.their_state is not h11.DONE:
                await self.linger()  # an unfinished answer, an unread body, or `connection: close`
                return
            self.h11.start_next_cycle()

    async def linger(self) -> None:
        """Before closing: end our side and read what the client still sends (briefly, boundedly), so
        unread bytes do not make the kernel reset the connection and lose the answer just written."""
        if self.gone:
            return
        with trio.move_on_after(1.0):
            try:
                await self.stream.send_eof()
                left = 1 << 20
                while left > 0:
                    data = await self.stream.receive_some(_RECV)
                    if not data:
                        return
                    left -= len(data)
            except _BROKEN:
                pass

    async def _next_request(self) -> h11.Request | None:
        """The next request's head, or None when the connection should close."""
        scope = trio.CancelScope(deadline=trio.current_time() + self.front.keep_alive)
        self.front._idle.add(scope)
        try:
            with scope:
                while True:
                    try:
                        event = self.h11.next_event()
                    except h11.RemoteProtocolError as exc:
                        await self._refuse(exc.error_status_hint, str(exc))
                        await self.linger()
                        return None
                    if type(event) is h11.Request:
                        return event
                    if event is h11.NEED_DATA:
                        data = await self.stream.receive_some(_RECV)
                        if not data:
                            return None
                        self.h11.receive_data(bytes(data))
                        self.front._idle.discard(scope)  # bytes of a request arrived: a drain waits for it
                    else:
                        return None  # ConnectionClosed, PAUSED
        finally:
            self.front._idle.discard(scope)
        return None

    async def _refuse(self, status: int, message: str) -> None:
        """Answer a request h11 could not parse, then close."""
        body = openai_body(BadRequest(message[:200], status=status, code="bad_http_request"))
        try:
            data = self.h11.send(h11.Response(status_code=status, headers=[
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"), (b"date", self.front._date.now())]))
            data += self.h11.send(h11.Data(data=body)) or b""
            data += self.h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return
        await self.stream.send_all(data)

    async def read(self) -> bytes:
        """The next bytes from the client; b"" (and the client noted gone) at EOF or a reset."""
        try:
            data = bytes(await self.stream.receive_some(_RECV))
        except _BROKEN:
            data = b""
        if not data:
            self.gone = True
        return data

    async def write(self, data: bytes) -> None:
        """Write `data` whole, or note the client gone.

        Not shielded (a shield costs a scope per write on the hot path): a task already cancelled
        writes nothing (the checkpoint raises before any byte); one cancelled while a large write
        waits for the socket leaves the framing unknown, so the connection writes nothing more and
        closes. A cancelled stream can therefore still end with its error event when nothing of a
        write had gone out."""
        if self.gone:
            return
        if trio.current_effective_deadline() <= trio.current_time():
            await trio.lowlevel.checkpoint()  # raises Cancelled: nothing was written
        try:
            await self.stream.send_all(data)
        except _BROKEN:
            self.gone = True
        except BaseException:
            self.gone = True
            raise


class _Exchange:
    """One request and its answer: the ASGI scope, `receive` and `send`."""

    __slots__ = ("body_done", "chunked", "complete", "conn", "head", "request", "started", "status", "watch")

    def __init__(self, conn: _Connection, request: h11.Request) -> None:
        self.conn = conn
        self.request = request
        self.body_done = False
        self.head: list[tuple[bytes, bytes]] | None = None
        """A start message not yet written (it goes out with the first body bytes)."""
        self.status = 0
        self.started = False
        self.complete = False
        self.chunked = False
        """The answer is framed in chunks (then body chunks are framed here, not by h11: same bytes)."""
        self.watch: trio.CancelScope | None = None
        """The scope of a `receive` waiting for a disconnect; cancelled once the answer is complete."""

    def scope(self) -> dict[str, Any]:
        request, conn = self.request, self.conn
        path, _, query = request.target.partition(b"?")
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version.decode("ascii"), "method": request.method.decode("ascii"),
            "scheme": "http", "path": unquote(path.decode("ascii")), "raw_path": path, "query_string": query,
            "root_path": "", "headers": list(request.headers), "client": conn.client, "server": conn.server,
            "state": conn.front.state.copy(),
        }

    async def run(self) -> None:
        try:
            await self.conn.front.app(self.scope(), self.receive, self.send)
        except Exception as exc:  # the app's own boundary answers every error; this is a bug, logged
            if self.conn.front.warn is not None:
                self.conn.front.warn("http_app_error", error=f"{type(exc).__name__}: {exc}"[:300])
        if self.conn.h11.our_state is h11.SEND_RESPONSE and not self.conn.gone:
            await self._fail()  # the app failed, or returned, before a byte of its answer went out

    async def _fail(self) -> None:
        body = openai_body(from_exception(RuntimeError()))  # the envelope of any unexpected failure
        self.head, self.started, self.complete = None, False, False
        await self.send({"type": "http.response.start", "status": 500, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def receive(self) -> dict[str, Any]:
        if not self.body_done:
            return await self._body()
        return await self._disconnect()

    async def _body(self) -> dict[str, Any]:
        machine = self.conn.h11
        if machine.they_are_waiting_for_100_continue:
            await self.conn.write(machine.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        parts: list[bytes] = []
        while True:
            try:
                event = machine.next_event()
            except h11.RemoteProtocolError:
                self.conn.gone = True
                return {"type": "http.disconnect"}
            if type(event) is h11.Data:
                parts.append(bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                self.body_done = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            elif event is h11.NEED_DATA:
                if parts:
                    return {"type": "http.request", "body": b"".join(parts), "more_body": True}
                data = await self.conn.read()
                if not data:
                    return {"type": "http.disconnect"}
                machine.receive_data(data)
            else:
                self.conn.gone = True
                return {"type": "http.disconnect"}

    async def skip_body(self) -> None:
        """Read and drop the rest of a body the app did not read (at most 1 MiB, within 1 s), so the
        connection can carry the next request; past the bounds it closes."""
        left = 1 << 20
        with trio.move_on_after(1.0):
            while not self.body_done and left > 0:
                message = await self._body()
                if message["type"] == "http.disconnect":
                    return
                left -= len(message["body"])

    async def _disconnect(self) -> dict[str, Any]:
        """Wait until the client goes away or the answer is complete; either is `http.disconnect`."""
        conn = self.conn
        while not (self.complete or conn.gone):
            if len(conn.h11.trailing_data[0]) >= _PIPELINE_BUFFER:
                await trio.sleep_forever()  # a pipelining client: its next request waits unread
            self.watch = trio.CancelScope()
            with self.watch:
                data = await conn.read()
                if data:
                    conn.h11.receive_data(data)  # the next request's bytes, kept for it
            self.watch = None
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = int(message["status"])
            headers = list(message.get("headers", ()))
            front = self.conn.front
            headers.append((b"date", front._date.now()))
            if front.draining:
                headers.append((b"connection", b"close"))
            self.head = headers
            if not (message.get("sidegate.body_follows") or any(k.lower() == b"content-length" for k, _ in headers)):
                await self._flush(b"", True)
        elif kind == "http.response.body":
            if not self.started or self.complete:
                return
            await self._flush(message.get("body", b""), bool(message.get("more_body", False)))

    async def _flush(self, body: bytes, more: bool) -> None:
        machine = self.conn.h11
        out = b""
        if self.head is not None:
            out = machine.send(h11.Response(status_code=self.status, headers=self.head)) or b""
            self.head = None
            self.chunked = b"\r\nTransfer-Encoding: chunked\r\n" in out
        if body and self.request.method != b"HEAD" and self.status not in _NO_BODY_STATUS:
            if self.chunked:
                out += b"%x\r\n%b\r\n" % (len(body), body)
            else:
                out += machine.send(h11.Data(data=body)) or b""
        if not more:
            out += machine.send(h11.EndOfMessage()) or b""
            self.complete = True
        if out:
            await self.conn.write(out)
        if (self.complete or self.conn.gone) and self.watch is not None:
            self.watch.cancel()
