"""A TCP stream for the hot paths (client connections, plain-TCP upstream connections): trio's
`SocketStream` interface with the per-call framework cost taken out.

Measured on paced streams (each upstream event arriving alone, so each is one read and one write),
`trio.SocketStream` cost three trips through the scheduler per relayed event: a read that found
data still ended in a `cancel_shielded_checkpoint`, so did every write, and after each event a
second read that the kernel answered EAGAIN before the task parked in `wait_readable`. Here:

- `receive_some` reads at once while the last read filled its buffer (more may be queued); after a
  short read (the kernel's buffer was empty) it parks in `wait_readable` first, without the read
  that would fail. Only a read that finds data at once yields nothing, so at most `_TURNS` of those
  in a row are allowed before one full checkpoint: a task fed faster than it relays still lets
  the others run.
- `send_all` writes at once and parks only when the socket's buffer is full.
- Both are cancellation points (`checkpoint_if_cancelled`): a cancelled task reads or writes nothing.

The rest is `SocketStream`'s behaviour: TCP_NODELAY and TCP_NOTSENT_LOWAT set, OS errors raised as
`BrokenResourceError`, a closed socket as `ClosedResourceError`, `send_eof` idempotent, the trio
socket at `.socket` (addresses, `getsockopt`), and concurrent use of one direction refused
(`BusyResourceError`: from `wait_readable`/`wait_writable` when two tasks park on it, and from
`send_eof` during a parked `send_all` or `wait_send_all_might_not_block`).
"""

from __future__ import annotations

import contextlib
import errno
import socket as stdlib_socket

import trio

__all__ = ["LeanStream", "close_now", "lean_stream"]

_RECV = 65536
_TURNS = 16
"""Reads that found data at once, in a row, before one full checkpoint (fairness)."""
_TCP_OPTIONS = ((stdlib_socket.TCP_NODELAY, 1),
                *(((stdlib_socket.TCP_NOTSENT_LOWAT, 1 << 14),) if hasattr(stdlib_socket, "TCP_NOTSENT_LOWAT") else ()))
"""As `trio.SocketStream` sets them: no Nagle delay; at most 16 KiB unsent in the kernel's buffer."""
_CLOSED = frozenset({errno.EBADF, errno.ENOTSOCK})
checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
wait_readable = trio.lowlevel.wait_readable
wait_writable = trio.lowlevel.wait_writable


def _error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    if exc.errno in _CLOSED:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class LeanStream(trio.abc.HalfCloseableStream):
    """A connected stdlib TCP socket as a trio stream (see the module's text)."""

    __slots__ = ("_ready", "_sending", "_turns", "raw", "socket")

    def __init__(self, raw: stdlib_socket.socket, wrapped: trio.socket.SocketType | None = None) -> None:
        raw.setblocking(False)
        self.raw = raw
        self.socket = trio.socket.from_stdlib_socket(raw) if wrapped is None else wrapped
        """The trio socket over `raw` (the same descriptor): addresses, options, closing."""
        self._ready = True
        """The last read filled its buffer: more may wait in the kernel (or nothing was read yet)."""
        self._turns = _TURNS
        self._sending = False
        if raw.family in (stdlib_socket.AF_INET, stdlib_socket.AF_INET6):
            for option, value in _TCP_OPTIONS:
                with contextlib.suppress(OSError):
                    raw.setsockopt(stdlib_socket.IPPROTO_TCP, option, value)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = _RECV if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        raw = self.raw
        if raw.fileno() == -1:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("this socket was already closed")
        parked = not self._ready  # the last read emptied the kernel's buffer: wait for data first
        if parked or self._turns <= 0:
            self._turns = _TURNS
            if not parked:
                await trio.lowlevel.checkpoint()
        else:
            await checkpoint_if_cancelled()
            self._turns -= 1
        while True:
            try:
                if parked:
                    await wait_readable(raw)
                data = raw.recv(size)
            except BlockingIOError:
                parked = True
                continue
            except OSError as exc:
                raise _error(exc) from exc
            self._ready = len(data) == size
            return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.socket.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        raw = self.raw
        if raw.fileno() == -1:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("this socket was already closed")
        await checkpoint_if_cancelled()
        if not data:
            return
        try:
            try:
                sent = raw.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            self._sending = True  # (only while parked: a write that never parks cannot overlap another)
            try:
                with memoryview(data) as view:
                    while sent < len(view):
                        await wait_writable(raw)
                        with contextlib.suppress(BlockingIOError):
                            sent += raw.send(view[sent:])
            finally:
                self._sending = False
        except OSError as exc:
            raise _error(exc) from exc

    async def wait_send_all_might_not_block(self) -> None:
        if self.raw.fileno() == -1:
            raise trio.ClosedResourceError
        self._sending = True
        try:
            await wait_writable(self.raw)
        except OSError as exc:
            raise _error(exc) from exc
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await trio.lowlevel.checkpoint()
        if self.socket.did_shutdown_SHUT_WR:
            return
        try:
            self.socket.shutdown(stdlib_socket.SHUT_WR)
        except OSError as exc:
            raise _error(exc) from exc

    async def aclose(self) -> None:
        self.socket.close()  # (trio's close tells any task parked on the descriptor first)
        await trio.lowlevel.checkpoint()


async def lean_stream(family: int, address: tuple[str, int]) -> LeanStream:
    """A new TCP connection to an IP `address` (connected with trio's non-blocking connect)."""
    raw = stdlib_socket.socket(family, stdlib_socket.SOCK_STREAM)
    wrapped = trio.socket.from_stdlib_socket(raw)
    try:
        await wrapped.connect(address)
    except BaseException:
        wrapped.close()
        raise
    return LeanStream(raw, wrapped)


async def close_now(stream: trio.abc.AsyncResource) -> None:
    """`trio.aclose_forcefully(stream)`; a LeanStream is closed at once, without it: that cancels a
    scope so the stream's `aclose` checkpoint raises `Cancelled` and the scope catches it again, an
    exception's round trip for each of a stream's two connections."""
    if type(stream) is LeanStream:
        stream.socket.close()
    else:
        await trio.aclose_forcefully(stream)
