"""What every backend answers (`Backend`), and the one a plan asks for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sidegate.runtime.cache.memory import MemoryBackend
from sidegate.runtime.cache.shared import RedisBackend, StoreBackend
from sidegate.runtime.plan import Secret
from sidegate.runtime.plan.cache import Cache, CacheBackend
from sidegate.runtime.plan.secrets import resolve
from sidegate.runtime.store.database import Store

__all__ = ["Backend", "backend_for"]


class Backend(Protocol):
    """Where entries live: keys are `<group tag>:<digest>`, values the encoded entries."""

    shared: bool
    """Reached over I/O (written by the background writer) rather than in this process's memory."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> bool: ...

    async def purge(self, tag: str | None) -> int: ...

    async def sweep(self) -> int: ...

    async def aclose(self) -> None: ...


def backend_for(plan: Cache, store_redis: Secret | None, store: Callable[[], Store | None],
                on_evict: Callable[[str, int], None]) -> Backend:
    """A new backend for the plan's cache settings."""
    if plan.backend is CacheBackend.REDIS:
        source = plan.redis or store_redis
        assert source is not None, "the compiler requires a Redis URL"
        return RedisBackend(lambda: resolve(source))
    if plan.backend is CacheBackend.STORE:
        return StoreBackend(store)
    return MemoryBackend(plan.max_size, on_evict=on_evict)
