"""`GET /mcp` (session era): the session's own event stream, where sidegate delivers what is not
the answer to a request: the updates of resources the session subscribed to. One stream per
session (a new GET replaces the old one); it ends when the client leaves, the session is deleted,
or the gateway shuts down (it does not hold the drain)."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import trio

from sidegate.runtime.asgi import Receive, Send

__all__ = ["QUEUE", "Outbox", "listen"]

QUEUE = 64
"""Messages queued for a slow listener; more are dropped."""
_KEEPALIVE = 25.0
"""Seconds of quiet before a comment line keeps intermediaries from closing the stream."""


class Outbox:
    """Where messages for one session's stream are queued (never blocks the caller)."""

    def __init__(self) -> None:
        self._send: trio.MemorySendChannel[dict[str, Any]] | None = None

    def post(self, message: dict[str, Any]) -> None:
        if self._send is None:
            return
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self._send.send_nowait(message)

    def close(self) -> None:
        if self._send is not None:
            self._send.close()
            self._send = None

    def open(self) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        self.close()  # the session's previous stream ends
        self._send, receive = trio.open_memory_channel[dict[str, Any]](QUEUE)
        return receive


async def listen(outbox: Outbox, receive: Receive, send: Send, closing: trio.Event) -> None:
    """Serve one session's event stream until it ends (see the module's docstring)."""
    messages = outbox.open()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform")]})
    await send({"type": "http.response.body", "body": b": stream open\n\n", "more_body": True})

    async def until_gone(scope: trio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    async def until_closing(scope: trio.CancelScope) -> None:
        await closing.wait()
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(until_gone, nursery.cancel_scope)
        nursery.start_soon(until_closing, nursery.cancel_scope)
        async with messages:
            while True:
                with trio.move_on_after(_KEEPALIVE):
                    try:
                        message = await messages.receive()
                    except trio.EndOfChannel:
                        break
                    body = b"event: message\ndata: " + orjson.dumps(message) + b"\n\n"
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    continue
                await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
        nursery.cancel_scope.cancel()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
