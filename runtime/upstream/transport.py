"""The upstream transport seam: every upstream HTTP exchange goes through :class:`Transport`.

Kept small so the benchmark can measure and swap the client. Timeouts are explicit: connect and
pool waits come from the provider; reads have no timeout of their own: the caller bounds them with
cancel scopes (the attempt's `first_byte` and `idle` deadlines in `runtime.routing.relay`, inside the
request's single deadline).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import httpx

from sidegate.runtime.errors import UpstreamError, describe

__all__ = ["DEFAULT_MAX_ANSWER", "HttpxTransport", "Transport", "UpstreamRequest", "UpstreamResponse", "UpstreamStream",
           "answer_too_large", "read_bounded"]

DEFAULT_MAX_ANSWER = 64 << 20


def answer_too_large(limit: int) -> UpstreamError:
    """The error of an upstream answer over `limit` bytes."""
    return UpstreamError(f"the upstream's answer is over the {limit:,}-byte limit (server.max_upstream_answer)",
                         code="upstream_answer_too_large")


async def read_bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """All of `chunks`, joined once (linear), failing as soon as they pass `limit` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise answer_too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One request to an upstream: a POST (or GET) with ready-made headers and body bytes."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    connect_timeout: float
    max_answer: int = DEFAULT_MAX_ANSWER
    """Bytes of answer the transport reads at most (`server.max_upstream_answer`); past it the read
    fails with :func:`answer_too_large` and the connection is dropped."""


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """A whole upstream response."""

    status: int
    headers: httpx.Headers
    body: bytes


class UpstreamStream(Protocol):
    """An upstream response whose body is read incrementally."""

    status: int
    headers: httpx.Headers

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (chunk boundaries are arbitrary)."""
        ...

    async def read(self) -> bytes:
        """The rest of the body at once."""
        ...


class Transport(Protocol):
    """What the proxy needs from an upstream client."""

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send and read the whole response."""
        ...

    def stream(self, request: UpstreamRequest) -> AbstractAsyncContextManager[UpstreamStream]:
        """Send and open the response for incremental reading."""
        ...

    async def aclose(self) -> None:
        """Close pooled connections."""
        ...


class _HttpxStream:
    __slots__ = ("_response", "headers", "max_answer", "status")

    def __init__(self, response: httpx.Response, max_answer: int) -> None:
        self._response = response
        self.max_answer = max_answer
        self.status = response.status_code
        self.headers = response.headers

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream connection broke ({describe(exc)})",
                                code="upstream_connection_broken") from None

    async def read(self) -> bytes:
        return await read_bounded(self.iter_bytes(), self.max_answer)


async def _decoded(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body with its content-encoding undone (counted after decoding: a small gzip bomb is
    still bounded)."""
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.HTTPError as exc:
        raise UpstreamError(f"upstream connection broke ({describe(exc)})",
                            code="upstream_connection_broken") from None


def _timeout(request: UpstreamRequest) -> httpx.Timeout:
    return httpx.Timeout(connect=request.connect_timeout, pool=request.connect_timeout, read=None, write=None)


class HttpxTransport:
    """The default transport: one pooled `httpx.AsyncClient` per process."""

    def __init__(self, *, max_connections: int = 1000, keepalive: int = 200) -> None:
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=keepalive),
            timeout=httpx.Timeout(10.0, read=None, write=None),
            follow_redirects=False,
            trust_env=False,
        )

    def _build(self, request: UpstreamRequest) -> httpx.Request:
        return self._client.build_request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.body if request.method != "GET" else None,
            timeout=_timeout(request),
        )

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send and read the whole response; connection failures become UpstreamError."""
        try:
            response = await self._client.send(self._build(request), stream=True)
        except httpx.ConnectError as exc:
            raise UpstreamError(f"could not connect to the upstream ({describe(exc)})",
                                code="upstream_connect_error") from None
        except httpx.TimeoutException as exc:
            raise UpstreamError(f"timed out connecting to the upstream ({describe(exc)})",
                                code="upstream_connect_error") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream connection failed ({describe(exc)})",
                                code="upstream_connection_broken") from None
        try:
            body = await read_bounded(_decoded(response), request.max_answer)
        finally:
            await response.aclose()
        return UpstreamResponse(response.status_code, response.headers, body)

    @asynccontextmanager
    async def stream(self, request: UpstreamRequest) -> AsyncIterator[UpstreamStream]:
        """Send and yield the open response; it is closed when the block exits."""
        try:
            response = await self._client.send(self._build(request), stream=True)
        except httpx.ConnectError as exc:
            raise UpstreamError(f"could not connect to the upstream ({describe(exc)})",
                                code="upstream_connect_error") from None
        except httpx.TimeoutException as exc:
            raise UpstreamError(f"timed out connecting to the upstream ({describe(exc)})",
                                code="upstream_connect_error") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream connection failed ({describe(exc)})",
                                code="upstream_connection_broken") from None
        try:
            yield _HttpxStream(response, request.max_answer)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the pool."""
        await self._client.aclose()
