"""The HTTP/1.1 front end (runtime.h1) on raw sockets: keep-alive and pipelining, a whole answer in
one write, 100-continue, HEAD, an unread body skipped so the connection carries the next request,
malformed and oversized heads refused, idle and slow-header connections closed after `keep_alive`,
an app failing before its answer gets 500, `http.disconnect` when the client leaves mid-stream, and a
drain closing idle connections at once while a busy one finishes its answer with `connection: close`."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from sidegate.runtime.h1 import Front

Events = list[str]


def _app(events: Events, gate: trio.Event | None = None, reached: trio.Event | None = None) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/fail":
            raise RuntimeError("boom")
        if path == "/nothing":
            return
        if path == "/echo":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            out = b"%s %s %s" % (scope["method"].encode(), scope["path"].encode(), body)
        elif path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
            assert (await receive())["type"] == "http.request"  # the (empty) body, then
            events.append((await receive())["type"])  # the disconnect
            return
        elif path == "/slow":
            assert gate is not None and reached is not None
            reached.set()
            await gate.wait()
            out = b"slow"
        else:
            out = b"ok " + scope["query_string"]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out, "more_body": False})
        events.append(path)

    return app


@asynccontextmanager
async def _front(app: Any, keep_alive: float = 5.0, max_header: int = 8192) -> AsyncIterator[tuple[Front, int]]:
    front = Front(app, keep_alive=keep_alive, max_header=max_header)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, front.serve, 0, host="127.0.0.1"))
        yield front, listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


class _Client:
    """A raw HTTP/1.1 client: requests are written as bytes (pipelined at will), answers parsed here."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""
        self.reads = 0

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        self.reads += 1
        if not data:
            raise EOFError("closed")
        self.buf += data

    async def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            await self._more()
        out, self.buf = self.buf.split(marker, 1)
        return out

    async def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def answer(self) -> tuple[int, dict[bytes, bytes], bytes]:
        """The next answer: status, headers (names lower-cased), body (content-length or chunked)."""
        head = await self._until(b"\r\n\r\n")
        while head.startswith(b"HTTP/1.1 1"):  # informational
            head = await self._until(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines[1:])}
        if b"content-length" in headers:
            return status, headers, await self._take(int(headers[b"content-length"]))
        body = b""
        while (size := int(await self._until(b"\r\n"), 16)) > 0:
            body += await self._take(size)
            await self._take(2)
        await self._take(2)
        return status, headers, body

    async def closed(self) -> bool:
        """Whether the server closed the connection (EOF), reading whatever else comes first."""
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                return True


async def _connect(port: int) -> _Client:
    return _Client(await trio.open_tcp_stream("127.0.0.1", port))


async def test_keep_alive_pipelining_and_a_whole_answer_in_one_write() -> None:
    events: Events = []
    with trio.fail_after(10):
        async with _front(_app(events)) as (_, port):
            c = await _connect(port)
            # three requests in one write: answered in order on one connection
            await c.stream.send_all(b"GET /a?x=1 HTTP/1.1\r\nhost: h\r\n\r\n"
                                    b"POST /echo HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nhello"
                                    b"GET /b HTTP/1.1\r\nhost: h\r\n\r\n")
            first = await c.answer()
            second = await c.answer()
            third = await c.answer()
            single = await _connect(port)
            await single.stream.send_all(b"GET /one HTTP/1.1\r\nhost: h\r\n\r\n")
            whole = await single.answer()
    assert first[0] == 200 and first[2] == b"ok x=1" and b"date" in first[1]
    assert second[2] == b"POST /echo hello" and third[2] == b"ok "
    assert whole[2] == b"ok " and single.reads == 1, "head, body and end arrived in one read"


async def test_chunked_bodies_100_continue_head_and_an_unread_body() -> None:
    with trio.fail_after(10):
        async with _front(_app([])) as (_, port):
            c = await _connect(port)
            await c.stream.send_all(b"POST /echo HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
                                    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            chunked = await c.answer()
            await c.stream.send_all(b"POST /echo HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n")
            got = await c._until(b"\r\n\r\n")
            await c.stream.send_all(b"ok")
            continued = await c.answer()
            await c.stream.send_all(b"HEAD /h HTTP/1.1\r\nhost: h\r\n\r\n")
            head = await c.stream.receive_some(65536)
            # the app answers without reading the body: it is skipped, and the connection goes on
            await c.stream.send_all(b"POST /unread HTTP/1.1\r\nhost: h\r\ncontent-length: 10\r\n\r\n0123456789"
                                    b"GET /after HTTP/1.1\r\nhost: h\r\n\r\n")
            unread, after = await c.answer(), await c.answer()
    assert chunked[2] == b"POST /echo abcde"
    assert got.startswith(b"HTTP/1.1 100 ") and continued[2] == b"POST /echo ok"
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 3\r\n" in head and head.endswith(b"\r\n\r\n")
    assert unread[2] == b"ok " and after[0] == 200


async def test_malformed_and_oversized_heads_are_refused_and_closed() -> None:
    with trio.fail_after(10):
        async with _front(_app([]), max_header=1024) as (_, port):
            bad = await _connect(port)
            await bad.stream.send_all(b"GET / HTTP/1.1\r\nbad header\r\n\r\n")
            refused = await bad.stream.receive_some(65536)
            big = await _connect(port)
            await big.stream.send_all(b"GET / HTTP/1.1\r\nhost: h\r\nx-big: " + b"a" * 4000)
            too_big = await big.stream.receive_some(65536)
            closed = await bad.closed() and await big.closed()
    assert refused.startswith(b"HTTP/1.1 400 ") and b"bad_http_request" in refused
    assert too_big.startswith(b"HTTP/1.1 431 ")
    assert closed


async def test_idle_and_slow_header_connections_close_after_keep_alive() -> None:
    with trio.fail_after(10):
        async with _front(_app([]), keep_alive=0.3) as (_, port):
            idle = await _connect(port)
            slow = await _connect(port)
            await slow.stream.send_all(b"GET / HTTP/1.1\r\nhost: h\r\n")  # the head never completes
            t0 = trio.current_time()
            assert await idle.closed() and await slow.closed()
            waited = trio.current_time() - t0
            used = await _connect(port)
            await used.stream.send_all(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n")
            await used.answer()
            assert await used.closed(), "the wait for the next request is bounded too"
    assert 0.2 <= waited < 5


async def test_an_app_failing_before_its_answer_gets_500_and_the_connection_closes() -> None:
    with trio.fail_after(10):
        async with _front(_app([])) as (_, port):
            for path in (b"/fail", b"/nothing"):
                c = await _connect(port)
                await c.stream.send_all(b"GET %s HTTP/1.1\r\nhost: h\r\n\r\n" % path)
                status, headers, body = await c.answer()
                assert status == 500 and headers[b"connection"] == b"close" and b"internal error" in body
                assert await c.closed()


async def test_the_app_hears_the_client_leave_mid_stream_by_close_or_reset() -> None:
    for reset in (False, True):
        events: Events = []
        with trio.fail_after(10):
            async with _front(_app(events)) as (_, port):
                c = await _connect(port)
                await c.stream.send_all(b"GET /stream HTTP/1.1\r\nhost: h\r\n\r\n")
                first = await c._until(b"first")
                if reset:  # SO_LINGER 0: the close sends a RST, the server's read fails
                    c.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await c.stream.aclose()
                while not events:
                    await trio.sleep(0.01)
        assert b"200" in first and events == ["http.disconnect"], "a disconnect, never an exception in the app"


async def test_a_drain_closes_idle_connections_and_lets_a_busy_one_finish() -> None:
    gate, reached = trio.Event(), trio.Event()
    with trio.fail_after(10):
        async with _front(_app([], gate, reached)) as (front, port):
            idle = await _connect(port)
            await idle.stream.send_all(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n")
            await idle.answer()
            busy = await _connect(port)
            await busy.stream.send_all(b"GET /slow HTTP/1.1\r\nhost: h\r\n\r\n")
            await reached.wait()  # the busy request is in the app; the idle connection waits for its next
            front.drain()
            assert await idle.closed(), "an idle keep-alive connection closes at once"
            gate.set()
            status, headers, body = await busy.answer()
            assert await busy.closed()
    assert (status, body, headers[b"connection"]) == (200, b"slow", b"close")
