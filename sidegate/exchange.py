"""One in-process HTTP exchange with the sidecar's ASGI app: a constructed scope (no socket), the
body handed over whole, the answer's head and body read as the app sends it.

Runs in the runtime thread. The body goes through a bounded channel, so a slow reader holds the
app (and the upstream stream) back instead of the answer piling up; `hang_up` is a client
disconnecting: the app cancels the call and accounts it as 499.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, MutableMapping
from typing import Any

import trio

from sidegate.runtime.asgi import Scope
from sidegate.runtime.http.app import App

__all__ = ["Exchange"]

_BUFFERED = 16
"""Body messages the app may send ahead of the reader."""


class Exchange:
    """`POST path` with a JSON body, as the HTTP surface would get it from a local client."""

    def __init__(self, app: App, path: str, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self._app = app
        self._body: bytes | None = body
        self.scope: Scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 0), "server": None,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        *headers],
        }
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._head = trio.Event()
        self._gone = trio.Event()
        self._done = trio.Event()
        self._out, self._in = trio.open_memory_channel[bytes](_BUFFERED)

    async def start(self, nursery: trio.Nursery) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Start the app on the request in `nursery`; the answer's status and headers. Cancelled
        (the caller was), it hangs up."""
        nursery.start_soon(self._drive)
        try:
            await self._head.wait()
        except BaseException:
            await self._abandon()
            raise
        return self.status, self.headers

    async def whole(self, nursery: trio.Nursery) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The whole answer. Cancelled (the caller was), it hangs up."""
        status, headers = await self.start(nursery)
        try:
            return status, headers, await self.rest()
        except BaseException:
            await self._abandon()
            raise

    async def _abandon(self) -> None:
        with trio.CancelScope(shield=True):
            await self.hang_up()

    async def next(self) -> bytes | None:
        """The next piece of the body; None at its end."""
        try:
            return await self._in.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    async def rest(self) -> bytes:
        """The rest of the body."""
        parts: list[bytes] = []
        while (part := await self.next()) is not None:
            parts.append(part)
        return b"".join(parts)

    async def hang_up(self) -> None:
        """The client goes away: the app cancels the call (accounted as 499); returns once the app
        has finished with it (at most 5 s)."""
        self._gone.set()
        self._in.close()
        with trio.move_on_after(5):
            await self._done.wait()

    async def _drive(self) -> None:
        try:
            await self._app(self.scope, self._receive, self._send)
        finally:
            self._out.close()
            self._head.set()  # an app that never answered: status 0
            self._done.set()

    async def _receive(self) -> MutableMapping[str, Any]:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
            self._head.set()
        elif message["type"] == "http.response.body":
            chunk = bytes(message.get("body", b""))
            if chunk and not self._gone.is_set():
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._out.send(chunk)  # suppressed: the reader hung up meanwhile
            if not message.get("more_body", False):
                self._out.close()
