"""The Realtime API: `GET /v1/realtime?model=<name>` (or Azure's `/openai/realtime?deployment=<name>`)
upgraded to a WebSocket (an ASGI `websocket` scope, from `runtime.h1_ws` or hypercorn) and relayed
to the model group's OpenAI or Azure realtime deployment.

Before the upgrade is accepted: the caller's key (`Authorization: Bearer`, as the openai SDK sends
it), the model, the key's permissions, limits and budgets (`Access.admit`: one session is one
request in flight), `realtime.max_sessions_per_key`, and the upstream's own handshake (a deployment
that cannot be reached or answers 429/5xx is passed over for the next); any refusal is an HTTP error
in OpenAI's envelope. Then events are relayed both ways as they arrive (audio is never gathered),
each `response.done` metered into a spend row and the key's tpm and budgets
(`runtime.http.realtime_meter`). The session ends, both sides closed, when either side closes (the
other is closed with the same code), at `realtime.max_duration` or a spent budget (an `error` event,
then 1008), or when the shutdown drain starts (1001).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any
from urllib.parse import parse_qs

import orjson
import trio

from sidegate.runtime.asgi import Receive, Scope, Send, header
from sidegate.runtime.errors import (
    BadRequest,
    GatewayError,
    ModelNotFound,
    NotFound,
    RateLimited,
    from_exception,
    openai_body,
)
from sidegate.runtime.governance.gate import Admission
from sidegate.runtime.http.access import Access
from sidegate.runtime.http.realtime_meter import Meter
from sidegate.runtime.http.request_guard import HostRule, check_browser_origin
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.observe.metrics import Metrics
from sidegate.runtime.routing.relay import classify
from sidegate.runtime.routing.state import Deployment, Runtime
from sidegate.runtime.upstream.realtime_ws import REALTIME_FAMILIES, connect_realtime, realtime_url
from sidegate.runtime.upstream.urlpath import check_model_name
from sidegate.runtime.websocket import Closed, Socket

__all__ = ["RealtimeGateway"]

_PATHS = {"/v1/realtime": "model", "/realtime": "model", "/openai/realtime": "deployment"}
"""Where sessions are opened, and the query parameter naming the model (Azure's clients: `deployment`)."""
_CLEANUP = 2.0
"""Seconds the closing handshakes may take once a session is over."""


def _sendable(code: int) -> bool:
    """Whether a close code may be sent on the wire (1005, 1006 and 1015 only report)."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1011 or 3000 <= code <= 4999


@dataclass(slots=True)
class _Session:
    request_id: str
    key: str
    admission: Admission
    deployment: Deployment
    upstream: Socket
    meter: Meter
    end: str = ""
    """Why it ended: `client`, `upstream`, `deadline`, `budget` or `drain`."""
    code: int = 1000
    reason: str = ""

    def finish(self, why: str, code: int = 1000, reason: str = "") -> None:
        if not self.end:
            self.end, self.code, self.reason = why, code, reason


class RealtimeGateway:
    """Opens, relays and closes realtime sessions; counts the sessions each key holds open."""

    def __init__(self, access: Access, logger: Logger, metrics: Metrics) -> None:
        self.access = access
        self.logger = logger
        self.metrics = metrics
        self.open: dict[str, int] = {}
        """Key hash ('' without auth) -> sessions open."""
        self.closing: trio.Event | None = None
        """Set when the shutdown drain starts (`runtime.server`): every session closes with 1001."""

    async def handle(self, rt: Runtime, hosts: HostRule, scope: Scope, receive: Receive, send: Send,
                     health_port: int | None = None) -> None:
        """Serve one websocket scope from connect to close (none on the health listener's `health_port`)."""
        if (await receive())["type"] != "websocket.connect":
            return
        rid = (header(scope, b"x-request-id") or b"").decode("latin-1")[:128] or uuid.uuid4().hex
        t0 = perf_counter()
        try:
            if health_port is not None and (scope.get("server") or ("", 0))[1] == health_port:
                raise NotFound("the health listener answers only the health routes")
            check_browser_origin(scope, hosts)
            session = await self._open(rt, scope, rid)
        except Exception as exc:
            err = from_exception(exc)
            if err.code == "internal_error":
                self.logger.error("internal_error", request_id=rid, path=scope.get("path"), error=repr(exc))
            self.logger.info("realtime_session", request_id=rid, status=err.status, error=err.message)
            await _refuse(scope, send, err, rid)
            return
        group = session.meter.group
        in_flight = self.metrics.in_flight.labels(group)
        in_flight.inc()
        try:
            await self._relay(rt, session, scope, receive, send)
        finally:
            with trio.CancelScope(shield=True):  # closed already, unless the relay failed or was cancelled
                await trio.aclose_forcefully(session.upstream.stream)
            in_flight.dec()
            self._release(session)
            m = session.meter
            self.metrics.requests.labels(group, m.deployment, "101").inc()
            self.logger.info("realtime_session", request_id=rid, group=group, deployment=m.deployment, status=101,
                             duration_ms=round((perf_counter() - t0) * 1000, 2), responses=m.responses,
                             prompt_tokens=m.prompt, completion_tokens=m.completion, cost=round(m.cost, 8),
                             ended=session.end or "cancelled", close_code=session.code)

    async def _open(self, rt: Runtime, scope: Scope, rid: str) -> _Session:
        param = _PATHS.get(scope["path"])
        if param is None:
            raise NotFound(f"no WebSocket route for {scope['path']} (realtime sessions open on /v1/realtime)")
        grant = await self.access.authenticate(scope)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        model = (query.get(param) or [""])[0]
        if not model:
            raise BadRequest(f"'{param}' is required in the query string (/v1/realtime?model=...)", param=param)
        check_model_name(model, param)
        route = rt.routes.resolve(model)
        if route is None:
            raise ModelNotFound(f"model '{model}' is not served by this gateway", param=param)
        group = route.group
        deployments = [d for d in rt.deployments.get(group.name, ()) if d.provider.family in REALTIME_FAMILIES]
        if not deployments:
            raise BadRequest(f"model '{model}' has no OpenAI or Azure deployment, which realtime sessions need",
                             param=param, code="realtime_unsupported")
        key = grant.hash if grant is not None else ""
        cap = rt.plan.realtime.max_sessions_per_key
        if cap is not None and self.open.get(key, 0) >= cap:
            raise RateLimited(f"this key has {cap} realtime sessions open, the most it may "
                              "(realtime.max_sessions_per_key)", code="too_many_sessions", retry_after=None)
        self.open[key] = self.open.get(key, 0) + 1
        admission: Admission | None = None
        try:
            admission = await self.access.admit(grant, group.name, None, None, "realtime", rid)
            dep, upstream = await _connect(rt, deployments, route.suffix or model, scope, rid, self.logger.warning)
        except BaseException:
            self._count_down(key)
            if admission is not None:
                self._settle(admission)
            raise
        meter = Meter(rid, group.name, dep.target.id, dep.target.price, admission, self.access.gate,
                      self.access.spend, self.logger, self.metrics)
        return _Session(rid, key, admission, dep, upstream, meter)

    async def _relay(self, rt: Runtime, s: _Session, scope: Scope, receive: Receive, send: Send) -> None:
        protocols = scope.get("subprotocols") or ()
        await send({"type": "websocket.accept", "subprotocol": "realtime" if "realtime" in protocols else None,
                    "headers": [(b"x-request-id", s.request_id.encode()),
                                (b"x-sidegate-deployment", s.deployment.target.id.encode())]})
        limit = rt.plan.realtime.max_duration
        async with trio.open_nursery() as nursery:
            nursery.cancel_scope.deadline = trio.current_time() + limit
            nursery.start_soon(_client_side, s, receive, nursery.cancel_scope)
            nursery.start_soon(_upstream_side, s, send, nursery.cancel_scope)
            if self.closing is not None:
                nursery.start_soon(_drain_watch, s, self.closing, nursery.cancel_scope)
        s.finish("deadline", 1008, f"the session reached its {limit:g}s limit (realtime.max_duration)")
        with trio.CancelScope(shield=True), trio.move_on_after(_CLEANUP):
            await _close(s, send)

    def _count_down(self, key: str) -> None:
        left = self.open.get(key, 1) - 1
        if left > 0:
            self.open[key] = left
        else:
            self.open.pop(key, None)

    def _settle(self, admission: Admission) -> None:
        """Release the session's counters (its spend was counted response by response)."""
        if admission.remote is not None:
            self.access.budgets.settle_nowait(admission.remote, 0.0)
        self.access.gate.settle(admission, self.access.gate.wall(), None, 0.0)

    def _release(self, s: _Session) -> None:
        self._count_down(s.key)
        self._settle(s.admission)


async def _connect(rt: Runtime, deployments: list[Deployment], requested: str, scope: Scope, rid: str,
                   log: Callable[..., None]) -> tuple[Deployment, Socket]:
    """The first deployment (those whose breaker is closed first) whose realtime endpoint accepts."""
    now = trio.current_time()
    ordered = sorted(deployments, key=lambda d: not d.state.breaker.available(now))
    beta = header(scope, b"openai-beta")
    last: GatewayError | None = None
    for dep in ordered:
        model = requested if dep.target.model == "*" else dep.target.model
        headers = [(k, v) for k, v in dep.headers if k.lower() != "content-type"]
        if beta is not None:
            headers.append(("openai-beta", beta.decode("latin-1")))
        provider = dep.provider
        try:
            socket = await connect_realtime(
                realtime_url(provider, model), headers, connect_timeout=provider.connect_timeout,
                handshake_timeout=provider.first_byte_timeout or dep.group.timeout,
                max_message=rt.plan.realtime.max_message)
        except GatewayError as err:
            dep.scrubber.error(err)  # whatever the upstream said, it never carries a secret past here
            kind, now = classify(err), trio.current_time()
            if kind is not None:
                dep.state.breaker.failure(now, kind, dep.group.cooldown, err.retry_after, error=err.message,
                                          last=dep.last_available(now))
            log("upstream_attempt_failed", request_id=rid, group=dep.group.name, deployment=dep.target.id,
                op="realtime", upstream_status=err.upstream_status, status=err.status, code=err.code,
                error=err.message)
            if err.status < 500 and err.status != 429:
                raise
            last = err
            continue
        dep.state.breaker.success(trio.current_time(), dep.group.cooldown)
        return dep, socket
    assert last is not None
    raise last


async def _client_side(s: _Session, receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message: Any = await receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            if not await s.upstream.send(text if text is not None else bytes(message.get("bytes") or b"")):
                closed = s.upstream.closed
                s.finish("upstream", closed.code if closed else 1006, closed.reason if closed else "")
                break
        elif message["type"] == "websocket.disconnect":
            s.finish("client", int(message.get("code", 1005)), str(message.get("reason") or ""))
            break
    scope.cancel()


async def _upstream_side(s: _Session, send: Send, scope: trio.CancelScope) -> None:
    while True:
        message = await s.upstream.receive()
        if isinstance(message, Closed):
            s.finish("upstream", message.code, message.reason)
            break
        spent = s.meter.upstream_event(message)
        try:
            await send({"type": "websocket.send", "text": message} if isinstance(message, str)
                       else {"type": "websocket.send", "bytes": message})
        except Exception:  # the client's connection is gone (its disconnect ends the session)
            s.finish("client", 1006, "connection lost")
            break
        if spent:
            s.finish("budget", 1008, "the key's budget is spent")
            break
    scope.cancel()


async def _drain_watch(s: _Session, closing: trio.Event, scope: trio.CancelScope) -> None:
    await closing.wait()
    s.finish("drain", 1001, "the gateway is shutting down")
    scope.cancel()


def _error_event(code: str, message: str) -> str:
    """A realtime `error` server event, as OpenAI sends it before closing a session."""
    return orjson.dumps({"type": "error", "event_id": f"event_{uuid.uuid4().hex[:20]}", "error": {
        "type": "invalid_request_error", "code": code, "message": message, "param": None, "event_id": None,
    }}).decode()


async def _close(s: _Session, send: Send) -> None:
    """Close what is still open: the other side of the one that left, or both."""
    upstream, why = s.upstream, s.end
    try:
        if why in ("deadline", "budget"):
            code = "session_expired" if why == "deadline" else "budget_exceeded"
            await send({"type": "websocket.send", "text": _error_event(code, s.reason)})
        if why != "client":
            if why == "upstream":
                code_out = s.code if _sendable(s.code) else 1011
                reason = s.reason if _sendable(s.code) else "the realtime upstream's connection was lost"
            else:
                code_out, reason = s.code, s.reason
            await send({"type": "websocket.close", "code": code_out, "reason": reason[:120]})
    except Exception:  # the client's connection is already gone
        pass
    if why != "upstream":
        await upstream.close(1001 if why == "drain" else s.code if why == "client" and _sendable(s.code) else 1000)
    await upstream.finish()


async def _refuse(scope: Scope, send: Send, err: GatewayError, rid: str) -> None:
    """Answer a session that is not opened: an HTTP error before the upgrade (where the server
    offers `websocket.http.response`), else a close (403)."""
    body = openai_body(err)
    if "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"x-request-id", rid.encode()), *err.headers()]
        await send({"type": "websocket.http.response.start", "status": err.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": err.message[:120]})
