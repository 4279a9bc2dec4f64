"""`/mcp` and `/mcp/<server>`: MCP over Streamable HTTP for clients of both protocol eras.

Session era (up to 2025-11-25): `initialize` opens a session (`mcp-session-id`), notifications are
answered 202, `DELETE` closes the session, `GET` opens its event stream (resource updates,
`runtime.http.mcp_listen`); `logging/setLevel` sets the session's level; `resources/subscribe`
follows a resource (`runtime.mcp.subscriptions`). Stateless era (2026-07-28): every POST carries
`mcp-protocol-version`, `mcp-method` (and `mcp-name`, and the `Mcp-Param-*` headers of a tool's
marked arguments) headers and the `_meta` envelope; `server/discover` describes the gateway.
An answer is JSON, or an event stream when the client takes one and the upstream sends messages
before the answer (progress, log messages, requests of the server: `runtime.mcp.exchange`);
errors are JSON-RPC errors with the matching HTTP status."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import orjson
import trio

from sidegate.runtime.asgi import ClientGone, Receive, Scope, Send, header, read_body, respond
from sidegate.runtime.errors import GatewayError
from sidegate.runtime.governance.keys import Grant
from sidegate.runtime.guardrails.service import Guardian
from sidegate.runtime.http.access import Access
from sidegate.runtime.http.mcp_guard import ToolGuard
from sidegate.runtime.http.mcp_listen import Outbox, listen
from sidegate.runtime.http.mcp_stream import EventAnswer, accepts_events
from sidegate.runtime.http.request_guard import check_depth
from sidegate.runtime.mcp.aggregate import LISTS, View
from sidegate.runtime.mcp.exchange import LOG_LEVELS, Exchange, Pending
from sidegate.runtime.mcp.hub import Hub
from sidegate.runtime.mcp.param_headers import check_param_headers
from sidegate.runtime.mcp.permissions import permissions_for
from sidegate.runtime.mcp.protocol import (
    HANDSHAKE_VERSIONS,
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LATEST_HANDSHAKE,
    META_CLIENT_CAPS,
    META_LOG_LEVEL,
    META_SERVER_INFO,
    META_VERSION,
    METHOD_NOT_FOUND,
    MISSING_CLIENT_CAPABILITY,
    MODERN_VERSIONS,
    NAME_PARAMS,
    PARSE_ERROR,
    UNAUTHORIZED,
    UNSUPPORTED_PROTOCOL_VERSION,
    UPSTREAM_UNAVAILABLE,
    McpError,
    decode_header,
)
from sidegate.runtime.mcp.subscriptions import Subscriptions
from sidegate.runtime.observe.context import traced
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.observe.metrics import Metrics
from sidegate.runtime.routing.state import Runtime

__all__ = ["Endpoint"]

_JSON = b"application/json"
_MAX_SESSIONS = 10_000
_STATUS = {PARSE_ERROR: 400, INVALID_REQUEST: 400, INVALID_PARAMS: 400, HEADER_MISMATCH: 400,
           MISSING_CLIENT_CAPABILITY: 400, UNSUPPORTED_PROTOCOL_VERSION: 400, METHOD_NOT_FOUND: 404}
"""HTTP status of a JSON-RPC error in the stateless era (the session era answers 200)."""
SERVER_INFO = {"name": "sidegate", "version": "0.1.0"}
CAPABILITIES = {"tools": {"listChanged": False}, "prompts": {"listChanged": False},
                "resources": {"subscribe": False, "listChanged": False}, "completions": {}}
SESSION_CAPABILITIES = {**CAPABILITIES, "logging": {}, "resources": {"subscribe": True, "listChanged": False}}
"""A session's: `logging/setLevel` filters the log messages relayed to it; resources may be followed."""


@dataclass(slots=True)
class _Session:
    version: str
    capabilities: Any
    level: str | None = None
    outbox: Outbox = field(default_factory=Outbox)


_CACHEABLE = {"server/discover", "resources/read", *LISTS}
"""Results that carry caching hints at 2026-07-28 (merged lists are per caller: private, never cached)."""
_MODERN_ONLY = ("resultType", "cacheScope", "ttlMs")


def _for_era(result: dict[str, Any], method: str, modern: bool) -> None:
    """Add the fields the stateless era requires; drop them for session-era clients."""
    if not modern:
        if result.get("resultType") == "input_required":  # a 2026-07-28 server asking this client
            raise McpError(INTERNAL_ERROR, "the server asks for input (sampling, elicitation or roots) that sidegate "
                                           "cannot give a session-era client from this server; call it at 2026-07-28")
        for name in _MODERN_ONLY:
            result.pop(name, None)
        return
    result.setdefault("resultType", "complete")
    if method in _CACHEABLE:
        if method != "resources/read":
            result.update(cacheScope="private", ttlMs=0)
        result.setdefault("cacheScope", "private")
        result.setdefault("ttlMs", 0)


class Endpoint:
    """The MCP endpoint of one process (sessions are per process)."""

    def __init__(self, hub: Hub, access: Access, logger: Logger, metrics: Metrics) -> None:
        self.hub = hub
        self.access = access
        self.logger = logger
        self.metrics = metrics
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self.pending = Pending()
        """Requests of upstream servers relayed to clients, awaiting their answers."""
        self.subscriptions = Subscriptions(self._post)
        self.closing = trio.Event()
        """Set when the gateway shuts down: session event streams end (they do not hold the drain)."""
        self.guards: Guardian | None = None
        """The app's guardrails (tool calls' arguments and results)."""

    async def handle(self, rt: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request to `/mcp` or `/mcp/<server>`."""
        path: str = scope["path"].rstrip("/")
        only = path[len("/mcp/"):] if path.startswith("/mcp/") else None
        method: str = scope["method"]
        rid: Any = None
        modern = False
        streamed: EventAnswer | None = None
        try:
            grant = await self.access.authenticate(scope)
            if only is not None and only not in self.hub.upstreams:
                raise McpError(INVALID_REQUEST, f"no MCP server '{only}'", status=404)
            session = (header(scope, b"mcp-session-id") or b"").decode("latin-1")
            if method == "DELETE":
                ended = self.sessions.pop(session, None)
                if ended is not None:
                    self._end(session, ended)
                await respond(send, 200 if ended is not None else 404, b"", (), _JSON)
                return
            if method == "GET" and session and accepts_events(scope):
                await listen(self._check_session(session).outbox, receive, send, self.closing)
                return
            if method != "POST":
                await respond(send, 405, b"", [(b"allow", b"POST, DELETE")], _JSON)
                return
            raw = await read_body(scope, receive, rt.plan.server.max_body, rt.plan.server.body_timeout)
            message = self._parse(raw)
            check_depth(message, rt.plan.server.max_json_depth, raw)
            if "method" not in message or "id" not in message:  # a notification or a response
                if "method" not in message and "id" in message:  # to a request a server made
                    await self.pending.answer(session, message)
                await respond(send, 202, b"", (), _JSON)
                return
            rid = message["id"]
            params = message.get("params") or {}
            if not isinstance(params, dict):
                raise McpError(INVALID_REQUEST, "params must be an object", status=400)
            modern = self._era(scope, message["method"], params)
            extra: list[tuple[bytes, bytes]] = []
            if message["method"] == "initialize" and not modern:
                result, new = self._initialize(params, only)
                extra.append((b"mcp-session-id", new.encode()))
            else:
                known = None
                if not modern and message["method"] not in ("ping", "server/discover"):
                    known = self._check_session(session)
                view = View(self.hub, only, permissions_for(grant, {t.name: t.mcp for t in rt.plan.teams}),
                            self._down)
                streamed = EventAnswer(send) if accepts_events(scope) else None
                view.exchange = self._exchange(modern, session, known, params, streamed)
                try:
                    result = await self._dispatch(rt, view, scope, grant, message["method"], params, known)
                finally:
                    view.exchange.close()
            _for_era(result, message["method"], modern)
            answer = {"jsonrpc": "2.0", "id": rid, "result": result}
            if streamed is not None and streamed.started:
                await streamed.finish(answer)
                return
            await respond(send, 200, orjson.dumps(answer), extra, _JSON)
        except ClientGone:
            return
        except GatewayError as err:
            code = UNAUTHORIZED if err.status in (401, 403) else INVALID_REQUEST
            refusal = McpError(code, err.message).body(rid)
            await respond(send, err.status, orjson.dumps(refusal), err.headers(), _JSON)
        except McpError as err:
            status = err.status if err.status != 200 else (_STATUS.get(err.code, 200) if modern else 200)
            # An upstream server's error may quote the credentials sidegate sent it: scrubbed, capped.
            err.message = rt.scrubber.message(err.message)
            failed = orjson.loads(rt.scrubber.event(orjson.dumps(err.body(rid))))
            if streamed is not None and streamed.started:  # the status went out with the first event
                await streamed.finish(failed)
                return
            await respond(send, status, orjson.dumps(failed), (), _JSON)
        except Exception as exc:  # a bug must not become a stack trace on the wire
            self.logger.error("internal_error", route="mcp", error=repr(exc))
            failure = McpError(INTERNAL_ERROR, "internal error").body(rid)
            if streamed is not None and streamed.started:
                await streamed.finish(failure)
                return
            await respond(send, 500, orjson.dumps(failure), (), _JSON)

    def _exchange(self, modern: bool, session: str, known: _Session | None, params: dict[str, Any],
                  streamed: EventAnswer | None) -> Exchange:
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        assert isinstance(meta, dict)
        level = meta.get(META_LOG_LEVEL) if modern else (known.level if known else None)
        return Exchange(emit=streamed.emit if streamed is not None else None, legacy=not modern, session=session,
                        capabilities=known.capabilities if known else meta.get(META_CLIENT_CAPS),
                        level=level if level in LOG_LEVELS else None, progress_token=meta.get("progressToken"),
                        pending=self.pending)

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise McpError(PARSE_ERROR, "Parse error: the body is not JSON", status=400) from None
        if isinstance(message, list):
            raise McpError(INVALID_REQUEST, "JSON-RPC batches are not supported", status=400)
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise McpError(INVALID_REQUEST, "not a JSON-RPC 2.0 message", status=400)
        if "method" in message and not isinstance(message["method"], str):
            raise McpError(INVALID_REQUEST, "method must be a string", status=400)
        return message

    @staticmethod
    def _era(scope: Scope, method: str, params: dict[str, Any]) -> bool:
        """True for a stateless-era (2026-07-28) request; checks its headers against its body, in
        the specification's order: a header/body disagreement (-32020) before an unsupported
        version (-32022); a missing envelope is invalid params (-32602); the standard headers
        (`Mcp-Method`, and `Mcp-Name` when the body names a target) are required (-32020)."""
        version = (header(scope, b"mcp-protocol-version") or b"").decode("latin-1")
        meta = params.get("_meta")
        body_version = meta.get(META_VERSION) if isinstance(meta, dict) else None
        if version and version not in HANDSHAKE_VERSIONS and version not in MODERN_VERSIONS:
            raise McpError(UNSUPPORTED_PROTOCOL_VERSION, f"unsupported protocol version {version}",
                           {"supported": list(MODERN_VERSIONS), "requested": version}, status=400)
        if version not in MODERN_VERSIONS and body_version is None:
            return False
        if body_version is None:
            raise McpError(INVALID_PARAMS, f"params._meta must carry {META_VERSION} at {version}", status=400)
        if version and version != body_version:
            raise McpError(HEADER_MISMATCH, "mcp-protocol-version does not match params._meta", status=400)
        if body_version not in MODERN_VERSIONS:
            raise McpError(UNSUPPORTED_PROTOCOL_VERSION, f"unsupported protocol version {body_version}",
                           {"supported": list(MODERN_VERSIONS), "requested": body_version}, status=400)
        if not isinstance(meta, dict) or not isinstance(meta.get(META_CLIENT_CAPS), dict):
            raise McpError(INVALID_PARAMS, f"params._meta must carry {META_CLIENT_CAPS}", status=400)
        named = (header(scope, b"mcp-method") or b"").decode("latin-1")
        if not named:
            raise McpError(HEADER_MISMATCH, "the Mcp-Method header is required", status=400)
        if named != method:
            raise McpError(HEADER_MISMATCH, "mcp-method does not match the body's method", status=400)
        target = header(scope, b"mcp-name")
        key = NAME_PARAMS.get(method)
        if key is not None and params.get(key) is not None:
            if target is None:
                raise McpError(HEADER_MISMATCH, f"the Mcp-Name header is required for {method}", status=400)
            if decode_header(target.decode("latin-1")) != params.get(key):
                raise McpError(HEADER_MISMATCH, f"mcp-name does not match params.{key}", status=400)
        return True

    def _initialize(self, params: dict[str, Any], only: str | None) -> tuple[dict[str, Any], str]:
        asked = params.get("protocolVersion")
        version = asked if asked in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
        session = uuid.uuid4().hex
        self.sessions[session] = _Session(version, params.get("capabilities"))
        while len(self.sessions) > _MAX_SESSIONS:
            self._end(*self.sessions.popitem(last=False))
        says = (f"sidegate MCP gateway: the tools of several servers, named <server>{self.hub.separator}<tool>."
                if only is None else f"sidegate MCP gateway: the tools of the server '{only}', under their own names.")
        result = {"protocolVersion": version, "capabilities": SESSION_CAPABILITIES, "serverInfo": SERVER_INFO,
                  "instructions": says}
        return result, session

    def _check_session(self, session: str) -> _Session:
        if not session:
            raise McpError(INVALID_REQUEST, "Bad Request: missing mcp-session-id (send initialize first)", status=400)
        known = self.sessions.get(session)
        if known is None:
            raise McpError(INVALID_REQUEST, "Session not found", status=404)
        self.sessions.move_to_end(session)
        return known

    def _end(self, session: str, ended: _Session) -> None:
        ended.outbox.close()
        self.subscriptions.forget(session)

    def _post(self, session: str, message: dict[str, Any]) -> None:
        known = self.sessions.get(session)
        if known is not None:
            known.outbox.post(message)

    def _down(self, server: str, why: str) -> None:
        self.logger.warning("mcp_upstream_unavailable", server=server, error=why)

    async def _dispatch(
        self, rt: Runtime, view: View, scope: Scope, grant: Grant | None, method: str, params: dict[str, Any],
        session: _Session | None,
    ) -> dict[str, Any]:
        modern = view.exchange is not None and not view.exchange.legacy
        if method == "ping":
            if modern:  # removed in 2026-07-28
                raise McpError(METHOD_NOT_FOUND, "Method not found: ping (removed in 2026-07-28)")
            return {}
        if method == "logging/setLevel" and session is not None:
            if params.get("level") not in LOG_LEVELS:
                raise McpError(INVALID_PARAMS, f"params.level must be one of {', '.join(LOG_LEVELS)}")
            session.level = params["level"]
            return {}
        if method in ("resources/subscribe", "resources/unsubscribe") and session is not None:
            assert view.exchange is not None
            upstream, own, _ = view.route("resources/read", params)
            if method == "resources/subscribe":
                await self.subscriptions.subscribe(upstream, own, params["uri"], view.exchange.session, view.exchange)
            else:
                await self.subscriptions.unsubscribe(upstream, own, view.exchange.session, view.exchange)
            return {}
        if method == "server/discover":
            return {"supportedVersions": list(MODERN_VERSIONS), "capabilities": CAPABILITIES,
                    "_meta": {META_SERVER_INFO: SERVER_INFO}}
        if method in LISTS:
            return await view.list(method, params)
        if method == "tools/call":
            return await self._call_tool(rt, view, grant, params, scope if modern else None)
        if method == "prompts/get":
            upstream, _, forward = view.route(method, params)
            return await upstream.request(method, forward, view.exchange)
        if method == "resources/read":
            return await view.read(params)
        if method == "completion/complete":
            return await view.complete(params)
        raise view.unknown(method)

    async def _call_tool(self, rt: Runtime, view: View, grant: Grant | None, params: dict[str, Any],
                         modern: Scope | None) -> dict[str, Any]:
        t0 = perf_counter()
        key = grant.name if grant else None
        guard = ToolGuard(self.guards, grant)
        server, tool, status = "-", "-", "error"
        result: dict[str, Any] | None = None
        try:
            try:
                upstream, tool, forward = view.route("tools/call", params)
            except McpError:
                status = "denied"
                raise
            server = upstream.name
            if modern is not None:  # the client's Mcp-Param-* headers, checked as the server would
                sent = {k.decode("latin-1"): v.decode("latin-1") for k, v in modern["headers"]
                        if k.startswith(b"mcp-param-")}
                why = check_param_headers(upstream.param_bindings.get(tool, ()), params.get("arguments"), sent)
                if why is not None:
                    status = "denied"
                    raise McpError(HEADER_MISMATCH, why, status=400)
            status = "blocked"
            await guard.arguments(forward)
            status = "error"
            with traced("tool", tool, **{"sidegate.mcp.server": server}) as span:
                result = await upstream.request("tools/call", forward, view.exchange)
                span.note(**{"sidegate.mcp.is_error": bool(result.get("isError"))})
            status = "blocked"
            await guard.result(result)
            status = "tool_error" if result.get("isError") else "ok"
            return result
        except McpError as err:
            if err.code == UPSTREAM_UNAVAILABLE:
                status = "unavailable"
            raise
        finally:
            elapsed = perf_counter() - t0
            label = tool if server == "-" or tool in view.hub.upstreams[server].tools else "other"
            self.metrics.mcp_calls.labels(server, label, status).inc()
            if server != "-":
                self.metrics.mcp_latency.labels(server).observe(elapsed)
            extra: dict[str, object] = {}
            if rt.plan.observability.logs.bodies:
                extra = {"arguments": params.get("arguments"), "result": result}
            self.logger.info("mcp_call", server=server, tool=tool, status=status, key=key,
                             latency_ms=round(elapsed * 1000, 2), **extra, **guard.extra)
