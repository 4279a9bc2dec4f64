"""An upstream MCP server over Streamable HTTP, in the era it speaks: a `server/discover` probe
selects the stateless 2026-07-28 protocol; on an error the `initialize` handshake opens a session
(`mcp-session-id`), which is re-opened once when the server forgets it (404).

A server that speaks both eras is reached in the calling client's: session-era clients through a
second connection of the same server that opens a session (its `twin`), so what the server sends
them on a request's event stream (progress, log messages, sampling and elicitation requests) is
what a session-era client expects. Messages on a request's stream besides its answer go to the
request's `Exchange`."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import orjson
import trio

from sidegate.runtime.mcp.exchange import Exchange
from sidegate.runtime.mcp.param_headers import param_headers
from sidegate.runtime.mcp.protocol import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    LATEST_HANDSHAKE,
    META_CLIENT_CAPS,
    META_CLIENT_INFO,
    META_VERSION,
    METHOD_NOT_FOUND,
    MODERN_VERSIONS,
    NAME_PARAMS,
    McpError,
    encode_header,
)
from sidegate.runtime.mcp.sse import sse_events
from sidegate.runtime.mcp.upstream import CLIENT_INFO, Deliver, ResolvedServer, Upstream, for_hop
from sidegate.runtime.observe.context import outbound_headers

__all__ = ["HttpUpstream"]

_ACCEPT = "application/json, text/event-stream"
_RELEARN_PAGES = 20
"""Pages of `tools/list` read, at most, to learn a server's Mcp-Param-* markings again."""
_LISTEN_BACKOFF = (0.5, 30.0)
SESSION_CAPABILITIES = {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": False}}
"""What sidegate declares in a session's `initialize`: what it relays from its own clients (a
request the calling client cannot take is answered with an error by the gateway)."""


class _SessionGone(Exception):
    pass


class _Refused(Exception):
    """HTTP 401 while using an OAuth token: fetch a new one and try once more."""


class _Unreachable(McpError):
    """No HTTP answer at all (connect refused, reset): a handshake would not help."""


class _NoSessionEra(Exception):
    """The server refused `initialize`: it speaks the stateless era only."""


class HttpUpstream(Upstream):
    """A Streamable HTTP upstream (either era)."""

    def __init__(self, resolved: ResolvedServer, parent: HttpUpstream | None = None) -> None:
        super().__init__(resolved)
        assert resolved.server.url is not None
        self.url = resolved.server.url
        self.session: str | None = None
        self.modern = False
        self.parent = parent
        """Set on a twin: the connection that opens a session to a server speaking both eras."""
        self._twin: HttpUpstream | None = None
        self._no_session_era = False
        self._listening = False
        self._closed = False
        if parent is not None:  # one server: one cap, one token, one memory of its tools
            self.limiter, self.tokens = parent.limiter, parent.tokens
            self.tools, self.param_bindings = parent.tools, parent.param_bindings
        self._lock = trio.Lock()
        self._client = httpx.AsyncClient(
            headers={**dict(resolved.headers), "accept": _ACCEPT},
            timeout=httpx.Timeout(resolved.server.timeout),
            # A request's event stream holds its connection while the client answers what the
            # server asked on it: room for one answer per request under the cap.
            limits=httpx.Limits(max_connections=2 * resolved.server.max_concurrency),
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._twin is not None:
            await self._twin.aclose()
        if self.tokens is not None and self.parent is None:
            await self.tokens.aclose()
        if self.session is not None:
            try:
                with trio.move_on_after(2):
                    await self._client.delete(self.url, headers=self._headers("", {}))
            except httpx.HTTPError:
                pass
        await self._client.aclose()

    def follow(self, deliver: Deliver, followed: Any) -> None:
        super().follow(deliver, followed)
        if not self._listening and self.spawn is not None:
            self._listening = True
            self.spawn(self._listen)

    async def _listen(self) -> None:
        """Hold the session's own event stream (`GET`), where the server announces resource updates,
        while any client follows one; open it again (with backoff) when it ends."""
        delay = _LISTEN_BACKOFF[0]
        try:
            while not self._closed and self.followed(self.name):
                try:
                    with trio.fail_after(self.server.timeout):
                        conn = await self._session_era()
                        for uri in self.followed(self.name):  # a new session knows none of them
                            await conn._send("resources/subscribe", {"uri": uri})
                    if await conn._updates(self):
                        delay = _LISTEN_BACKOFF[0]
                except _SessionGone:
                    (self._twin if self.modern and self._twin is not None else self).version = None
                except (McpError, _NoSessionEra, _Refused, trio.TooSlowError, httpx.HTTPError):
                    pass
                if self._closed:
                    return
                await trio.sleep(delay)
                delay = min(delay * 2, _LISTEN_BACKOFF[1])
        finally:
            self._listening = False

    async def _session_era(self) -> HttpUpstream:
        """The connection that holds a session: this one, or the twin of a server speaking both eras."""
        await self._connect()
        if not self.modern:
            return self
        if self._twin is None:
            self._twin = HttpUpstream(self.resolved, parent=self)
        await self._twin._connect()
        return self._twin

    async def _updates(self, owner: HttpUpstream) -> bool:
        """Read the session's event stream until it ends; whether it was open at all."""
        headers = {**self._headers("", {}), "accept": "text/event-stream"}
        if self.tokens is not None:
            headers["authorization"] = "Bearer " + await self.tokens.token()
        timeout = httpx.Timeout(self.server.timeout, read=None)  # quiet for hours is fine
        async with self._client.stream("GET", self.url, headers=headers, timeout=timeout) as response:
            if response.status_code == 404:
                self.version = None  # the session is gone: open a new one
                return False
            if response.status_code != 200:
                return False  # no stream offered (405): nothing will be announced
            async for _event, data in sse_events(response.aiter_bytes()):
                try:
                    message = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(message, dict) and "method" in message and "id" not in message:
                    if owner.deliver is not None:
                        owner.deliver(owner.name, message)
                elif isinstance(message, dict) and "method" in message:
                    answer = {"result": {}} if message["method"] == "ping" else {"error": {
                        "code": METHOD_NOT_FOUND, "message": "not relayed by the gateway"}}
                    await self._reply({"jsonrpc": "2.0", "id": message["id"], **answer})
        return True

    async def _request(self, method: str, params: dict[str, Any], exchange: Exchange | None = None) -> dict[str, Any]:
        try:
            return await self._with_session(method, params, exchange)
        except _Refused:
            assert self.tokens is not None
            self.tokens.invalidate()
            try:
                return await self._with_session(method, params, exchange)
            except _Refused:
                raise self.unavailable("the upstream refused a fresh OAuth token (HTTP 401)") from None

    async def _with_session(self, method: str, params: dict[str, Any], exchange: Exchange | None) -> dict[str, Any]:
        await self._connect()
        if self.modern and exchange is not None and exchange.legacy and not self._no_session_era:
            if self._twin is None:
                self._twin = HttpUpstream(self.resolved, parent=self)
            try:
                return await self._twin._with_session(method, params, exchange)
            except _NoSessionEra:
                self._no_session_era = True  # the client is served in the stateless era, as before
        try:
            try:
                return await self._send(method, params, exchange)
            except McpError as err:
                if not (self.modern and method == "tools/call" and err.code == HEADER_MISMATCH):
                    raise
                # Our Mcp-Param-* headers disagree with the tool as the server now declares it (or
                # we had not seen its list yet): learn the list again and try once more.
                await self._relearn_tools()
                return await self._send(method, params, exchange)
        except _SessionGone:
            self.version = None
            await self._connect()
            try:
                return await self._send(method, params, exchange)
            except _SessionGone:
                raise self.unavailable("session lost twice") from None

    async def _connect(self) -> None:
        async with self._lock:
            if self.version is not None:
                return
            self.session, self.modern = None, False
            if self.parent is not None:
                await self._handshake()
                return
            meta = {META_VERSION: MODERN_VERSIONS[-1], META_CLIENT_INFO: CLIENT_INFO, META_CLIENT_CAPS: {}}
            try:
                found = await self._post("server/discover", {"_meta": meta}, {
                    "mcp-protocol-version": MODERN_VERSIONS[-1], "mcp-method": "server/discover"})
                versions = found.get("supportedVersions")
            except _Unreachable:
                raise
            except (McpError, _SessionGone):
                versions = None
            if isinstance(versions, list) and MODERN_VERSIONS[-1] in versions:
                self.version, self.modern = MODERN_VERSIONS[-1], True
                return
            await self._handshake()

    async def _handshake(self) -> None:
        params = {"protocolVersion": LATEST_HANDSHAKE, "capabilities": SESSION_CAPABILITIES, "clientInfo": CLIENT_INFO}
        try:
            result = await self._post("initialize", params, {}, keep_session=True)
        except _Unreachable:
            raise
        except McpError:
            if self.parent is not None:
                raise _NoSessionEra() from None
            raise
        version = result.get("protocolVersion")
        if not isinstance(version, str):
            raise self.unavailable("initialize answered without a protocolVersion")
        self.version = version
        await self._notify("notifications/initialized")
        if isinstance(result.get("capabilities"), dict) and "logging" in result["capabilities"]:
            # Everything the server logs reaches the gateway, which filters by each client's level.
            await self._post("logging/setLevel", {"level": "debug"}, self._headers("", {}))

    async def _relearn_tools(self) -> None:
        cursor: str | None = None
        for _ in range(_RELEARN_PAGES):
            page = await self._send("tools/list", {"cursor": cursor} if cursor else {})
            for item in page.get("tools") or ():
                self.learn_tool(item)
            cursor = page.get("nextCursor") if isinstance(page.get("nextCursor"), str) else None
            if not cursor:
                return

    def _headers(self, method: str, params: dict[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.version is not None:
            out["mcp-protocol-version"] = self.version
        if self.session is not None:
            out["mcp-session-id"] = self.session
        if self.modern and method:
            out["mcp-method"] = method
            key = NAME_PARAMS.get(method)
            if key is not None and isinstance(params.get(key), str):
                out["mcp-name"] = encode_header(params[key])
            if method == "tools/call" and isinstance(params.get("name"), str):
                out.update(param_headers(self.param_bindings.get(params["name"], ()), params.get("arguments")))
        return out

    async def _send(self, method: str, params: dict[str, Any], exchange: Exchange | None = None) -> dict[str, Any]:
        params = for_hop(params, self.version if self.modern else None)
        return await self._post(method, params, self._headers(method, params), exchange=exchange)

    async def _reply(self, message: dict[str, Any]) -> None:
        """Deliver a client's answer to a request the server made (best effort: the server's own
        deadline covers a lost answer; the session is not given up for it)."""
        auth = {"authorization": "Bearer " + await self.tokens.token()} if self.tokens is not None else {}
        with contextlib.suppress(httpx.HTTPError, McpError):
            await self._client.post(self.url, content=orjson.dumps(message), headers={
                **self._headers("", {}), **auth, "content-type": "application/json"})

    async def _notify(self, method: str) -> None:
        await self._deliver({"jsonrpc": "2.0", "method": method})

    async def _deliver(self, message: dict[str, Any]) -> None:
        body = orjson.dumps(message)
        auth = {"authorization": "Bearer " + await self.tokens.token()} if self.tokens is not None else {}
        try:
            await self._client.post(self.url, content=body, headers={
                **self._headers("", {}), **auth, "content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> McpError:
        self.version, self.session = None, None  # probe the era again when it is back
        err = self.unavailable(f"{type(exc).__name__}: {exc}")
        return _Unreachable(err.code, err.message)

    async def _post(
        self, method: str, params: dict[str, Any], headers: dict[str, str], keep_session: bool = False,
        exchange: Exchange | None = None,
    ) -> dict[str, Any]:
        rid = self.next_id()
        body = orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        if self.tokens is not None:
            headers = {**headers, "authorization": "Bearer " + await self.tokens.token()}
        request = self._client.build_request(
            "POST", self.url, content=body, headers={**headers, **dict(outbound_headers()),
                                                     "content-type": "application/json"})
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        try:
            if response.status_code == 404 and "mcp-session-id" in headers:
                raise _SessionGone()
            if response.status_code == 401 and self.tokens is not None:
                raise _Refused()
            if keep_session:
                self.session = response.headers.get("mcp-session-id")
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            try:
                if kind == "text/event-stream":
                    message = await self._from_stream(response, rid, exchange)
                else:
                    message = orjson.loads(await response.aread())
            except (httpx.HTTPError, ValueError) as exc:
                raise self.unavailable(f"bad answer to {method} (HTTP {response.status_code}): {exc}") from None
        finally:
            await response.aclose()
        return self._unwrap(message, method, response.status_code)

    async def _from_stream(self, response: httpx.Response, rid: int, exchange: Exchange | None) -> Any:
        async for _event, data in sse_events(response.aiter_bytes()):
            try:
                message = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(message, dict):
                continue
            if "method" not in message:
                if message.get("id") == rid:
                    return message
            elif "id" not in message:
                if exchange is not None:
                    await exchange.notify(message)
            elif exchange is not None:
                await exchange.ask(message, self._reply)
            else:
                await self._reply({"jsonrpc": "2.0", "id": message["id"], "error": {
                    "code": METHOD_NOT_FOUND, "message": "not relayed by the gateway"}})
        raise ValueError("the event stream ended without the answer")

    def _unwrap(self, message: Any, method: str, status: int) -> dict[str, Any]:
        if isinstance(message, dict) and isinstance(message.get("error"), dict):
            error = message["error"]
            code = error.get("code")
            raise McpError(code if isinstance(code, int) else INTERNAL_ERROR, str(error.get("message", "error")),
                           error.get("data"))
        if status >= 400 or not isinstance(message, dict) or not isinstance(message.get("result"), dict):
            raise self.unavailable(f"{method} answered HTTP {status} without a JSON-RPC result")
        result: dict[str, Any] = message["result"]
        return result
