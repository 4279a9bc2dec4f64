"""An MCP answer sent as an event stream (Streamable HTTP): opened at the first message relayed
before the answer (a progress notification, a log message, a request of the server), closed with
the answer itself. A request that relays nothing is answered with plain JSON, as before."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.runtime.asgi import Scope, Send, header

__all__ = ["EventAnswer", "accepts_events"]


def accepts_events(scope: Scope) -> bool:
    """Whether the client takes an event stream as the answer to its POST."""
    return b"text/event-stream" in (header(scope, b"accept") or b"").lower()


class EventAnswer:
    """The event stream of one POST (see the module's docstring)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def emit(self, message: dict[str, Any]) -> None:
        """Send one message before the answer (opening the stream with the first)."""
        if not self.started:
            self.started = True
            await self.send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform")]})
        await self.send({"type": "http.response.body", "body": _event(message), "more_body": True})

    async def finish(self, message: dict[str, Any]) -> None:
        """Send the answer (or the error) and end the stream."""
        await self.send({"type": "http.response.body", "body": _event(message), "more_body": False})


def _event(message: dict[str, Any]) -> bytes:
    return b"event: message\ndata: " + orjson.dumps(message) + b"\n\n"
