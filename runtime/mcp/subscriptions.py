"""Resource subscriptions (session era): which client sessions follow which resource of which
server, with one upstream subscription per (server, resource) however many clients follow it.

A server's `notifications/resources/updated` (on its session's own event stream over Streamable
HTTP, on the shared channel of a stdio or SSE server) is delivered to every session following that
resource, under the name the session subscribed with (`<server>+<uri>` on the merged `/mcp`), on
the session's event stream (`GET /mcp`). After a server's session is opened again (it forgot it, or
its process restarted) the gateway subscribes again to what its clients still follow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sidegate.runtime.mcp.exchange import Exchange
from sidegate.runtime.mcp.protocol import INVALID_PARAMS, McpError
from sidegate.runtime.mcp.upstream import Upstream

__all__ = ["MAX_PER_SESSION", "Subscriptions"]

MAX_PER_SESSION = 1000
"""Resources one session may follow at once."""

Post = Callable[[str, dict[str, Any]], None]
"""Queue a message on a session's event stream (never blocks: a full queue drops it)."""


class Subscriptions:
    """Per process, like the sessions."""

    def __init__(self, post: Post) -> None:
        self._post = post
        self.following: dict[tuple[str, str], dict[str, str]] = {}
        """(server, the server's own URI) -> {session: the URI the session subscribed with}."""
        self._count: dict[str, int] = {}

    async def subscribe(self, upstream: Upstream, own: str, public: str, session: str, exchange: Exchange) -> None:
        key = (upstream.name, own)
        followers = self.following.get(key)
        if followers is not None and session in followers:
            return
        if self._count.get(session, 0) >= MAX_PER_SESSION:
            raise McpError(INVALID_PARAMS, f"a session may follow at most {MAX_PER_SESSION} resources")
        if not followers:  # the first to follow it: subscribe upstream (the server may refuse)
            await upstream.request("resources/subscribe", {"uri": own}, exchange)
            upstream.follow(self._deliver, self._own_uris)
        self.following.setdefault(key, {})[session] = public
        self._count[session] = self._count.get(session, 0) + 1

    async def unsubscribe(self, upstream: Upstream, own: str, session: str, exchange: Exchange) -> None:
        key = (upstream.name, own)
        followers = self.following.get(key)
        if followers is None or followers.pop(session, None) is None:
            return  # not following it: nothing to undo (the specification asks nothing more)
        self._count[session] -= 1
        if not followers:
            del self.following[key]
            await upstream.request("resources/unsubscribe", {"uri": own}, exchange)

    def forget(self, session: str) -> None:
        """A session ended: it follows nothing any more (upstream subscriptions nobody follows
        stay until the server's session ends; updates for them are dropped)."""
        if not self._count.pop(session, 0):
            return
        for key in [k for k, followers in self.following.items() if session in followers]:
            del self.following[key][session]
            if not self.following[key]:
                del self.following[key]

    def _own_uris(self, server: str) -> list[str]:
        return [own for (name, own) in self.following if name == server]

    def _deliver(self, server: str, message: dict[str, Any]) -> None:
        params = message.get("params")
        uri = params.get("uri") if isinstance(params, dict) else None
        if message.get("method") != "notifications/resources/updated" or not isinstance(uri, str):
            return
        assert isinstance(params, dict)
        for session, public in list(self.following.get((server, uri), {}).items()):
            self._post(session, {"jsonrpc": "2.0", "method": "notifications/resources/updated",
                                 "params": {**params, "uri": public}})
