"""The memory backend: an LRU in this process's RAM, bounded by the bytes of its keys and answers;
entries past their TTL are dropped when met (or by the periodic sweep). Every call is a few dict
operations on the loop: no thread, no I/O."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["OVERHEAD", "MemoryBackend"]

OVERHEAD = 160
"""Bytes counted per entry beyond its key and value (the dict slot, the tuple, the objects' headers)."""


class MemoryBackend:
    """Key -> (answer, expiry, group tag), least recently used first."""

    shared = False

    def __init__(self, max_size: int, clock: Callable[[], float] = time.time,
                 on_evict: Callable[[str, int], None] | None = None) -> None:
        self.max_size = max_size
        self.clock = clock
        self.size = 0
        self._entries: OrderedDict[str, tuple[bytes, float, str]] = OrderedDict()
        self._on_evict = on_evict

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _cost(key: str, value: bytes) -> int:
        return len(key) + len(value) + OVERHEAD

    def _drop(self, key: str, reason: str) -> None:
        value, _, _ = self._entries.pop(key)
        self.size -= self._cost(key, value)
        if self._on_evict is not None:
            self._on_evict(reason, 1)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[1] <= self.clock():
            self._drop(key, "expired")
            return None
        self._entries.move_to_end(key)
        return found[0]

    async def put(self, key: str, value: bytes, ttl: float) -> bool:
        """Keep `value` for `ttl` seconds; False when it alone is over the bound."""
        cost = self._cost(key, value)
        if cost > self.max_size:
            return False
        if key in self._entries:
            self._drop(key, "replaced")
        self._entries[key] = (value, self.clock() + ttl, key.split(":", 1)[0])
        self.size += cost
        while self.size > self.max_size:
            self._drop(next(iter(self._entries)), "size")
        return True

    async def purge(self, tag: str | None) -> int:
        """Drop the entries of the group with this tag (all with None); returns how many."""
        doomed = [k for k, (_, _, t) in self._entries.items() if tag is None or t == tag]
        for key in doomed:
            value, _, _ = self._entries.pop(key)
            self.size -= self._cost(key, value)
        return len(doomed)

    async def sweep(self) -> int:
        """Drop expired entries (bounded work per call: at most 10,000 looked at)."""
        now = self.clock()
        doomed = [k for k, (_, exp, _) in list(self._entries.items())[:10_000] if exp <= now]
        for key in doomed:
            self._drop(key, "expired")
        return len(doomed)

    async def aclose(self) -> None:
        self._entries.clear()
        self.size = 0
