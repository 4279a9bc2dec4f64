"""A lean upstream HTTP/1.1 client for the hot path: a keep-alive pool of Trio socket streams
(TLS where the URL says https); answers are parsed by httptools (`runtime.upstream.http1`).

Measured on this machine, httpx's pool added about 1.0 ms per request and lost a third of its
throughput from concurrency 1 to 50; this pool keeps one idle list per origin, writes each request
in one send, and never copies body bytes it does not have to. It implements the same
:class:`runtime.upstream.transport.Transport` seam as the httpx transport. (It was driven by h11,
hence its name; h11's event machinery cost ~12% of the gateway's CPU on a non-stream chat.)
"""

from __future__ import annotations

import encodings.idna  # noqa: F401 - trio's connect to a host name encodes it with this: at start, not in a first request
import functools
import ipaddress
import select
import socket
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import trio

from sidegate.runtime.errors import UpstreamError, describe
from sidegate.runtime.netio import close_now, lean_stream
from sidegate.runtime.upstream.http1 import Answer, MalformedAnswer, check_target, request_head
from sidegate.runtime.upstream.transport import UpstreamRequest, UpstreamResponse, read_bounded

__all__ = ["H11Transport"]

_RECV = 65536
_Origin = tuple[str, str, int]


class _Conn:
    """One upstream connection (pooled only between answers: no parser state carries over)."""

    __slots__ = ("reused", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.reused = False


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


def _malformed(answer: Answer, exc: MalformedAnswer) -> UpstreamError:
    what = "a malformed chunked body" if answer.chunked else "a malformed answer"
    return UpstreamError(f"upstream sent {what} ({exc})", code="upstream_connection_broken")


def _cut() -> UpstreamError:
    return UpstreamError("upstream connection broke (it closed the connection mid-answer)",
                         code="upstream_connection_broken")


class _Response:
    """An open upstream response: status, headers, and the body as it arrives."""

    __slots__ = ("_answer", "_conn", "chunked", "finished", "headers", "max_answer", "status")

    def __init__(self, conn: _Conn, answer: Answer, max_answer: int) -> None:
        self._conn = conn
        self._answer = answer
        self.max_answer = max_answer
        self.status = answer.status
        self.headers = httpx.Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.headers])
        self.chunked = answer.chunked
        self.finished = False

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives: what each socket read brought in, as one piece (a streaming
        upstream writes each SSE event as its own chunk; under load many arrive together), so the
        relay handles, and the client receives, what is already here in one go."""
        answer, stream = self._answer, self._conn.stream
        try:
            while True:
                data = answer.take()
                if data:
                    yield data
                if answer.done:
                    self.finished = True
                    return
                received = await stream.receive_some(_RECV)
                if not received:
                    if answer.end_of_data():
                        continue
                    raise _cut()
                answer.feed(received)
        except MalformedAnswer as exc:
            raise _malformed(answer, exc) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _broken(exc) from None

    def release(self) -> None:
        """Done with this answer, read or not: its parser is let go (`Answer.feed`)."""
        self._answer.release()

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry the next request: the answer was read to its end on a
        keep-alive connection, and nothing came after that end."""
        answer = self._answer
        return self.finished and answer.keep_alive and not answer.extra

    async def read(self) -> bytes:
        return await read_bounded(self.iter_bytes(), self.max_answer)


class _Opened:
    """`H11Transport.stream`'s context (a class: an asynccontextmanager's generator, its wrapper and
    their frames cost ~0.5 KB more for each open stream)."""

    __slots__ = ("_open", "_pool", "_request")

    def __init__(self, pool: H11Transport, request: UpstreamRequest) -> None:
        self._pool = pool
        self._request = request
        self._open: tuple[_Origin, _Conn, _Response] | None = None

    async def __aenter__(self) -> _Response:
        self._open = await self._pool._open(self._request)
        return self._open[2]

    async def __aexit__(self, *exc: object) -> None:
        if self._open is None:
            return
        (origin, conn, response), self._open = self._open, None
        response.release()
        if response.reusable:
            await self._pool._checkin(origin, conn)
        else:
            await close_now(conn.stream)


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
                # An IP literal: one socket and its connect (`open_tcp_stream` also resolves and races
                # addresses in a nursery of its own: a fifth of a paced stream's set-up), on
                # `runtime.netio`'s stream (one scheduler trip per relayed event, not three).
                stream = (await trio.open_tcp_stream(host, port) if family is None
                          else await lean_stream(family, (host, port)))
                if scheme == "https":
                    tls = trio.SSLStream(stream, self._tls(), server_hostname=host, https_compatible=True)
                    await tls.do_handshake()
                    stream = tls
                return _Conn(stream)
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            if stream is not None:
                await close_now(stream)
            raise UpstreamError(f"could not connect to the upstream {host}:{port} ({describe(exc)})",
                                code="upstream_connect_error") from None
        if stream is not None:  # connected, but the TLS handshake did not finish in time
            await close_now(stream)
        raise UpstreamError(f"timed out connecting to the upstream {host}:{port} after {connect_timeout:g}s",
                            code="upstream_connect_error")

    async def _checkout(self, origin: _Origin) -> _Conn | None:
        """An idle pooled connection that is provably usable (never one the upstream closed)."""
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not _stale(conn):
                conn.reused = True
                return conn
            await close_now(conn.stream)
        return None

    async def _checkin(self, origin: _Origin, conn: _Conn) -> None:
        """Pool `conn` for the next request (its last answer was read to its clean end)."""
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self._max_idle:
            idle.append(conn)
        else:
            await close_now(conn.stream)  # (1,000 streams ending together: 744 of these, 3.7% of the run)

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
        check_target(target)
        return (scheme, parts.hostname or "", port), parts.netloc, target

    async def _open(self, request: UpstreamRequest) -> tuple[_Origin, _Conn, _Response]:
        origin, netloc, target = self._origin(request.url)
        method = request.method
        headers = [("host", netloc), *request.headers]
        if method != "GET":
            headers.append(("content-length", str(len(request.body))))
        data = request_head(method, target, headers)  # refuses a header that could split the head
        if method != "GET":
            data += request.body
        # A request goes out once. It is re-sent on a new connection only when it provably did not
        # reach the upstream: the pooled connection was seen closed before anything was written
        # (checked in `_checkout`), or, for idempotent methods only, a reused connection closed
        # before any byte of the answer came back. A POST that may have been processed is never
        # replayed here; the router's retry policy decides, and counts it.
        for retry in (False, True):
            conn = await self._checkout(origin) if not retry else None
            if conn is None:
                conn = await self._connect(origin, request.connect_timeout)
            answer = Answer(head_only=method == "HEAD")
            stream = conn.stream
            try:
                await stream.send_all(data)
                while not answer.head:
                    received = await stream.receive_some(_RECV)
                    if not received:
                        raise UpstreamError("upstream closed the connection before answering",
                                            code="upstream_connection_broken")
                    answer.feed(received)
                return origin, conn, _Response(conn, answer, request.max_answer)
            except (trio.BrokenResourceError, trio.ClosedResourceError, MalformedAnswer, UpstreamError) as exc:
                answer.release()
                await close_now(stream)
                if retry or not conn.reused or answer.fed or method not in _IDEMPOTENT:
                    raise (exc if isinstance(exc, UpstreamError) else
                           _malformed(answer, exc) if isinstance(exc, MalformedAnswer) else _broken(exc)) from None
            except BaseException:
                # cancelled (an attempt deadline, the client left): the connection is closed, not leaked
                answer.release()
                await close_now(stream)
                raise
        raise AssertionError("unreachable")

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send and read the whole response."""
        async with self.stream(request) as response:
            body = await response.read()
        return UpstreamResponse(response.status, response.headers, body)

    def stream(self, request: UpstreamRequest) -> _Opened:
        """Send and yield the open response; its connection goes back to the pool when it was read
        to the end, and is closed otherwise (including on cancellation)."""
        return _Opened(self, request)

    async def aclose(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for conn in idle:
                await close_now(conn.stream)
        self._idle.clear()
