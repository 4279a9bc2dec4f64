"""The A2A surface: `GET /a2a/agents`, and per agent `/a2a/{agent}` — its rewritten card at
`/.well-known/agent-card.json`, JSON-RPC at the agent path, HTTP+JSON under `/rest` — with
authentication, agent permissions, logging and metrics. Errors sidegate itself raises are
JSON-RPC error objects (HTTP+JSON error objects on the REST mount), with the right status; a
malformed JSON-RPC call (-32700, -32600) is answered with 200 and its id, as agents answer it."""

from __future__ import annotations

import math
import uuid
from time import perf_counter
from typing import Any, Protocol

import httpx
import orjson
import trio

from sidegate.runtime.a2a.card import JSONRPC, Card, CardError, etag_of, parse_card, rewrite_card
from sidegate.runtime.a2a.metrics import EXTENDED_CARD_METHODS, A2AMetrics, method_label, rest_method_label
from sidegate.runtime.a2a.permissions import allowed
from sidegate.runtime.a2a.registry import AgentState, Registry
from sidegate.runtime.a2a.relay import UpstreamFailed, relay
from sidegate.runtime.asgi import ClientGone, Receive, Scope, Send, header, read_body, respond
from sidegate.runtime.errors import GatewayError
from sidegate.runtime.governance.keys import Grant
from sidegate.runtime.observe.context import traced
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.plan import A2APolicy
from sidegate.runtime.routing.state import Runtime

__all__ = ["A2AGateway"]

_JSON = b"application/json"
_CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")
_REST_CARD_PATHS = ("/extendedAgentCard", "/v1/card")
_GATEWAY_ERROR = -32000
"""JSON-RPC code of errors sidegate raises itself (the implementation-defined server-error range;
A2A's own codes -32001.. are left to the agents). `error.data.reason` says which."""
_REST_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                405: "UNIMPLEMENTED", 413: "INVALID_ARGUMENT", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
                504: "DEADLINE_EXCEEDED"}


class Authenticator(Protocol):
    """What the endpoint needs from the app's governance (runtime.http.access.Access)."""

    async def authenticate(self, scope: Scope) -> Grant | None: ...


class A2AError(Exception):
    """An error sidegate answers itself; `rpc_id` is the JSON-RPC id it answers, when it read one."""

    def __init__(self, status: int, reason: str, message: str, code: int = _GATEWAY_ERROR,
                 rpc_id: Any = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.code, self.rpc_id = status, reason, message, code, rpc_id


class _Call:
    __slots__ = ("agent", "error", "method", "status", "t0")

    def __init__(self) -> None:
        self.agent, self.method, self.status, self.error, self.t0 = "unknown", "other", 0, "", perf_counter()


class A2AGateway:
    """Registry, relay and accounting for the agents of the plan being served."""

    def __init__(self, runtime: Runtime, logger: Logger, metrics: A2AMetrics) -> None:
        self.logger = logger
        self.metrics = metrics
        self.registry = Registry(logger)
        self.client: httpx.AsyncClient | None = None
        self._client_made = trio.Event()
        self.teams: dict[str, A2APolicy] = {}
        self.max_body = runtime.plan.server.max_body
        self.configure(runtime)

    def configure(self, runtime: Runtime) -> None:
        """Serve a (re)loaded plan's agents and team policies."""
        plan = runtime.plan
        self.registry.configure(plan.a2a.agents if plan.a2a else (), runtime.a2a_headers)
        self.teams = {t.name: t.a2a for t in plan.teams if t.a2a is not None}
        self.max_body = plan.server.max_body

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the upstream client and refresh cards until cancelled. The client is made once the plan
        has agents (at start, or on the reload that brings the first): the first httpx client of a
        process loads httpcore's backends and a TLS context, ~9 MB and ~0.1 s that a sidecar without
        agents never spends."""
        task_status.started()
        await self.registry.until_agents()
        # httpx loads its TLS context from disk: build it off the loop.
        client = await trio.to_thread.run_sync(lambda: httpx.AsyncClient(follow_redirects=False, trust_env=False))
        self.client = client
        self._client_made.set()
        try:
            await self.registry.run(client)
        finally:
            self.client = None
            with trio.CancelScope(shield=True):
                await client.aclose()

    def ready_detail(self) -> dict[str, object]:
        """Per-agent health for `/health/ready`."""
        now = trio.current_time()
        return {name: s.report(now) for name, s in sorted(self.registry.agents.items())}

    def observe(self) -> None:
        """Refresh the health gauges (at scrape time)."""
        self.metrics.observe(self.registry)

    async def handle(self, scope: Scope, receive: Receive, send: Send, access: Authenticator) -> None:
        """Answer one request under `/a2a`."""
        call = _Call()
        rid = (header(scope, b"x-request-id") or b"").decode("latin-1") or uuid.uuid4().hex
        rest = False
        rpc_id: Any = None
        try:
            path: str = scope["path"]
            name, _, tail = path.removeprefix("/a2a/").partition("/")
            tail = "/" + tail if tail or path.endswith("/") else ""
            rest = tail.startswith("/rest")  # errors before the mount is known use its dialect too
            try:
                grant = await _authenticate(access, scope)
            except A2AError:
                if not rest and scope["method"] == "POST":  # a JSON-RPC refusal answers the call's id
                    rpc_id = await self._peek_id(scope, receive)
                raise
            if path in ("/a2a", "/a2a/", "/a2a/agents") and scope["method"] == "GET":
                call.method = "list"
                await self._list(grant, send)
                call.status = 200
                return
            body = b""
            if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
                body = await read_body(scope, receive, self.max_body)
                if not tail.startswith("/rest"):  # JSON-RPC: answer even early errors with the call's id
                    rpc_id, method = _rpc_peek(body)
                    call.method = method_label(method)
            state = self.registry.agents.get(name)
            if state is None:
                raise A2AError(404, "AGENT_NOT_FOUND", f"no agent named '{name}' is served at /a2a/")
            call.agent = name
            if not allowed(grant, name, self.teams):
                raise A2AError(403, "AGENT_FORBIDDEN", f"this key may not call agent '{name}'")
            if tail in _CARD_PATHS and scope["method"] == "GET":
                call.method = "card"
                call.status = await self._card(state, scope, send)
                return
            card = await state.first_card()
            if card is None:
                raise A2AError(503, "AGENT_UNAVAILABLE", f"agent '{name}' is unavailable: {state.error}")
            mount = card.mount(tail)
            if mount is None:
                raise A2AError(404, "NOT_FOUND", f"agent '{name}' has no interface at {path}")
            if mount.binding == JSONRPC:
                if scope["method"] != "POST":
                    raise A2AError(405, "METHOD_NOT_ALLOWED", "JSON-RPC calls are POST requests")
                rpc_id, method = _rpc_head(body)
                call.method = method_label(method)
                url = mount.upstream
                http_method = "POST"
                extended = method in EXTENDED_CARD_METHODS
                rewrite = _card_rewriter(card, _public(scope, name), rpc=True) if extended else None
            else:
                rest = True
                sub = tail[len(mount.suffix):]
                call.method = rest_method_label(scope["method"], sub)
                query = scope.get("query_string", b"").decode("latin-1")
                url = mount.upstream.rstrip("/") + sub + (f"?{query}" if query else "")
                http_method = scope["method"]
                extended = sub.endswith(_REST_CARD_PATHS)
                rewrite = _card_rewriter(card, _public(scope, name), rpc=False) if extended else None
            await self._relay(state, call, http_method, url, body, scope, receive, send, rewrite)
        except ClientGone:
            call.status = 499
        except A2AError as err:
            call.status = err.status
            if not rest and err.code != _GATEWAY_ERROR:  # a JSON-RPC protocol error, answered with 200
                call.error = str(err.code)
            await _error(send, err, rpc_id if err.rpc_id is None else err.rpc_id, rest, rid)
        except GatewayError as err:  # authentication, body too large, bad content-length
            call.status = err.status
            reason = "UNAUTHENTICATED" if err.status == 401 else "INVALID_REQUEST"
            await _error(send, A2AError(err.status, reason, err.message), rpc_id, rest, rid)
        finally:
            self._account(call, rid)

    async def _relay(self, state: AgentState, call: _Call, method: str, url: str, body: bytes, scope: Scope,
                     receive: Receive, send: Send, rewrite: Any) -> None:
        if self.client is None:  # the plan's first agents came with a reload a moment ago
            await self._client_made.wait()
        assert self.client is not None
        try:
            with traced("relay", state.agent.name, **{"http.request.method": method}) as span:
                outcome = await relay(self.client, state.agent, state.headers, method, url, body, scope, receive,
                                      send, rewrite)
                span.note(**{"http.response.status_code": outcome.status})
        except UpstreamFailed as exc:
            if exc.status == 502:
                self.registry.call_failed(state, exc.message)
            raise A2AError(exc.status, "AGENT_UNAVAILABLE" if exc.status == 502 else "AGENT_TIMEOUT",
                           f"agent '{state.agent.name}': {exc.message}") from None
        call.status = outcome.status
        if outcome.body is not None and outcome.body[:1] == b"{" and b'"error"' in outcome.body:
            call.error = _rpc_error_code(outcome.body)
        if outcome.broken:
            call.error = "broken"
            self.logger.warning("a2a_stream_broken", agent=state.agent.name, error=outcome.broken)
        if outcome.status < 500 and not state.healthy:
            state.mark_up(trio.current_time())

    async def _peek_id(self, scope: Scope, receive: Receive) -> Any:
        """The id of the JSON-RPC call in the request body, if the body is one (else None)."""
        try:
            body = await read_body(scope, receive, self.max_body)
        except GatewayError:
            return None
        return _rpc_peek(body)[0]

    async def _list(self, grant: Grant | None, send: Send) -> None:
        now = trio.current_time()
        agents = []
        for name, s in sorted(self.registry.agents.items()):
            if allowed(grant, name, self.teams):
                entry: dict[str, Any] = {"name": name, "url": f"/a2a/{name}", **s.report(now)}
                entry["card"] = s.card.summary() if s.card is not None else None
                agents.append(entry)
        await respond(send, 200, orjson.dumps({"agents": agents}), (), _JSON)

    async def _card(self, state: AgentState, scope: Scope, send: Send) -> int:
        card = await state.first_card()
        if card is None:
            raise A2AError(503, "AGENT_UNAVAILABLE", f"agent '{state.agent.name}' is unavailable: {state.error}")
        public = _public(scope, state.agent.name)
        body = state.served.get(public)
        if body is None:
            if len(state.served) > 16:  # bounded: one entry per Host the clients use
                state.served.clear()
            body = state.served[public] = card.rewritten(public)
        etag = etag_of(body).encode()
        # Cacheable until sidegate fetches the agent's card again (it cannot change before then).
        left = state.next_fetch - trio.current_time()
        cache = (b"cache-control", b"max-age=%d" % (int(left) if math.isfinite(left) and left > 0 else 0))
        if header(scope, b"if-none-match") in (etag, b"W/" + etag):
            await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", etag), cache]})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return 304
        await respond(send, 200, body, [(b"etag", etag), cache], _JSON)
        return 200

    def _account(self, call: _Call, rid: str) -> None:
        elapsed = perf_counter() - call.t0
        self.metrics.calls.labels(call.agent, call.method, str(call.status), call.error).inc()
        self.metrics.latency.labels(call.agent, call.method).observe(elapsed)
        self.logger.info("a2a_call", request_id=rid, agent=call.agent, method=call.method, status=call.status,
                         latency_ms=round(elapsed * 1000, 2), **({"error": call.error} if call.error else {}))


async def _authenticate(access: Authenticator, scope: Scope) -> Grant | None:
    try:
        return await access.authenticate(scope)
    except GatewayError as err:
        raise A2AError(err.status, "UNAUTHENTICATED", err.message) from None


def _public(scope: Scope, name: str) -> str:
    """sidegate's own address for `name`, as the client reached it."""
    host = header(scope, b"host")
    if host is None:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}".encode()
    return f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}/a2a/{name}"


def _rpc_head(body: bytes) -> tuple[Any, Any]:
    """(id, method) of a JSON-RPC request; parse and shape errors answered the JSON-RPC way: with
    HTTP 200, as agents answer them, and the request's id when it has a usable one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise A2AError(200, "PARSE_ERROR", "the request body is not JSON", code=-32700) from None
    rpc_id = data.get("id") if isinstance(data, dict) else None
    rpc_id = rpc_id if isinstance(rpc_id, str | int) and not isinstance(rpc_id, bool) else None
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise A2AError(200, "INVALID_REQUEST", "expected a JSON-RPC 2.0 request object with a method", code=-32600,
                       rpc_id=rpc_id)
    return rpc_id, data["method"]


def _rpc_peek(body: bytes) -> tuple[Any, Any]:
    """(id, method) when the body is a JSON-RPC request, else (its id if any, None): for early errors."""
    try:
        return _rpc_head(body)
    except A2AError as err:
        return err.rpc_id, None


def _rpc_error_code(body: bytes) -> str:
    try:
        data = orjson.loads(body)
        code = data["error"]["code"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ""
    return str(code) if isinstance(code, int) else ""


def _card_rewriter(card: Card, public: str, *, rpc: bool) -> Any:
    """Rewrite the card inside an answer (extended card) to point at sidegate too."""

    def rewrite(body: bytes) -> bytes:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        target = data.get("result") if rpc and isinstance(data, dict) else data
        if not isinstance(target, dict):
            return body
        try:
            parsed = parse_card(orjson.dumps(target))
        except CardError:
            parsed = None
        if parsed is None:  # nothing sidegate can point at itself: keep no upstream address
            for key in ("supportedInterfaces", "url", "additionalInterfaces"):
                target.pop(key, None)
        else:
            fixed = rewrite_card(Card(data=parsed.data, mounts=card.mounts, skills=(), by_upstream=card.by_upstream),
                                 public)
            for key in ("supportedInterfaces", "url", "additionalInterfaces", "preferredTransport"):
                if key in fixed:
                    target[key] = fixed[key]
        return orjson.dumps(data)

    return rewrite


async def _error(send: Send, err: A2AError, rpc_id: Any, rest: bool, rid: str) -> None:
    if rest:
        body = orjson.dumps({"error": {"code": err.status, "status": _REST_STATUS.get(err.status, "UNKNOWN"),
                                       "message": err.message}})
    else:
        body = orjson.dumps({"jsonrpc": "2.0", "id": rpc_id,
                             "error": {"code": err.code, "message": err.message, "data": {"reason": err.reason}}})
    await respond(send, err.status, body, [(b"x-request-id", rid.encode())], _JSON)

