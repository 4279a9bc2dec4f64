"""The response cache around one model call: look the request up (exact, then semantic), replay a
hit whole or as a stream, or serve the call live and keep its answer once it is complete.

Only an answer that was sent whole with status 200 (a stream: to its proper end) is kept; an
upstream error, a stream cut midway, a client that left, an answer over `max_entry` never is. A
shared backend (Redis, the store) is written by a background task, so a miss pays nothing for it
after its answer went out; a backend that fails makes requests misses for a few seconds, never
errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import trio

from sidegate.runtime.cache.assemble import assemble
from sidegate.runtime.cache.entry import Capture, Entry, decode, encode
from sidegate.runtime.cache.keys import cacheable, group_tag, options, request_digest, scope_of
from sidegate.runtime.cache.metrics import CacheMetrics
from sidegate.runtime.cache.replay import replay_stream
from sidegate.runtime.cache.semantic import Probe, SemanticIndex
from sidegate.runtime.cache.stores import Backend, backend_for
from sidegate.runtime.errors import BadRequest
from sidegate.runtime.governance.gate import cost_of
from sidegate.runtime.governance.keys import Grant
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.plan import ModelGroup
from sidegate.runtime.plan.cache import CacheMode
from sidegate.runtime.routing.call import Call
from sidegate.runtime.routing.proxy import serve_call
from sidegate.runtime.routing.state import Runtime
from sidegate.runtime.store.database import Store
from sidegate.runtime.upstream.providers.common import usage_object

__all__ = ["ResponseCache"]

_JSON = b"application/json"
_SSE = b"text/event-stream; charset=utf-8"
_PAUSE = 5.0
"""Seconds a failed shared backend is left alone (requests are misses meanwhile)."""
_SWEEP = 30.0
_QUEUE = 1000
"""Answers waiting for a shared backend's writer; past it they are not cached (counted)."""


class ResponseCache:
    """One process's cache: the backend (kept across reloads while its settings hold) and the writer."""

    def __init__(self, logger: Logger, metrics: CacheMetrics, store: Callable[[], Store | None]) -> None:
        self.logger = logger
        self.metrics = metrics
        self._store = store
        self.backend: Backend | None = None
        self.semantic: SemanticIndex | None = None
        self._settings: object = None
        self._runtime: Runtime | None = None
        self._paused_until = 0.0
        self._send, self._receive = trio.open_memory_channel[tuple[str, str, bytes, float, Probe | None]](_QUEUE)

    def configure(self, runtime: Runtime) -> None:
        """Apply a (re)loaded plan: a new backend only when its settings changed."""
        self._runtime = runtime
        plan = runtime.plan.cache
        settings = None if plan is None else (plan.backend, plan.max_size, plan.redis, runtime.plan.store.redis)
        if settings != self._settings:
            self._settings = settings
            self.backend = None if plan is None else backend_for(plan, runtime.plan.store.redis, self._store,
                                                                 self._on_evict)
        semantic = plan.semantic if plan is not None else None
        if semantic is None:
            self.semantic = None
        elif self.semantic is None or self.semantic.spec != semantic:
            self.semantic = SemanticIndex(semantic, self.logger)

    def _on_evict(self, reason: str, n: int) -> None:
        self.metrics.evictions.labels(reason).inc(n)

    async def serve(self, rt: Runtime, group: ModelGroup | None, call: Call, data: dict[str, Any], send: Any,
                    grant: Grant | None, headers: list[tuple[bytes, bytes]]) -> None:
        """Answer the call: from the cache, or live (through `serve_call`), keeping the answer."""
        policy = group.cache if group is not None else None
        backend = self.backend
        if policy is None or group is None or backend is None or call.op not in policy.operations:
            if "cache" in data:
                options(headers, data)  # checked and taken out of the body, whether or not it caches
            await serve_call(rt, call, data, send)
            return
        opts = options(headers, data)
        lookups = self.metrics.lookups
        if not cacheable(policy, call.op, data):
            lookups.labels(group.name, "bypass").inc()
            call.extra["cache"] = "bypass"
            await serve_call(rt, call, data, Capture(send, b"bypass", None).send)
            return
        scope = scope_of(policy, grant.team if grant else None, grant.hash if grant else None)
        key = request_digest(call.op, group.name, scope, data)
        probe: Probe | None = None
        result = "bypass"
        if not opts.no_cache:
            result = "miss"
            raw = await self._get(backend, key)
            semantic = self.semantic if policy.mode is CacheMode.SEMANTIC and call.op != "embeddings" else None
            if raw is None and semantic is not None:
                probe = await semantic.probe(rt, call, group.name, scope, data)
                found = None if probe is None else await semantic.search(probe, policy.threshold)
                raw = None if found is None else await self._get(backend, found)
            entry = decode(raw) if raw is not None else None
            if entry is not None:
                lookups.labels(group.name, "hit").inc()
                await self._replay(call, group, data, entry, send)
                return
        lookups.labels(group.name, result).inc()
        call.extra["cache"] = result
        limit = policy.max_entry * (4 if data.get("stream") is True else 1)  # events frame the same answer
        capture = Capture(send, result.encode(), None if opts.no_store else limit)
        await serve_call(rt, call, data, capture.send)
        if opts.no_store:
            self.metrics.skipped.labels("no_store").inc()
            return
        await self._fill(backend, call, capture, key, policy.ttl, policy.max_entry, probe)

    async def _replay(self, call: Call, group: ModelGroup, data: dict[str, Any], entry: Entry, send: Any) -> None:
        call.model, call.group, call.stream = data["model"], group.name, data.get("stream") is True
        call.status = 200
        call.extra["cache"] = "hit"
        call.extra["saved_cost"] = round(entry.cost, 8)
        self.metrics.saved.labels(group.name).inc(entry.cost)
        if call.stream:
            body = replay_stream(call.op, entry.body, data)
            headers = [(b"content-type", _SSE), (b"cache-control", b"no-cache")]
        else:
            body = entry.body
            headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
        self.metrics.bytes_served.inc(len(body))
        headers += [(b"x-sidegate-cache", b"hit"), *call.headers()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        call.complete = True
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _fill(self, backend: Backend, call: Call, capture: Capture, key: str, ttl: float, max_entry: int,
                    probe: Probe | None) -> None:
        body = capture.body()
        if capture.too_large or body is None:
            self.metrics.skipped.labels("too_large").inc()
            return
        if capture.status != 200 or call.status != 200 or not call.complete or call.client_gone or call.error:
            self.metrics.skipped.labels("incomplete").inc()
            return
        if call.stream:
            whole = assemble(call.op, body)
            if whole is None:
                self.metrics.skipped.labels("incomplete").inc()
                return
            body = _with_usage(call, whole)
        if len(body) > max_entry:
            self.metrics.skipped.labels("too_large").inc()
            return
        usage = call.usage
        value = encode(Entry(body, usage, cost_of(usage, call.price) if usage is not None else 0.0))
        if not backend.shared:
            await self._put(backend, call.group, key, value, ttl, probe)
            return
        try:
            self._send.send_nowait((call.group, key, value, ttl, probe))
        except trio.WouldBlock:
            self.metrics.skipped.labels("queue_full").inc()

    async def _put(self, backend: Backend, group: str, key: str, value: bytes, ttl: float,
                   probe: Probe | None) -> None:
        if self._paused():
            return
        try:
            if not await backend.put(key, value, ttl):
                self.metrics.skipped.labels("too_large").inc()
                return
        except Exception as exc:
            self._failed("put", exc)
            return
        self.metrics.stored.labels(group).inc()
        self.metrics.bytes_stored.inc(len(value))
        self._gauge(backend)
        if probe is not None and self.semantic is not None:
            await self.semantic.add(probe, key, time.time() + ttl)

    async def _get(self, backend: Backend, key: str) -> bytes | None:
        if self._paused():
            return None
        try:
            return await backend.get(key)
        except Exception as exc:
            self._failed("get", exc)
            return None

    def _paused(self) -> bool:
        return self._paused_until > trio.current_time()

    def _failed(self, operation: str, exc: Exception) -> None:
        self.metrics.errors.labels(operation).inc()
        if not self._paused():
            self.logger.error("cache_backend_failed", operation=operation, error=f"{type(exc).__name__}: {exc}",
                              fallback=f"requests are misses for {_PAUSE:g}s")
        self._paused_until = trio.current_time() + _PAUSE

    def _gauge(self, backend: Backend) -> None:
        size = getattr(backend, "size", None)
        if size is not None:
            self.metrics.size.set(size)
            self.metrics.entries.set(len(backend))  # type: ignore[arg-type]

    async def run(self) -> None:
        """The shared backends' writer and the periodic sweep of expired entries."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweeper)
            async for group, key, value, ttl, probe in self._receive:
                backend = self.backend
                if backend is not None:
                    await self._put(backend, group, key, value, ttl, probe)

    async def _sweeper(self) -> None:
        while True:
            await trio.sleep(_SWEEP)
            backend = self.backend
            try:
                if backend is not None:
                    await backend.sweep()
                    self._gauge(backend)
                if self.semantic is not None:
                    await self.semantic.sweep()
            except Exception as exc:
                self._failed("sweep", exc)

    async def purge(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /cache/purge` (`{"model": name}`: that group's entries; `{}`: every entry)."""
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise BadRequest("'model' must be a model group's name", param="model")
        rt, backend = self._runtime, self.backend
        if rt is None or backend is None:
            return {"purged": 0, "model": model}
        name = None
        if model is not None:
            route = rt.routes.resolve(model)
            if route is None:
                raise BadRequest(f"model '{model}' is not served by this gateway", param="model",
                                 code="model_not_found")
            name = route.group.name
        tag = group_tag(name) if name is not None else None
        purged = await backend.purge(tag)
        if self.semantic is not None:
            await self.semantic.purge(tag)
        self.metrics.purged.inc(purged)
        self._gauge(backend)
        self.logger.info("cache_purged", model=name, entries=purged)
        return {"purged": purged, "model": name}

    async def aclose(self) -> None:
        if self.backend is not None:
            await self.backend.aclose()
        if self.semantic is not None:
            await self.semantic.aclose()


def _with_usage(call: Call, whole: bytes) -> bytes:
    """An OpenAI stream's usage is dropped for a client that did not ask for it: the entry keeps
    the upstream's, so a whole answer replayed from it carries usage."""
    if call.op == "messages" or call.usage is None:
        return whole
    obj = orjson.loads(whole)
    if obj.get("usage") is None:
        obj["usage"] = usage_object(call.usage)
        return orjson.dumps(obj)
    return whole
