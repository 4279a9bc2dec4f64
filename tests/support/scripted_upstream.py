"""A scripted raw HTTP/1.1 upstream for the pool's wire tests: each request read off the socket
gets the next scripted answer, written as told; and `served`, a pool in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio
import trio.lowlevel

from sidegate.runtime.upstream.h11pool import H11Transport
from sidegate.runtime.upstream.transport import UpstreamRequest


@dataclass
class Upstream:
    """Each request gets the next scripted answer: (bytes, how) with how "" (one write), "tiny"
    (a byte a write), or "close" (then the connection is closed)."""

    answers: list[tuple[bytes, str]]
    seen: list[tuple[int, bytes]] = field(default_factory=list)
    """(connection number from 1, the request's head) of each request."""
    port: int = 0
    connections: int = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        me, buf = self.connections, b""
        while self.answers:
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
            while len(buf) < sum(lengths):
                buf += await stream.receive_some(65536)
            buf = buf[sum(lengths):]
            self.seen.append((me, head))
            answer, how = self.answers.pop(0)
            if how == "tiny":
                for i in range(len(answer)):
                    await stream.send_all(answer[i:i + 1])
                    await trio.lowlevel.checkpoint()
            else:
                await stream.send_all(answer)
            if how == "close":
                await stream.aclose()
                return

    def request(self, method: str = "POST", path: str = "/v1/chat/completions",
                headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),),
                max_answer: int = 1 << 20) -> UpstreamRequest:
        return UpstreamRequest(method, f"http://127.0.0.1:{self.port}{path}", headers,
                               b"{}" if method == "POST" else b"", 5.0, max_answer)

    @property
    def on(self) -> list[int]:
        """The connection each request came on."""
        return [c for c, _ in self.seen]


@asynccontextmanager
async def served(up: Upstream) -> AsyncIterator[H11Transport]:
    """`up` listening on 127.0.0.1 (its port set) and a fresh pool; both closed after."""
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        up.port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(partial(trio.serve_listeners, up.handle, listeners))
        t = H11Transport()
        try:
            yield t
        finally:
            await t.aclose()
            nursery.cancel_scope.cancel()
