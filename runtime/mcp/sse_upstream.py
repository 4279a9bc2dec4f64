"""An upstream MCP server on the legacy HTTP+SSE transport (protocol 2024-11-05): a `GET` opens an
event stream whose first `endpoint` event names the URL to `POST` messages to; the server answers
each POST 202 and sends the JSON-RPC answers as `message` events on the stream."""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

import httpx
import orjson
import trio

from sidegate.runtime.mcp.sse import sse_events
from sidegate.runtime.mcp.stream_upstream import StreamUpstream
from sidegate.runtime.mcp.upstream import ResolvedServer

__all__ = ["SseUpstream"]


class SseUpstream(StreamUpstream):
    """A legacy HTTP+SSE upstream, its stream kept open by the supervisor."""

    def __init__(self, resolved: ResolvedServer, on_event: Any = None) -> None:
        super().__init__(resolved, on_event, boot=True)
        assert resolved.server.url is not None
        self.url = resolved.server.url
        self._post_url: str | None = None
        self._client = httpx.AsyncClient(
            headers=dict(resolved.headers),
            timeout=httpx.Timeout(resolved.server.timeout, read=None),
            limits=httpx.Limits(max_connections=resolved.server.max_concurrency + 1),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
        if self.tokens is not None:
            await self.tokens.aclose()

    async def _auth(self) -> dict[str, str]:
        return {} if self.tokens is None else {"authorization": "Bearer " + await self.tokens.token()}

    async def _send(self, message: dict[str, Any]) -> None:
        target = self._post_url
        if target is None:
            raise self.unavailable("no message endpoint yet")
        try:
            response = await self._client.post(target, content=orjson.dumps(message), headers={
                "content-type": "application/json", **await self._auth()})
        except httpx.HTTPError as exc:
            raise self.unavailable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            if response.status_code == 401 and self.tokens is not None:
                self.tokens.invalidate()
            raise self.unavailable(f"message POST answered HTTP {response.status_code}")

    async def _open(self) -> str:
        self._post_url = None
        headers = {"accept": "text/event-stream", **await self._auth()}
        try:
            async with self._client.stream("GET", self.url, headers=headers) as response:
                if response.status_code != 200:
                    if response.status_code == 401 and self.tokens is not None:
                        self.tokens.invalidate()
                    return f"event stream answered HTTP {response.status_code}"
                why = "event stream ended"
                async with trio.open_nursery() as nursery:
                    try:
                        async for event, data in sse_events(response.aiter_bytes()):
                            if event == "endpoint" and self._post_url is None:
                                self._post_url = urljoin(self.url, data.strip())
                                nursery.start_soon(self._handshake)
                            elif event == "message":
                                await self._dispatch(data)
                    except (httpx.HTTPError, ValueError) as exc:
                        why = f"{type(exc).__name__}: {exc}"
                    nursery.cancel_scope.cancel()
            return why
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            self._post_url = None
