"""Semantic mode: the prompt is embedded through a model group of the plan (an embeddings call
routed like any other), and its vector searched in Qdrant among the vectors of earlier answers with
the same context (everything but the prompt: group, scope, tools, parameters). A hit at or above the
threshold names the exact key of the answer, read from the backend.

qdrant-client is loaded only here, when a plan asks for semantic mode. Its calls block (the
embedded local mode works in-process on disk): each runs in one worker thread, one at a time. A
collection per vector size (`<collection>_<size>`), cosine distance."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson
import trio

from sidegate.runtime.cache.keys import context_digest, prompt_text
from sidegate.runtime.errors import GatewayError
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.plan.cache import SemanticCache
from sidegate.runtime.plan.secrets import resolve
from sidegate.runtime.routing.call import Call
from sidegate.runtime.routing.proxy import serve_call
from sidegate.runtime.routing.state import Runtime

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

__all__ = ["Probe", "SemanticIndex"]

_MAX_TEXT = 32_000
"""Characters of prompt embedded (the end of a longer one: the latest turns)."""


@dataclass(frozen=True, slots=True)
class Probe:
    """A request's prompt vector and context, found while looking it up and kept to index its answer."""

    vector: list[float]
    context: str


class _Sink:
    """Receives the embeddings answer the routing loop sends."""

    def __init__(self) -> None:
        self.status = 0
        self.parts: list[bytes] = []

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.parts.append(message.get("body", b""))


def _vector(body: bytes) -> list[float] | None:
    try:
        obj = orjson.loads(body)
        vec = obj["data"][0]["embedding"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(vec, list) or not vec or not all(isinstance(v, int | float) for v in vec):
        return None
    return [float(v) for v in vec]


class SemanticIndex:
    """The vectors of cached answers, in Qdrant."""

    def __init__(self, spec: SemanticCache, logger: Logger) -> None:
        self.spec = spec
        self.logger = logger
        self._client: QdrantClient | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._collections: set[str] = set()
        self._added = 0

    async def probe(self, rt: Runtime, call: Call, group: str, scope: str, data: dict[str, Any]) -> Probe | None:
        """The request's vector (one embeddings call) and context; None when it cannot be embedded."""
        text = prompt_text(call.op, data)[-_MAX_TEXT:]
        if not text:
            return None
        t0 = perf_counter()
        sink = _Sink()
        embed = Call(request_id=f"{call.request_id}.cache", op="embeddings", t0=t0)
        try:
            await serve_call(rt, embed, {"model": self.spec.embedding, "input": text}, sink.send)
        except GatewayError as err:
            self.logger.warning("cache_embedding_failed", request_id=call.request_id, group=self.spec.embedding,
                                status=err.status, error=err.message)
            return None
        call.extra["cache_embedding_ms"] = round((perf_counter() - t0) * 1000, 2)
        vector = _vector(b"".join(sink.parts)) if sink.status == 200 else None
        if vector is None:
            self.logger.warning("cache_embedding_failed", request_id=call.request_id, group=self.spec.embedding,
                                status=sink.status, error="no embedding in the answer")
            return None
        return Probe(vector, context_digest(call.op, group, scope, data))

    def _open(self) -> QdrantClient:
        if self._client is None:
            from qdrant_client import QdrantClient  # only where semantic mode is configured

            spec = self.spec
            if spec.url is not None:
                key = resolve(spec.api_key) if spec.api_key is not None else None
                self._client = QdrantClient(url=resolve(spec.url), api_key=key, timeout=5)
            else:
                self._client = QdrantClient(path=spec.path)
            prefix = f"{spec.collection}_"
            self._collections = {c.name for c in self._client.get_collections().collections
                                 if c.name.startswith(prefix)}
        return self._client

    async def _run(self, fn: Any) -> Any:
        return await trio.to_thread.run_sync(lambda: fn(self._open()), limiter=self._limiter)

    def _collection(self, client: QdrantClient, size: int) -> str:
        from qdrant_client import models

        name = f"{self.spec.collection}_{size}"
        if name not in self._collections:
            if not client.collection_exists(name):
                client.create_collection(name, vectors_config=models.VectorParams(size=size,
                                                                                  distance=models.Distance.COSINE))
            self._collections.add(name)
        return name

    async def search(self, probe: Probe, threshold: float) -> str | None:
        """The exact key of the closest live answer with the same context, at or above `threshold`."""
        from qdrant_client import models

        now = time.time()
        where = models.Filter(must=[
            models.FieldCondition(key="ctx", match=models.MatchValue(value=probe.context)),
            models.FieldCondition(key="expires", range=models.Range(gt=now)),
        ])

        def search(client: QdrantClient) -> str | None:
            name = f"{self.spec.collection}_{len(probe.vector)}"
            if name not in self._collections:
                return None
            found = client.query_points(name, query=probe.vector, query_filter=where, limit=1,
                                        score_threshold=threshold, with_payload=["key"]).points
            return str(found[0].payload["key"]) if found and found[0].payload else None

        try:
            return await self._run(search)  # type: ignore[no-any-return]
        except Exception as exc:
            self.logger.error("cache_semantic_failed", operation="search", error=f"{type(exc).__name__}: {exc}")
            return None

    async def add(self, probe: Probe, key: str, expires: float) -> None:
        """Index the answer kept under `key`; past `max_entries` the oldest vectors are dropped."""
        from qdrant_client import models

        point = models.PointStruct(id=str(uuid.UUID(hex=key.split(":", 1)[1][:32])), vector=probe.vector,
                                   payload={"ctx": probe.context, "key": key, "tag": key.split(":", 1)[0],
                                            "expires": expires, "created": time.time()})
        self._added += 1
        trim = self._added % max(1, self.spec.max_entries // 10) == 0

        def add(client: QdrantClient) -> None:
            name = self._collection(client, len(probe.vector))
            client.upsert(name, points=[point])
            if trim:
                self._trim(client, name)

        try:
            await self._run(add)
        except Exception as exc:
            self.logger.error("cache_semantic_failed", operation="add", error=f"{type(exc).__name__}: {exc}")

    def _trim(self, client: QdrantClient, name: str) -> None:
        from qdrant_client import models

        excess = client.count(name, exact=True).count - self.spec.max_entries
        if excess <= 0:
            return
        points, _ = client.scroll(name, limit=self.spec.max_entries + excess, with_payload=["created"])
        oldest = sorted(points, key=lambda p: float((p.payload or {}).get("created", 0.0)))[:excess]
        client.delete(name, points_selector=models.PointIdsList(points=[p.id for p in oldest]))

    async def _delete(self, where: Any) -> None:
        from qdrant_client import models

        def delete(client: QdrantClient) -> None:
            for name in list(self._collections):
                client.delete(name, points_selector=models.FilterSelector(filter=where))

        await self._run(delete)

    async def purge(self, tag: str | None) -> None:
        """Drop the vectors of one group (by its tag), or all."""
        from qdrant_client import models

        must: list[Any] = [] if tag is None else [models.FieldCondition(key="tag", match=models.MatchValue(value=tag))]
        await self._delete(models.Filter(must=must))

    async def sweep(self) -> None:
        """Drop expired vectors."""
        from qdrant_client import models

        await self._delete(models.Filter(must=[models.FieldCondition(key="expires",
                                                                     range=models.Range(lte=time.time()))]))

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await trio.to_thread.run_sync(client.close, limiter=self._limiter)
