"""The upstream MCP servers of the plan being served: created from resolved servers, kept across
reloads while their definition is unchanged, and their background work (stdio supervisors) run in
the hub's nursery, which the server cancels at shutdown."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from sidegate.runtime.mcp.http_upstream import HttpUpstream
from sidegate.runtime.mcp.sse_upstream import SseUpstream
from sidegate.runtime.mcp.stdio_upstream import StdioUpstream
from sidegate.runtime.mcp.stream_upstream import StreamUpstream
from sidegate.runtime.mcp.upstream import ResolvedServer, Upstream
from sidegate.runtime.plan import McpTransport

__all__ = ["Hub"]


class Hub:
    """Name -> upstream, for the current plan."""

    def __init__(self, on_event: Callable[..., None]) -> None:
        self.upstreams: dict[str, Upstream] = {}
        self.separator = "__"
        self._on_event = on_event
        self._nursery: trio.Nursery | None = None
        self._scopes: dict[str, trio.CancelScope] = {}
        self._retired: list[Upstream] = []

    def configure(self, servers: tuple[ResolvedServer, ...], separator: str) -> None:
        """Adopt a plan's servers: unchanged ones keep their connections, others are replaced."""
        self.separator = separator
        fresh: dict[str, Upstream] = {}
        for resolved in servers:
            current = self.upstreams.get(resolved.server.name)
            if current is not None and current.resolved == resolved:
                fresh[resolved.server.name] = current
            elif resolved.server.transport is McpTransport.STDIO:
                fresh[resolved.server.name] = StdioUpstream(resolved, self._on_event)
            elif resolved.server.transport is McpTransport.SSE:
                fresh[resolved.server.name] = SseUpstream(resolved, self._on_event)
            else:
                fresh[resolved.server.name] = HttpUpstream(resolved)
        for name, old in self.upstreams.items():
            if fresh.get(name) is not old:
                self._retire(name, old)
        for up in fresh.values():
            up.spawn = self._spawn
        self.upstreams = fresh
        if self._nursery is not None:
            for name, up in fresh.items():
                if name not in self._scopes:
                    self._nursery.start_soon(self._supervise, name, up)

    def _spawn(self, work: Callable[[], Awaitable[None]]) -> None:
        if self._nursery is not None:  # not running (shutting down): nothing new starts
            self._nursery.start_soon(work)

    def starting(self) -> list[str]:
        """Servers started with the gateway whose first start attempt has not ended yet (each attempt
        is bounded by the server's `start_timeout`): readiness waits for them."""
        return sorted(name for name, up in self.upstreams.items()
                      if isinstance(up, StreamUpstream) and up.boot and not up.settled)

    async def wait_started(self) -> None:
        """Wait until `starting()` is empty."""
        for up in list(self.upstreams.values()):
            if isinstance(up, StreamUpstream) and up.boot:
                await up.wait_settled()

    def report(self) -> dict[str, object]:
        """`GET /health/mcp`: each server's transport, state (up, down, idle), protocol and last error."""
        out: dict[str, object] = {}
        for name, up in sorted(self.upstreams.items()):
            down = bool(getattr(up, "down", False)) or (up.last_error is not None and up.version is None)
            state = "down" if down else ("up" if up.version is not None else "idle")
            out[name] = {"transport": up.server.transport.value, "state": state, "protocol": up.version,
                         "error": up.last_error}
        return out

    def _retire(self, name: str, old: Upstream) -> None:
        scope = self._scopes.pop(name, None)
        if scope is not None:
            scope.cancel()
        if self._nursery is not None:
            self._nursery.start_soon(old.aclose)
        else:
            self._retired.append(old)

    async def _supervise(self, name: str, up: Upstream) -> None:
        with trio.CancelScope() as scope:
            self._scopes[name] = scope
            try:
                await up.run()
                await trio.sleep_forever()
            finally:
                if self._scopes.get(name) is scope:
                    del self._scopes[name]

    async def run(self) -> None:
        """Run every upstream's background work until cancelled; then close them all."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for old in self._retired:
                    nursery.start_soon(old.aclose)
                self._retired.clear()
                for name, up in self.upstreams.items():
                    nursery.start_soon(self._supervise, name, up)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True), trio.move_on_after(3):
                for up in self.upstreams.values():
                    await up.aclose()
