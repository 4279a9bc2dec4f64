"""What every upstream MCP client shares: resolved credentials, the concurrency cap and the
per-request deadline, and the JSON-RPC envelope of the requests it sends."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from sidegate.runtime.mcp.exchange import Exchange
from sidegate.runtime.mcp.oauth import TokenSource
from sidegate.runtime.mcp.param_headers import Bindings, bindings_of
from sidegate.runtime.mcp.protocol import (
    META_CLIENT_CAPS,
    META_CLIENT_INFO,
    META_VERSION,
    UPSTREAM_UNAVAILABLE,
    McpError,
    strip_envelope,
)
from sidegate.runtime.plan import Mcp, McpServer, Secret

__all__ = ["CLIENT_INFO", "KNOWN_TOOLS", "Deliver", "ResolvedServer", "Upstream", "for_hop", "resolve_servers"]

Deliver = Callable[[str, dict[str, Any]], None]
"""Hand a server's notification about followed resources to the gateway (server name, message)."""

KNOWN_TOOLS = 1000
"""Tools remembered per server (names for metric labels, header markings), at most."""

CLIENT_INFO = {"name": "sidegate", "version": "0.1.0"}


def for_hop(params: dict[str, Any], modern_version: str | None) -> dict[str, Any]:
    """`params` for the next hop: the caller's envelope removed; at 2026-07-28 (`modern_version`)
    sidegate's own envelope with the calling client's capabilities, as it declared them (a
    2026-07-28 client does per request; none for older clients), which servers gate tools and
    requests on."""
    meta = params.get("_meta")
    declared = meta.get(META_CLIENT_CAPS) if isinstance(meta, dict) else None
    params = strip_envelope(params)
    if modern_version is None:
        return params
    return {**params, "_meta": {**params.get("_meta", {}), META_VERSION: modern_version, META_CLIENT_INFO: CLIENT_INFO,
                                META_CLIENT_CAPS: declared if isinstance(declared, dict) else {}}}


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedServer:
    """An upstream server with its secret references resolved (never logged)."""

    server: McpServer
    headers: tuple[tuple[str, str], ...]
    env: tuple[tuple[str, str], ...]
    oauth: tuple[str, str] | None = None
    """The OAuth client id and secret."""


def resolve_servers(mcp: Mcp | None, resolve: Callable[[Secret], str]) -> tuple[ResolvedServer, ...]:
    """Resolve every server's headers and environment (blocking: call off the event loop)."""
    if mcp is None:
        return ()
    return tuple(
        ResolvedServer(
            server=s,
            headers=tuple((h.name, resolve(h.value)) for h in s.headers),
            env=tuple((e.name, resolve(e.value)) for e in s.env),
            oauth=None if s.oauth is None else (resolve(s.oauth.client_id), resolve(s.oauth.client_secret)),
        )
        for s in mcp.servers
    )


class Upstream:
    """One upstream server. `request` returns the JSON-RPC result or raises McpError: the upstream's
    own error passed through, or UPSTREAM_UNAVAILABLE when it cannot be reached in time."""

    def __init__(self, resolved: ResolvedServer) -> None:
        self.resolved = resolved
        self.tokens: TokenSource | None = None
        oauth = resolved.server.oauth
        if oauth is not None and resolved.oauth is not None:
            self.tokens = TokenSource(resolved.server.name, oauth.token_url, *resolved.oauth, oauth.scope,
                                      resolved.server.timeout)
        self.server = resolved.server
        self.name = resolved.server.name
        self.limiter = trio.CapacityLimiter(resolved.server.max_concurrency)
        self.version: str | None = None
        """The negotiated protocol version; None before the first successful connect."""
        self.last_error: str | None = None
        self.tools: set[str] = set()
        """Tool names seen in this server's `tools/list` pages (bounded): metric labels for calls."""
        self.param_bindings: dict[str, Bindings] = {}
        """Each tool's `x-mcp-header` markings, as its lists declared them (bounded like `tools`)."""
        self._ids = itertools.count(1)
        self.spawn: Callable[[Callable[[], Awaitable[None]]], None] | None = None
        """Start background work in the hub's nursery (set by the hub)."""
        self.deliver: Deliver | None = None
        self.followed: Callable[[str], list[str]] = lambda _name: []
        """The server's own URIs the gateway's clients follow (subscribed again on a new session)."""

    def follow(self, deliver: Deliver, followed: Callable[[str], list[str]]) -> None:
        """Deliver the server's resource-update notifications from now on; subclasses start
        listening for them."""
        self.deliver, self.followed = deliver, followed

    def learn_tool(self, item: Any) -> None:
        """Note a tool of a `tools/list` page: its name, and which arguments it mirrors in headers."""
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return
        name = item["name"]
        if name in self.tools or len(self.tools) < KNOWN_TOOLS:
            self.tools.add(name)
            marked = bindings_of(item.get("inputSchema"))
            if marked:
                self.param_bindings[name] = marked
            else:
                self.param_bindings.pop(name, None)

    def next_id(self) -> int:
        """A fresh JSON-RPC request id."""
        return next(self._ids)

    async def request(self, method: str, params: dict[str, Any], exchange: Exchange | None = None) -> dict[str, Any]:
        """Send one request under the server's concurrency cap and deadline (once the server has
        started: waiting for its start is bounded by `start_timeout`, not `timeout`); what the server
        sends on the request's own stream besides the answer goes to `exchange`."""
        await self.wait_started()
        async with self.limiter:
            try:
                with trio.fail_after(self.server.timeout):
                    result = await self._request(method, params, exchange)
            except trio.TooSlowError:
                self.last_error = f"no answer within {self.server.timeout:g}s"
                raise McpError(UPSTREAM_UNAVAILABLE, f"MCP server '{self.name}' timed out") from None
        self.last_error = None
        return result

    async def _request(self, method: str, params: dict[str, Any], exchange: Exchange | None) -> dict[str, Any]:
        raise NotImplementedError

    async def wait_started(self) -> None:
        """Wait until the server can take requests (a subprocess has answered `initialize`); raise
        McpError when it cannot. Nothing to wait for by default."""

    async def run(self) -> None:
        """Background work owned by the hub's nursery (a stdio supervisor); none by default."""

    async def aclose(self) -> None:
        """Release connections."""

    def unavailable(self, why: str) -> McpError:
        """The error for an unreachable server (the detail is kept for `/health`, not sent)."""
        self.last_error = why
        return McpError(UPSTREAM_UNAVAILABLE, f"MCP server '{self.name}' is unavailable")
