"""WebSocket messages over a trio stream (wsproto, sans-IO): what the front's server side
(`runtime.h1_ws`) and the realtime upstream's client side (`runtime.upstream.realtime_ws`) share.

A `Socket` reads whole messages (fragments joined, at most `max_message` bytes: a longer one closes
the connection with 1009), answers pings, and writes messages and the close handshake under one lock
(the relay's two directions write from two tasks). Nothing is buffered beyond the message being
read: each message is handed on as soon as it is whole.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Message, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

__all__ = ["BROKEN", "Closed", "Socket"]

BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_RECV = 65536
TOO_BIG = 1009
ABNORMAL = 1006


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer closed (or the connection broke: code 1006)."""

    code: int
    reason: str = ""


class Socket:
    """One open WebSocket connection (either side) on `stream`."""

    def __init__(self, stream: trio.abc.Stream, *, client: bool, trailing: bytes = b"",
                 max_message: int = 16 << 20) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER, trailing_data=trailing)
        self.max_message = max_message
        self.closed: Closed | None = None
        """Set once the connection is over (either side closed it, or it broke)."""
        self._lock = trio.Lock()

    @property
    def open(self) -> bool:
        return self.closed is None and self.ws.state is ConnectionState.OPEN

    async def receive(self) -> str | bytes | Closed:
        """The next whole message, or `Closed` once the connection is over."""
        parts: list[str | bytes] = []
        size = 0
        while True:
            for event in self.ws.events():
                if isinstance(event, Message):
                    size += len(event.data)
                    if size > self.max_message:
                        await self.close(TOO_BIG, f"message over {self.max_message} bytes")
                        self.closed = Closed(TOO_BIG, "message too big")
                        return self.closed
                    parts.append(event.data)
                    if event.message_finished:
                        if isinstance(event, TextMessage):
                            return "".join(p for p in parts if isinstance(p, str))
                        return b"".join(p for p in parts if isinstance(p, (bytes, bytearray)))
                elif isinstance(event, Ping):
                    await self._write(event.response())
                elif isinstance(event, CloseConnection):
                    if self.ws.state is ConnectionState.REMOTE_CLOSING:
                        await self._write(event.response())  # the close handshake's answer
                    self.closed = self.closed or Closed(event.code, event.reason or "")
                    return self.closed
            if self.closed is not None:
                return self.closed
            try:
                data = await self.stream.receive_some(_RECV)
            except BROKEN:
                data = b""
            if not data:
                self.closed = Closed(ABNORMAL, "connection lost")
                return self.closed
            try:
                self.ws.receive_data(bytes(data))
            except LocalProtocolError:
                self.closed = Closed(ABNORMAL, "connection lost")
                return self.closed

    async def send(self, data: str | bytes) -> bool:
        """Send one message; False when the connection is no longer open."""
        if not self.open:
            return False
        event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        return await self._write(event)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake (the peer's answer is read by `receive` or `finish`)."""
        if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            await self._write(CloseConnection(code=code, reason=reason[:120]))

    async def finish(self, wait: float = 1.0) -> None:
        """After `close`: wait briefly (`wait` seconds) for the peer's closing frame, then close the stream."""
        with trio.move_on_after(wait):
            while self.ws.state is ConnectionState.LOCAL_CLOSING and self.closed is None:
                await self.receive()
        with trio.move_on_after(wait), contextlib.suppress(*BROKEN):
            await self.stream.aclose()

    async def _write(self, event: Event) -> bool:
        async with self._lock:
            try:
                data = self.ws.send(event)
            except LocalProtocolError:
                return False
            try:
                await self.stream.send_all(data)
            except BROKEN:
                self.closed = self.closed or Closed(ABNORMAL, "connection lost")
                return False
            except BaseException:  # cancelled mid-write: the framing is unknown, nothing more goes out
                self.closed = self.closed or Closed(ABNORMAL, "write cancelled")
                raise
        return True
