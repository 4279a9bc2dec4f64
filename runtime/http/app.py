"""The ASGI application: the HTTP surface and the one boundary where errors become responses."""

from __future__ import annotations

import time
from time import perf_counter
from typing import TYPE_CHECKING

import orjson
import trio

from sidegate.runtime.a2a.metrics import A2AMetrics
from sidegate.runtime.asgi import ClientGone, Receive, Scope, Send, header, new_request_id, read_body, respond
from sidegate.runtime.cache.metrics import CacheMetrics
from sidegate.runtime.cache.service import ResponseCache
from sidegate.runtime.errors import GatewayError, ModelNotFound, NotFound, Unavailable, from_exception, openai_body
from sidegate.runtime.guardrails.service import Guardian
from sidegate.runtime.http.a2a_endpoint import A2AGateway
from sidegate.runtime.http.access import ADMIN_ROUTES, Access
from sidegate.runtime.http.anthropic.count_tokens import count_input_tokens
from sidegate.runtime.http.anthropic.dialect import MessagesDialect, client_headers, parse_messages
from sidegate.runtime.http.anthropic.messages import anthropic_error_body
from sidegate.runtime.http.files import FilesApi
from sidegate.runtime.http.gemini.dialect import google_error_body, is_gemini, parse_gemini
from sidegate.runtime.http.guarded import configure_guards, guard_answer
from sidegate.runtime.http.mcp_endpoint import Endpoint
from sidegate.runtime.http.media import MEDIA_OPS, MEDIA_ROUTES, read_media
from sidegate.runtime.http.passthrough import Passthrough, passthrough_route
from sidegate.runtime.http.realtime import RealtimeGateway
from sidegate.runtime.http.request_guard import (
    HostRule,
    check_browser_origin,
    check_depth,
    check_head_size,
    check_unauthenticated_post,
)
from sidegate.runtime.http.responses import prepare, stored
from sidegate.runtime.mcp.hub import Hub
from sidegate.runtime.observe.context import CURRENT
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.observe.metrics import Metrics
from sidegate.runtime.routing.call import Call, cancel_on_disconnect, parse_request
from sidegate.runtime.routing.model_list import anthropic_model, wants_anthropic
from sidegate.runtime.routing.relay import stream_error
from sidegate.runtime.routing.state import Runtime, deployments_report, model_card, observe_deployments
from sidegate.runtime.store.database import STORE_ERRORS, Store
from sidegate.runtime.upstream import tokens

if TYPE_CHECKING:
    from sidegate.runtime.observe.telemetry import Telemetry

__all__ = ["App"]

_JSON = b"application/json"
_LIVE = frozenset({"/health/live", "/health/liveliness", "/health/liveness"})
_READY = frozenset({"/health/ready", "/health/readiness", "/health"})
"""sidegate's probe routes and LiteLLM's names for them (a migrated deployment's probes keep working)."""
_POST = {"/chat/completions": "chat", "/completions": "completions", "/embeddings": "embeddings",
         "/messages": "messages", "/messages/count_tokens": "count_tokens", "/responses": "responses", **MEDIA_ROUTES}


class App:
    """sidegate's ASGI app. `runtime` is swapped whole on reload; each request keeps the one it
    started with."""

    def __init__(self, runtime: Runtime, logger: Logger, metrics: Metrics, telemetry: Telemetry | None = None) -> None:
        self.runtime = runtime
        self.telemetry = telemetry
        """OpenTelemetry (`observability.tracing` at start); None: no span, no trace id, nothing loaded."""
        self.logger = logger
        logger.scrubber = runtime.scrubber
        self.metrics = metrics
        self.store: Store | None = None
        self.health_port: int | None = None
        """The bound port of the health listener (`server.health_listen`), when there is one."""
        self.access = Access(runtime, logger, metrics)
        self.cache = ResponseCache(logger, CacheMetrics(metrics.registry), lambda: self.store)
        self.cache.configure(runtime)
        self.access.cache_purge = self.cache.purge
        self.files = FilesApi(self.access, logger)
        self.guards = Guardian(logger, metrics.registry)
        configure_guards(self.guards, runtime)
        self.a2a = A2AGateway(runtime, logger, A2AMetrics(metrics.registry))
        self.mcp = Hub(on_event=logger.warning)
        self.mcp.configure(runtime.mcp_servers, runtime.plan.mcp.separator if runtime.plan.mcp else "__")
        self.mcp_endpoint = Endpoint(self.mcp, self.access, logger, metrics)
        self.realtime = RealtimeGateway(self.access, logger, metrics)
        self.mcp_endpoint.guards = self.guards
        metrics.set_plan(runtime.digest)
        self.hosts = HostRule(runtime.plan)
        self.passthrough = Passthrough(self.access, self._account, logger.warning)

    def swap(self, runtime: Runtime) -> None:
        """Serve a new plan from the next request on."""
        self.runtime = runtime
        self.logger.scrubber = runtime.scrubber
        self.hosts = HostRule(runtime.plan)
        self.access.configure(runtime)
        self.cache.configure(runtime)
        configure_guards(self.guards, runtime)
        self.a2a.configure(runtime)
        self.mcp.configure(runtime.mcp_servers, runtime.plan.mcp.separator if runtime.plan.mcp else "__")
        self.metrics.set_plan(runtime.digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":  # the Realtime API (runtime.http.realtime)
            await self.realtime.handle(self.runtime, self.hosts, scope, receive, send, self.health_port)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if self.health_port is not None and (scope.get("server") or ("", 0))[1] == self.health_port:
            await self._health_only(scope, send)
            return
        try:
            check_head_size(scope, self.runtime.plan.server.max_header_size)
            check_browser_origin(scope, self.hosts)
            if scope["method"] == "POST" and self.runtime.plan.auth is None:
                check_unauthenticated_post(scope, self.hosts)
        except GatewayError as refused:
            body = anthropic_error_body(refused) if path.startswith("/v1/messages") else openai_body(refused)
            await respond(send, refused.status, body, (), _JSON)
            return
        a2a = path == "/a2a" or path.startswith("/a2a/")
        if a2a or path == "/mcp" or path.startswith("/mcp/"):
            token = None if self.telemetry is None else CURRENT.set(self.telemetry.incoming(scope))
            try:
                if a2a:
                    await self.a2a.handle(scope, receive, send, self.access)
                else:
                    await self.mcp_endpoint.handle(self.runtime, scope, receive, send)
            finally:
                if token is not None:
                    CURRENT.reset(token)
            return
        if (route := passthrough_route(self.runtime, path)) is not None:
            return await self.passthrough.handle(self.runtime, route, scope, receive, send)
        if is_gemini(scope["method"], path):
            return await self._model_call("generate_content", scope, receive, send)
        if path.startswith("/v1/"):
            path = path[3:]
        method: str = scope["method"]
        op = _POST.get(path)
        if op is not None and method == "POST" and op != "count_tokens":
            await self._model_call(op, scope, receive, send)
            return
        rid = (header(scope, b"x-request-id") or b"").decode("latin-1") or new_request_id()
        try:
            if path.startswith("/responses/"):
                grant = await self.access.authenticate(scope)
                retention = self.runtime.plan.store.responses_retention
                answer = await stored(method, path, scope, grant, self.store, retention)
                await respond(send, 200, orjson.dumps(answer), [(b"x-request-id", rid.encode())], _JSON)
                return
            if path.split("/", 2)[1] in ("files", "batches"):
                await self.files.handle(self.runtime, self.store, method, path, scope, receive, send, rid)
                return
            if (method, path) in ADMIN_ROUTES:
                server = self.runtime.plan.server
                answer = await self.access.admin_call(method, path, scope, receive, server.max_body,
                                                      body_timeout=server.body_timeout, depth=server.max_json_depth)
                await respond(send, 200, orjson.dumps(answer), [(b"x-request-id", rid.encode())], _JSON)
                return
            if op == "count_tokens" and method == "POST":
                await self.access.authenticate(scope)
                await self._count_tokens(scope, receive, send, rid)
            else:
                await self._other(method, path, scope, send, rid)
        except ClientGone:
            return
        except Exception as exc:  # every error in the envelope; nothing unstructured reaches the client
            err = _admin_error(exc) if (method, path) in ADMIN_ROUTES else from_exception(exc)
            if err.code == "internal_error":
                self.logger.error("internal_error", request_id=rid, path=scope["path"], error=repr(exc))
            headers = [(b"x-request-id", rid.encode()), *err.headers()]
            anthropic = op == "count_tokens" or (path.startswith("/models") and wants_anthropic(scope["headers"]))
            if anthropic:
                headers.append((b"request-id", rid.encode()))
            body = anthropic_error_body(err, rid) if anthropic else openai_body(err)
            await respond(send, err.status, body, headers, _JSON)

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        """`POST /v1/messages/count_tokens`: Anthropic's count for a group with an Anthropic
        deployment, else a local one; `x-sidegate-token-count` says which."""
        rt = self.runtime
        if not tokens.is_loaded():
            await trio.to_thread.run_sync(tokens.load)  # once, off the loop (~0.3 s)
        raw = await read_body(scope, receive, rt.plan.server.max_body, rt.plan.server.body_timeout)
        data = parse_messages(raw, count=True)
        check_depth(data, rt.plan.server.max_json_depth, raw)
        route = rt.routes.resolve(data["model"])
        if route is None:
            raise ModelNotFound(f"model '{data['model']}' is not served by this gateway", param="model")
        client = client_headers(scope["headers"])
        counted, source = await count_input_tokens(rt, route, data, client)
        headers = [(b"x-request-id", rid.encode()), (b"request-id", rid.encode()),
                   (b"x-sidegate-token-count", source.encode())]
        await respond(send, 200, orjson.dumps({"input_tokens": counted}), headers, _JSON)

    async def _health_only(self, scope: Scope, send: Send) -> None:
        """The health listener (`server.health_listen`): the probe routes and nothing else."""
        rid = new_request_id()
        path: str = scope["path"]
        if scope["method"] == "GET" and (path in _LIVE or path in _READY):
            await self._other("GET", path, scope, send, rid)
            return
        err = NotFound(f"the health listener answers only the health routes, not {scope['method']} {path}")
        await respond(send, err.status, openai_body(err), [(b"x-request-id", rid.encode())], _JSON)

    async def _other(self, method: str, path: str, scope: Scope, send: Send, rid: str) -> None:
        rt = self.runtime
        obs = rt.plan.observability
        if method != "GET":
            raise NotFound(f"no route for {method} {scope['path']}")
        anthropic = wants_anthropic(scope["headers"])
        ids = [(b"request-id", rid.encode())] if anthropic else []
        if path == "/models":
            await respond(send, 200, rt.anthropic_models_body if anthropic else rt.models_body, ids, _JSON)
        elif path.startswith("/models/"):
            name = path[len("/models/") :]
            route = rt.routes.resolve(name)
            if route is None:
                raise ModelNotFound(f"model '{name}' is not served by this gateway", param="model")
            card = anthropic_model(name, route.group) if anthropic else model_card(name)
            await respond(send, 200, orjson.dumps(card), ids, _JSON)
        elif scope["path"] in _LIVE:
            await respond(send, 200, b'{"status":"ok"}', (), _JSON)
        elif scope["path"] in _READY:
            starting = self.mcp.starting()  # `start: boot` MCP servers still starting (bounded)
            ready = self.store is not None and not starting
            detail: dict[str, object] = {"status": "ready" if ready else "starting", "plan": rt.digest}
            if starting:
                detail["mcp_starting"] = starting
            if rt.plan.a2a is not None:
                detail["a2a"] = self.a2a.ready_detail()
            body = orjson.dumps(detail)
            await respond(send, 200 if ready else 503, body, (), _JSON)
        elif scope["path"] == "/health/mcp":
            await respond(send, 200, orjson.dumps({"servers": self.mcp.report()}), (), _JSON)
        elif scope["path"] == "/health/deployments":
            await respond(send, 200, orjson.dumps(deployments_report(rt, trio.current_time(), time.time())), (), _JSON)
        elif obs.metrics.enabled and scope["path"] == obs.metrics.path:
            observe_deployments(self.metrics, rt)
            self.a2a.observe()
            await respond(send, 200, self.metrics.render(), (), b"text/plain; version=0.0.4; charset=utf-8")
        else:
            raise NotFound(f"no route for {method} {scope['path']}")

    async def _model_call(self, op: str, scope: Scope, receive: Receive, send: Send) -> None:
        rt = self.runtime
        rid = (header(scope, b"x-request-id") or b"").decode("latin-1") or new_request_id()
        call = Call(request_id=rid, op=op, t0=perf_counter(), log=self.logger.warning)
        token = None
        if self.telemetry is not None:
            call.trace = self.telemetry.request(scope, op, rid)
            token = CURRENT.set(call.trace)
        in_flight = None
        admission = None
        try:
            grant = await self.access.authenticate(scope, google=op == "generate_content")
            media = op in MEDIA_OPS  # read by the media route (uploads: under server.max_upload)
            body = b"{}" if media else await read_body(scope, receive, rt.plan.server.max_body,
                                                       rt.plan.server.body_timeout)
            if rt.plan.observability.logs.bodies and not media:
                call.log_bodies = True
                call.extra["request_body"] = body.decode("utf-8", "replace")
            if op == "messages":
                data = parse_messages(body)
                client = client_headers(scope["headers"])
                call.dialect = MessagesDialect(data, client, call)
            elif media:
                data, call.dialect = await read_media(op, scope, receive, rt.plan.server, call.extra)
            elif op == "generate_content":
                data, call.dialect = parse_gemini(body, scope, call, rt)
            elif op == "responses":
                data, call.dialect = await prepare(body, grant, self.store, rt.plan.store.responses_retention,
                                                   self.logger)
            else:
                data = parse_request(op, body)
            check_depth(data, rt.plan.server.max_json_depth, body)
            route = rt.routes.resolve(data["model"])
            guarded = await self.guards.start(route.group.name if route else None, grant.name if grant else None,
                                              grant.team if grant else None, op, data, rid, call.extra,
                                              grant.guardrails if grant else ())
            send = guard_answer(self.guards, guarded, op, call, send)
            if route is not None:
                admission = await self.access.admit(grant, route.group.name, data, rt.reserve.get(route.group.name),
                                                    op, rid)
            in_flight = self.metrics.in_flight.labels(route.group.name if route else "unknown")
            in_flight.inc()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_on_disconnect, receive, nursery.cancel_scope, call)
                try:
                    await self.cache.serve(rt, route.group if route else None, call, data, send, grant,
                                           scope["headers"])
                finally:
                    nursery.cancel_scope.cancel()
            if guarded is not None and guarded.blocked is not None:
                call.status, call.error = guarded.blocked.status, guarded.blocked.message
            if call.status == 0 or call.client_gone:
                call.status, call.error = 499, "client disconnected"
        except ClientGone:
            call.status, call.error = 499, "client disconnected"
        except BaseException as exc:
            if _cancelled(exc):  # the drain timeout is over: the server cancels what is still running
                if not call.complete:
                    await _cut_by_drain(call, send, rt.plan.server.drain_timeout, op)
                raise
            err = from_exception(exc)
            if err.code == "internal_error":
                self.logger.error("internal_error", request_id=rid, error=repr(exc))
            call.status, call.error = err.status, err.message
            if not call.started:
                headers = [*call.headers(), *err.headers()]
                if op == "messages":
                    await respond(send, err.anthropic_status or err.status, anthropic_error_body(err, rid), headers,
                                  _JSON)
                elif op == "generate_content":
                    await respond(send, err.status, google_error_body(err), headers, _JSON)
                else:
                    await respond(send, err.status, openai_body(err), headers, _JSON)
        finally:
            if in_flight is not None:
                in_flight.dec()
            if admission is not None:
                self.access.settle(admission, call)
            self._account(call)
            if call.trace is not None and token is not None:
                call.trace.end(call)
                CURRENT.reset(token)

    def _account(self, call: Call) -> None:
        elapsed = perf_counter() - call.t0
        m = self.metrics
        m.requests.labels(call.group, call.deployment, str(call.status)).inc()
        m.latency.labels(call.group, call.deployment).observe(elapsed)
        if call.deployment:
            m.upstream_latency.labels(call.group, call.deployment).observe(call.upstream)
            if call.status >= 500 or call.status == 429:
                m.upstream_errors.labels(call.group, call.deployment, str(call.status)).inc()
        u = call.usage
        if u is not None:
            m.tokens.labels(call.group, call.deployment, "prompt").inc(u.prompt)
            m.tokens.labels(call.group, call.deployment, "completion").inc(u.completion)
        self.logger.info(
            "request",
            request_id=call.request_id,
            op=call.op,
            model=call.model,
            group=call.group,
            deployment=call.deployment,
            stream=call.stream,
            status=call.status,
            latency_ms=round(elapsed * 1000, 2),
            upstream_ms=round(call.upstream * 1000, 2),
            prompt_tokens=u.prompt if u else None,
            completion_tokens=u.completion if u else None,
            attempts=call.attempts,
            **({"error": call.error} if call.error else {}),
            **({"dropped": list(call.dropped)} if call.dropped else {}),
            **({"upstream_url": call.upstream_url} if call.error and call.upstream_url else {}),
            **call.extra,
        )


def _admin_error(exc: Exception) -> GatewayError:
    """The admin API's error: a store that cannot answer is a 503 (retry later), not a 500."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, STORE_ERRORS):
        return Unavailable(f"the store cannot answer right now ({type(exc).__name__})", retry_after=5.0)
    return from_exception(exc)


def _cancelled(exc: BaseException) -> bool:
    """Whether `exc` is a cancellation from outside (alone, or all a nursery's group holds)."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        return rest is None
    return False


async def _cut_by_drain(call: Call, send: Send, drain: float, op: str) -> None:
    """Account a request the shutdown drain cut as 503 with the reason, and tell the client if it
    still can (shielded, briefly: the server is closing connections)."""
    err = Unavailable(f"the gateway is shutting down: the request was cut after the {drain:g}s drain "
                      "(server.drain_timeout)", code="shutdown_drain")
    with trio.CancelScope(shield=True), trio.move_on_after(0.2):
        try:
            if call.started:
                await stream_error(send, call, err)
            else:
                body = anthropic_error_body(err, call.request_id) if op == "messages" else openai_body(err)
                await respond(send, err.status, body, [*call.headers(), *err.headers()], _JSON)
        except Exception:  # the connection may already be gone: the 503 is accounted anyway
            pass
    call.status, call.error = err.status, err.message
