"""A lean upstream HTTP/1.1 client for the hot path: a keep-alive pool of Trio socket streams
(TLS where the URL says https) driven by h11.

Measured on this machine, httpx's pool added about 1.0 ms per request and lost a third of its
throughput from concurrency 1 to 50; this pool keeps one idle list per origin, writes each request
in one send, and never copies body bytes it does not have to. It implements the same
:class:`runtime.upstream.transport.Transport` seam as the httpx transport.
"""

from __future__ import annotations

import functools
import ipaddress
import select
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import h11
import httpx
import trio

from sidegate.runtime.errors import UpstreamError, describe
from sidegate.runtime.upstream.chunked import ChunkedDecoder, MalformedChunks
from sidegate.runtime.upstream.transport import UpstreamRequest, UpstreamResponse, UpstreamStream, read_bounded

__all__ = ["H11Transport"]

_RECV = 65536
_Origin = tuple[str, str, int]


class _Conn:
    """One upstream connection and its h11 state machine."""

    __slots__ = ("h11", "reused", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.reused = False

    async def next_event(self) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.receive_some(_RECV)
            self.h11.receive_data(bytes(data))


def _broken(exc: BaseException) -> UpstreamError:
    return UpstreamError(f"upstream connection broke ({describe(exc)})", code="upstream_connection_broken")


_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


def _stale(conn: _Conn) -> bool:
    """Whether an idle pooled connection has something to read: the upstream closed it (EOF or
    reset) or sent bytes nobody asked for. Either way it must not carry a request. Non-blocking."""
    stream: object = conn.stream
    sock = getattr(stream, "socket", None) or getattr(getattr(stream, "transport_stream", None), "socket", None)
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _literal_family(host: str) -> int | None:
    """The address family of an IP-literal host (None for a name, which needs resolving)."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


async def _connect_literal(family: int, host: str, port: int) -> trio.SocketStream:
    """A TCP connection to an IP address: one socket and its connect. `trio.open_tcp_stream` also
    resolves the name and races the addresses it gets (happy eyeballs) in a nursery of its own,
    which for a single literal address is a task, two scopes and a thread-free lookup for nothing:
    a fifth of a paced stream's set-up when each stream opens its own upstream connection."""
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)  # sets TCP_NODELAY, as open_tcp_stream's streams have


class _Response:
    """An open upstream response: status, headers, and the body as it arrives."""

    def __init__(self, conn: _Conn, response: h11.Response, max_answer: int) -> None:
        self._conn = conn
        self.max_answer = max_answer
        self.status = response.status_code
        self.headers = httpx.Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers])
        self.finished = False
        self.chunked = self.status not in (204, 304) and any(
            k == b"transfer-encoding" and b"chunked" in v.lower() for k, v in response.headers)
        """The body is chunked: decoded by :class:`ChunkedDecoder`, not event by event through h11."""
        self._clean_end = False
        """A chunked body ended cleanly on a keep-alive connection (nothing after its end)."""
        self._keep_alive = response.http_version == b"1.1" and not any(
            k == b"connection" and b"close" in v.lower() for k, v in response.headers)

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives: what each socket read brought in, as one piece (a streaming
        upstream writes each SSE event as its own chunk; under load many arrive together), so the
        relay handles, and the client receives, what is already here in one go."""
        return self._chunks() if self.chunked else self._h11_body()

    async def _chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        decoder = ChunkedDecoder()
        pending, _ = conn.h11.trailing_data  # what arrived with the head
        try:
            data = decoder.feed(pending) if pending else b""
            while True:
                if data:
                    yield data
                if decoder.done:
                    self.finished = True
                    self._clean_end = self._keep_alive and not decoder.extra
                    return
                received = await conn.stream.receive_some(_RECV)
                if not received:
                    raise UpstreamError("upstream connection broke (it closed the connection mid-answer)",
                                        code="upstream_connection_broken")
                data = decoder.feed(bytes(received))
        except MalformedChunks as exc:
            raise UpstreamError(f"upstream sent a malformed chunked body ({exc})",
                                code="upstream_connection_broken") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _broken(exc) from None

    async def _h11_body(self) -> AsyncIterator[bytes]:
        """A body with a length (or to the connection's end), through h11: one piece a read."""
        conn = self._conn
        try:
            while True:
                event = await conn.next_event()
                if type(event) is h11.Data:
                    yield bytes(event.data)
                elif type(event) is h11.EndOfMessage:
                    self.finished = True
                    return
                elif event is h11.PAUSED or type(event) is h11.ConnectionClosed:
                    raise UpstreamError("upstream closed the connection mid-answer")
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError) as exc:
            raise _broken(exc) from None

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry the next request: the body was read to its clean end on
        a keep-alive connection (nothing after a chunked body's end; h11's states say it otherwise)."""
        h = self._conn.h11
        if self.chunked:
            return self._clean_end and h.our_state is h11.DONE
        return self.finished and h.our_state is h11.DONE and h.their_state is h11.DONE

    async def read(self) -> bytes:
        return await read_bounded(self.iter_bytes(), self.max_answer)


class H11Transport:
    """Pooled HTTP/1.1 keep-alive connections per origin."""

    def __init__(self, *, max_idle_per_origin: int = 256) -> None:
        self._idle: dict[_Origin, list[_Conn]] = {}
        self._max_idle = max_idle_per_origin
        self._ssl: ssl.SSLContext | None = None

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, origin: _Origin, connect_timeout: float) -> _Conn:
        scheme, host, port = origin
        stream: trio.abc.Stream | None = None
        try:
            with trio.move_on_after(connect_timeout):  # a plain scope: `fail_after` adds a generator
                family = _literal_family(host)
                stream = (await trio.open_tcp_stream(host, port) if family is None
                          else await _connect_literal(family, host, port))
                if scheme == "https":
                    tls = trio.SSLStream(stream, self._tls(), server_hostname=host, https_compatible=True)
                    await tls.do_handshake()
                    stream = tls
                return _Conn(stream)
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            raise UpstreamError(f"could not connect to the upstream {host}:{port} ({describe(exc)})",
                                code="upstream_connect_error") from None
        if stream is not None:  # connected, but the TLS handshake did not finish in time
            await trio.aclose_forcefully(stream)
        raise UpstreamError(f"timed out connecting to the upstream {host}:{port} after {connect_timeout:g}s",
                            code="upstream_connect_error")

    async def _checkout(self, origin: _Origin) -> _Conn | None:
        """An idle pooled connection that is provably usable (never one the upstream closed)."""
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.h11.our_state is h11.IDLE and conn.h11.their_state is h11.IDLE and not _stale(conn):
                conn.reused = True
                return conn
            await trio.aclose_forcefully(conn.stream)
        return None

    async def _checkin(self, origin: _Origin, conn: _Conn, fresh: bool = False) -> None:
        """Pool `conn` for the next request: its h11 state starts the next cycle, or is replaced when
        h11 parsed only the last answer's head (`fresh`: the chunked body was decoded apart)."""
        if fresh:
            conn.h11 = h11.Connection(h11.CLIENT)
        else:
            try:
                conn.h11.start_next_cycle()
            except h11.LocalProtocolError:
                await trio.aclose_forcefully(conn.stream)
                return
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self._max_idle:
            idle.append(conn)
        else:
            await trio.aclose_forcefully(conn.stream)

    @staticmethod
    @functools.lru_cache(maxsize=512)
    def _origin(url: str) -> tuple[_Origin, str, str]:
        """(origin, host header, request target) of `url` (cached: a deployment's URL repeats)."""
        parts = urlsplit(url)
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return (scheme, parts.hostname or "", port), parts.netloc, target

    async def _open(self, request: UpstreamRequest) -> tuple[_Origin, _Conn, _Response]:
        origin, netloc, target = self._origin(request.url)
        headers = [("host", netloc), *request.headers]
        if request.method != "GET":
            headers.append(("content-length", str(len(request.body))))
        # A request goes out once. It is re-sent on a new connection only when it provably did not
        # reach the upstream: the pooled connection was seen closed before anything was written
        # (checked in `_checkout`), or, for idempotent methods only, a reused connection closed
        # before any byte of the answer came back. A POST that may have been processed is never
        # replayed here; the router's retry policy decides, and counts it.
        for retry in (False, True):
            conn = await self._checkout(origin) if not retry else None
            if conn is None:
                conn = await self._connect(origin, request.connect_timeout)
            answered = False
            try:
                data = conn.h11.send(h11.Request(method=request.method, target=target, headers=headers))
                if request.method != "GET":
                    data += conn.h11.send(h11.Data(data=request.body)) or b""
                data += conn.h11.send(h11.EndOfMessage()) or b""
                await conn.stream.send_all(data or b"")
                event = await conn.next_event()
                answered = type(event) in (h11.Response, h11.InformationalResponse)
                while type(event) is h11.InformationalResponse:
                    event = await conn.next_event()
                if type(event) is not h11.Response:
                    raise UpstreamError("upstream closed the connection before answering",
                                        code="upstream_connection_broken")
                return origin, conn, _Response(conn, event, request.max_answer)
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError, UpstreamError) as exc:
                await trio.aclose_forcefully(conn.stream)
                if retry or not conn.reused or answered or request.method not in _IDEMPOTENT:
                    raise (exc if isinstance(exc, UpstreamError) else _broken(exc)) from None
            except BaseException:
                # cancelled (an attempt deadline, the client left): the connection is closed, not leaked
                await trio.aclose_forcefully(conn.stream)
                raise
        raise AssertionError("unreachable")

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send and read the whole response."""
        async with self.stream(request) as response:
            body = await response.read()
        return UpstreamResponse(response.status, response.headers, body)

    @asynccontextmanager
    async def stream(self, request: UpstreamRequest) -> AsyncIterator[UpstreamStream]:
        """Send and yield the open response; its connection goes back to the pool when it was read
        to the end, and is closed otherwise (including on cancellation)."""
        origin, conn, response = await self._open(request)
        try:
            yield response
        finally:
            if response.reusable:
                await self._checkin(origin, conn, fresh=response.chunked)
            else:
                await trio.aclose_forcefully(conn.stream)

    async def aclose(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for conn in idle:
                await trio.aclose_forcefully(conn.stream)
        self._idle.clear()
