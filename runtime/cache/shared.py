"""The shared backends: Redis (redis-py's blocking client in a worker thread, keys expiring by
Redis's own TTL) and the spec's store (sqlite or PostgreSQL through the store's worker-thread seam).
Neither blocks the loop. A backend that fails is left alone for a few seconds (every request is a
miss meanwhile) so an outage costs each request nothing rather than a timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from sidegate.runtime.errors import Unavailable
from sidegate.runtime.store.database import Store
from sidegate.runtime.store.models import CacheEntry

if TYPE_CHECKING:
    import redis

__all__ = ["PREFIX", "RedisBackend", "StoreBackend"]

PREFIX = "sidegate:cache:"
_TIMEOUT = 1.0
"""Seconds a Redis connection or command may take."""


class RedisBackend:
    """Entries under `sidegate:cache:<group tag>:<digest>`, with Redis's expiry."""

    shared = True

    def __init__(self, url: Callable[[], str]) -> None:
        self._url = url
        self._client: redis.Redis | None = None
        self._limiter = trio.CapacityLimiter(8)

    def _connect(self) -> redis.Redis:
        if self._client is None:
            import redis  # only where the redis backend is used

            self._client = redis.Redis.from_url(self._url(), socket_timeout=_TIMEOUT,
                                                socket_connect_timeout=_TIMEOUT, health_check_interval=0)
        return self._client

    async def _run(self, fn: Callable[[redis.Redis], Any]) -> Any:
        return await trio.to_thread.run_sync(lambda: fn(self._connect()), limiter=self._limiter)

    async def get(self, key: str) -> bytes | None:
        value = await self._run(lambda c: c.get(PREFIX + key))
        return bytes(value) if value is not None else None

    async def put(self, key: str, value: bytes, ttl: float) -> bool:
        await self._run(lambda c: c.set(PREFIX + key, value, px=max(1, int(ttl * 1000))))
        return True

    async def purge(self, tag: str | None) -> int:
        pattern = PREFIX + (f"{tag}:*" if tag is not None else "*")

        def delete(c: redis.Redis) -> int:
            n = 0
            batch: list[Any] = []
            for key in c.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    n += int(c.delete(*batch))
                    batch = []
            if batch:
                n += int(c.delete(*batch))
            return n

        return int(await self._run(delete))

    async def sweep(self) -> int:
        return 0  # Redis expires keys itself

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await trio.to_thread.run_sync(client.close)


class StoreBackend:
    """Entries in the store's `cacheentry` table; expired rows are deleted by the periodic sweep."""

    shared = True

    def __init__(self, store: Callable[[], Store | None], clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self.clock = clock

    @property
    def store(self) -> Store:
        """The store (it opens after the app is built)."""
        opened = self._store()
        if opened is None:
            raise Unavailable("the store is not open yet")
        return opened

    async def get(self, key: str) -> bytes | None:
        now = self.clock()

        def read() -> bytes | None:
            row = CacheEntry.select(CacheEntry.value).where(
                (CacheEntry.key == key) & (CacheEntry.expires_at > now)).first()
            return bytes(row.value) if row is not None else None

        return await self.store.run(read)

    async def put(self, key: str, value: bytes, ttl: float) -> bool:
        row = {"key": key, "group": key.split(":", 1)[0], "value": value, "expires_at": self.clock() + ttl}

        def write() -> None:
            CacheEntry.insert(**row).on_conflict(
                conflict_target=[CacheEntry.key],
                update={CacheEntry.value: row["value"], CacheEntry.expires_at: row["expires_at"]}).execute()

        await self.store.run(write)
        return True

    async def purge(self, tag: str | None) -> int:
        query = CacheEntry.delete() if tag is None else CacheEntry.delete().where(CacheEntry.group == tag)
        return int(await self.store.run(query.execute))

    async def sweep(self) -> int:
        now = self.clock()
        return int(await self.store.run(CacheEntry.delete().where(CacheEntry.expires_at <= now).execute))

    async def aclose(self) -> None:
        return None
