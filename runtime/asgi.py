"""Small ASGI helpers: reading a bounded body, sending whole responses, reading headers, request ids."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from random import getrandbits
from typing import Any

import trio

from sidegate.runtime.errors import BadRequest, PayloadTooLarge

__all__ = ["Receive", "Scope", "Send", "header", "new_request_id", "read_body", "respond"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before its body was read."""


def new_request_id() -> str:
    """A request id: 128 random bits in hex, as `uuid4().hex` was, from the process's Mersenne
    Twister rather than the kernel (`uuid4` reads `os.urandom`, a system call: ~9 us a request under
    load on the benchmark's VM). Not a secret (it is echoed in `x-request-id` and logged); `random`
    reseeds in a forked worker, so workers do not repeat each other's."""
    return f"{getrandbits(128):032x}"


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (`name` in lower case)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int, body_timeout: float = 30.0) -> bytes:
    """The whole request body; 413 as soon as it is known to exceed `limit`, 408 when it has not all
    arrived within `body_timeout` seconds (`server.body_timeout`: a client dribbling bytes is cut off)."""
    with trio.move_on_after(body_timeout):  # a plain scope: `fail_after` adds a generator per request
        return await _read_body(scope, receive, limit)
    raise BadRequest(f"the request body did not arrive within {body_timeout:g}s (server.body_timeout)", status=408,
                     code="request_timeout")


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"request body is {int(declared)} bytes; the limit is {limit}")
        except ValueError:
            raise BadRequest("invalid content-length header") from None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]], content_type: bytes
) -> None:
    """Send a whole response."""
    out = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body, "more_body": False})
