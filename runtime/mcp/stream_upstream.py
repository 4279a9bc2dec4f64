"""Upstreams that hold one long-lived channel and match answers to requests by id: a stdio
subprocess, a legacy HTTP+SSE stream. A supervisor (run in the hub's nursery) opens the channel at
boot or at the first request, performs the `initialize` handshake, and reopens it with exponential
backoff when it ends; requests fail at once while it is down.

The channel is shared by every client, so only what names its request is relayed: progress (the
gateway gives each request a `progressToken` of its own and maps it back). Log messages and
requests the server makes carry no such link on this channel: they are not relayed (requests are
refused). Resource updates name their resource: they go to the sessions following it."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import trio

from sidegate.runtime.mcp.exchange import Exchange
from sidegate.runtime.mcp.protocol import (
    INTERNAL_ERROR,
    LATEST_HANDSHAKE,
    META_CLIENT_CAPS,
    META_CLIENT_INFO,
    META_VERSION,
    METHOD_NOT_FOUND,
    MODERN_VERSIONS,
    UPSTREAM_UNAVAILABLE,
    McpError,
)
from sidegate.runtime.mcp.upstream import CLIENT_INFO, ResolvedServer, Upstream, for_hop

__all__ = ["StreamUpstream"]

_BACKOFF = (0.25, 30.0)
_PROGRESS_BUFFER = 16
"""Progress notifications queued for a request whose client is slow (more are dropped)."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _describe(exc.exceptions[0])
    if isinstance(exc, trio.TooSlowError):
        return "no answer to initialize"
    return f"{type(exc).__name__}: {exc}"


class StreamUpstream(Upstream):
    """The request/answer matching and the supervisor loop; subclasses open the channel."""

    def __init__(self, resolved: ResolvedServer, on_event: Any = None, boot: bool = True) -> None:
        super().__init__(resolved)
        self.wanted = trio.Event()
        self.boot = boot
        """Started with the gateway (readiness waits for it), not at the first request."""
        if boot:
            self.wanted.set()
        self.ready = trio.Event()
        self.restarts = 0
        self.down = False
        """Between an end of the channel and the next successful open: requests fail at once."""
        self._pending: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._progress: dict[str, tuple[int, Any]] = {}
        """The gateway's progress token -> (request id, the client's own token)."""
        self._on_event = on_event
        self.modern = False
        """The server speaks 2026-07-28 on this channel (it answered `server/discover`): requests
        carry the envelope and the calling client's capabilities, and no session is opened."""
        self._discover_broke = False
        self._changed = trio.Event()
        """Set (and replaced) whenever a start attempt succeeds or ends."""

    probe_modern = False
    """Ask `server/discover` before `initialize` (stdio servers: a session-era server answers it
    with an error and goes on to the handshake)."""

    def session_twin(self) -> StreamUpstream | None:
        """Another channel for session-era clients, when this one speaks 2026-07-28 (stdio)."""
        return None

    async def _request(self, method: str, params: dict[str, Any], exchange: Exchange | None) -> dict[str, Any]:
        await self.wait_started()
        twin = self.session_twin() if exchange is not None and exchange.legacy else None
        if twin is not None:
            return await twin._request(method, params, exchange)
        return await self._call(method, for_hop(params, self.version if self.modern else None), exchange)

    @property
    def started(self) -> bool:
        """The channel is open and `initialize` was answered."""
        return self.ready.is_set()

    @property
    def settled(self) -> bool:
        """The current start attempt has ended, either way (for readiness probes)."""
        return self.ready.is_set() or self.down

    async def wait_started(self) -> None:
        """Ask for the channel and wait (at most `start_timeout`) until it is up; fail at once while it
        is down between restarts."""
        self.wanted.set()
        with trio.move_on_after(self.server.start_timeout):
            while not self.ready.is_set():
                if self.down:
                    raise self.unavailable(self.last_error or "restarting")
                await self._changed.wait()
            return
        raise self.unavailable(f"not started within {self.server.start_timeout:g}s")

    async def wait_settled(self) -> None:
        """Wait until the current start attempt has ended (up, or down with its reason)."""
        while not self.settled:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _send(self, message: dict[str, Any]) -> None:
        """Deliver one message to the server (raise McpError when the channel is gone)."""
        raise NotImplementedError

    async def _open(self) -> str:
        """Open the channel, run `_handshake` once reading has started, serve until it ends; return why."""
        raise NotImplementedError

    async def _call(self, method: str, params: dict[str, Any], exchange: Exchange | None = None) -> dict[str, Any]:
        rid = self.next_id()
        send, receive = trio.open_memory_channel[dict[str, Any]](_PROGRESS_BUFFER + 1)  # room for the answer
        self._pending[rid] = send
        meta = params.get("_meta")
        token = f"sg-{rid}"
        if exchange is not None and exchange.emit is not None and isinstance(meta, dict) and "progressToken" in meta:
            self._progress[token] = (rid, meta["progressToken"])
            params = {**params, "_meta": {**meta, "progressToken": token}}
        try:
            await self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            message = await receive.receive()
            while "method" in message and exchange is not None:  # progress, then the answer
                await exchange.notify(message)
                message = await receive.receive()
        except trio.Cancelled:
            if method != "initialize":  # tell the server (best effort) that nobody waits any more
                with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(McpError):
                    await self._send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                      "params": {"requestId": rid, "reason": "timed out at the gateway"}})
            raise
        finally:
            self._pending.pop(rid, None)
            self._progress.pop(token, None)
        if "__gone__" in message:
            raise self.unavailable(message["__gone__"])
        error = message.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise McpError(code if isinstance(code, int) else INTERNAL_ERROR, str(error.get("message", "error")),
                           error.get("data"))
        result = message.get("result")
        if not isinstance(result, dict):
            raise self.unavailable(f"{method} answered without a result")
        return result

    async def _handshake(self) -> None:
        # A fresh process must start its interpreter before it can answer: this is bounded by
        # `start_timeout`, not by the per-request `timeout`.
        with trio.fail_after(self.server.start_timeout):
            if await self._discover():
                self.version, self.modern = MODERN_VERSIONS[-1], True
            else:
                result = await self._call("initialize", {
                    "protocolVersion": LATEST_HANDSHAKE, "capabilities": {}, "clientInfo": CLIENT_INFO})
                self.version, self.modern = str(result.get("protocolVersion")), False
                await self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.down = False
        self.ready.set()
        self._notify()
        if self.followed(self.name) and self.spawn is not None:  # a new process knows none of them
            self.spawn(self._subscribe_again)

    async def _discover(self) -> bool:
        """Whether the server speaks 2026-07-28. A server that breaks its channel on the question,
        or leaves it unanswered for 5 s, is not asked again (the handshake goes on at once)."""
        if not self.probe_modern or self._discover_broke:
            return False
        meta = {META_VERSION: MODERN_VERSIONS[-1], META_CLIENT_INFO: CLIENT_INFO, META_CLIENT_CAPS: {}}
        self._discover_broke = True  # until an answer comes
        found: dict[str, Any] | None = None
        with trio.move_on_after(min(5.0, self.server.start_timeout / 2)):
            try:
                found = await self._call("server/discover", {"_meta": meta})
            except McpError as err:
                if err.code != UPSTREAM_UNAVAILABLE:  # the server answered: a session-era server
                    self._discover_broke = False
                return False
            self._discover_broke = False
        versions = found.get("supportedVersions") if found is not None else None
        return isinstance(versions, list) and MODERN_VERSIONS[-1] in versions

    async def _subscribe_again(self) -> None:
        with contextlib.suppress(McpError, trio.TooSlowError), trio.fail_after(self.server.timeout):
            for uri in self.followed(self.name):
                await self._call("resources/subscribe", {"uri": uri})

    async def run(self) -> None:
        """Supervise the channel until cancelled."""
        await self.wanted.wait()
        delay = _BACKOFF[0]
        while True:
            started = trio.current_time()
            try:
                why = await self._open()
            except Exception as exc:  # the supervisor outlives any failure of one run (groups included)
                why = _describe(exc)
            finally:
                self.ready = trio.Event()
                self.version = None
            self._fail_pending(why)
            self.last_error = why
            self.down = True
            self._notify()
            if self._on_event is not None:
                self._on_event("mcp_upstream_down", server=self.name, reason=why, retry_in=delay)
            if trio.current_time() - started > 60:
                delay = _BACKOFF[0]
            await trio.sleep(delay)
            delay = min(delay * 2, _BACKOFF[1])
            self.restarts += 1

    async def _dispatch(self, raw: bytes | str) -> None:
        """Handle one message from the server: an answer, or a request it makes (refused)."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        if message.get("method") == "notifications/progress" and "id" not in message:
            self._route_progress(message)
            return
        if message.get("method") == "notifications/resources/updated" and "id" not in message:
            if self.deliver is not None:
                self.deliver(self.name, message)
            return
        if "method" in message:
            if "id" in message:  # a request from the server: sidegate offers no client features
                answer: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
                if message["method"] == "ping":
                    answer["result"] = {}
                else:
                    answer["error"] = {"code": METHOD_NOT_FOUND, "message": "not supported by the gateway"}
                with contextlib.suppress(McpError):
                    await self._send(answer)
            return
        rid = message.get("id")
        waiter = self._pending.get(rid) if isinstance(rid, int) else None
        if waiter is not None:
            waiter.send_nowait(message)

    def _route_progress(self, message: dict[str, Any]) -> None:
        params = message.get("params")
        token = params.get("progressToken") if isinstance(params, dict) else None
        found = self._progress.get(token) if isinstance(token, str) else None
        waiter = self._pending.get(found[0]) if found is not None else None
        if waiter is None or found is None or waiter.statistics().current_buffer_used >= _PROGRESS_BUFFER:
            return
        assert isinstance(params, dict)
        waiter.send_nowait({**message, "params": {**params, "progressToken": found[1]}})

    def _fail_pending(self, why: str) -> None:
        for waiter in list(self._pending.values()):
            with contextlib.suppress(trio.WouldBlock):
                waiter.send_nowait({"__gone__": why})
