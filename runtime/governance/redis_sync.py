"""Rate-limit counters and budget spend shared across sidecars through Redis (`store.redis`).

Requests are admitted against the in-memory `Ledger` only; the hot path never waits on Redis. A
background task, every `store.redis_sync`, takes the deltas counted since its last run, adds them
to the shared totals in one pipelined round trip (redis-py's blocking client in a worker thread:
its asyncio client does not run under Trio) and adopts the totals every sidecar has counted.

Keys: `sidegate:rl:<minute>` is a hash of `<subject>:r` / `<subject>:t` (requests and tokens in that
UTC minute, expiring after two minutes); `sidegate:spend:<subject>:<period start>` is a float
(USD spent in the budget period, expiring when it ends). Subjects are `key:<sha256>`,
`team:<name>` and `user:<id>`: never a key in clear.

When Redis is unreachable each sidecar counts alone (a log line, `sidegate_redis_up` 0 and
`sidegate_redis_sync_failures`); deltas are kept and pushed once it is back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge

from sidegate.runtime.governance.limits import Ledger, Pending
from sidegate.runtime.governance.window import WINDOW
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.plan import Secret
from sidegate.runtime.plan.secrets import SecretError, resolve

if TYPE_CHECKING:
    import redis

__all__ = ["PREFIX", "RedisSync", "push"]

PREFIX = "sidegate:"
_TIMEOUT = 1.0
"""Seconds a Redis connection or command may take before the sync counts as failed."""

Totals = tuple[dict[tuple[str, int], tuple[int, int]], dict[tuple[str, float], float]]


def push(client: redis.Redis, pending: Pending) -> Totals:
    """Add `pending` to the shared totals and read them back (blocking: call in a worker thread)."""
    pipe = client.pipeline(transaction=False)
    windows = list(pending.windows.items())
    for (subject, window), (requests, tokens) in windows:
        key = f"{PREFIX}rl:{window}"
        pipe.hincrby(key, f"{subject}:r", requests)
        pipe.hincrby(key, f"{subject}:t", tokens)
    spends = list(pending.spend.items())
    for (subject, start), (amount, _) in spends:
        pipe.incrbyfloat(f"{PREFIX}spend:{subject}:{int(start)}", amount)
    for window in {w for _, w in pending.windows}:
        pipe.expire(f"{PREFIX}rl:{window}", int(2 * WINDOW))
    for (subject, start), (_, ttl) in spends:
        pipe.expireat(f"{PREFIX}spend:{subject}:{int(start)}", math.ceil(start + ttl))
    replies = pipe.execute()
    out_windows = {k: (int(replies[2 * i]), int(replies[2 * i + 1])) for i, (k, _) in enumerate(windows)}
    base = 2 * len(windows)
    out_spend = {k: float(replies[base + i]) for i, (k, _) in enumerate(spends)}
    return out_windows, out_spend


class RedisSync:
    """The background sync between one process's ledger and Redis."""

    def __init__(self, ledger: Ledger, logger: Logger, registry: CollectorRegistry | None = None,
                 wall: Callable[[], float] | None = None) -> None:
        self.ledger = ledger
        self.logger = logger
        self.wall = wall or time.time
        self.source: Secret | None = None
        self.interval = 0.5
        self.up: bool | None = None
        """None until the first sync; then whether the last one reached Redis."""
        self.syncs = 0
        """Successful syncs (for tests and the log)."""
        self._client: redis.Redis | None = None
        self._client_source: Secret | None = None
        self._connecting = trio.Lock()
        self.up_gauge = Gauge("sidegate_redis_up", "1 while counters sync with Redis (store.redis), else 0.",
                              registry=registry)
        self.failures = Counter("sidegate_redis_sync_failures",
                                "Syncs with Redis that failed (counting went on locally).", registry=registry)
        self.sync_seconds = Gauge("sidegate_redis_sync_seconds", "Duration of the last sync round trip.",
                                  registry=registry)

    def configure(self, source: Secret | None, interval: float) -> None:
        """Apply a (re)loaded plan's `store.redis` and `store.redis_sync`."""
        self.source, self.interval = source, interval
        self.ledger.share(source is not None)

    async def run(self) -> None:
        """Sync forever (cancel to stop)."""
        while True:
            await trio.sleep(self.interval)
            if self.source is None:
                self._close()
                continue
            await self.sync_once()

    async def sync_once(self) -> bool:
        """One sync; False (logged and counted once per outage) when Redis could not be reached."""
        pending = self.ledger.take_pending(self.wall())
        if not pending.windows and not pending.spend:
            return True
        import redis  # only where store.redis is set (~6 MB)

        t0 = trio.current_time()
        try:
            client = await self._connect()
            windows, spend = await trio.to_thread.run_sync(push, client, pending, abandon_on_cancel=True)
        except (redis.RedisError, OSError, SecretError, ValueError) as exc:
            self.ledger.give_back(pending, self.wall())
            self.note_failure(exc)
            return False
        self.sync_seconds.set(trio.current_time() - t0)
        self.ledger.apply_shared(windows, spend)
        if self.up is not True:
            self.logger.info("redis_sync_up", subjects=len(windows) + len(spend))
        self._set_up(True)
        self.syncs += 1
        return True

    def note_failure(self, exc: BaseException) -> None:
        """Count a failed round trip (a sync, or a budget reservation) and log the first of an outage:
        until the next successful sync, counting and budget reservations stay local."""
        self.failures.inc()
        if self.up is not False:
            self.logger.error("redis_sync_failed", error=f"{type(exc).__name__}: {exc}",
                              fallback="counting locally until Redis is back")
        self._set_up(False)

    async def _connect(self) -> redis.Redis:
        """The client for the configured URL (resolved in a worker thread; made anew when it changed).
        One at a time: concurrent callers (the sync and budget reservations) share the client made."""
        if self._client is not None and self._client_source == self.source:
            return self._client
        async with self._connecting:
            if self._client is None or self._client_source != self.source:
                self._close()
                source = self.source
                assert source is not None
                url = await trio.to_thread.run_sync(resolve, source)
                import redis

                self._client = redis.Redis.from_url(url, socket_timeout=_TIMEOUT, socket_connect_timeout=_TIMEOUT,
                                                    health_check_interval=0)
                self._client_source = source
            return self._client

    def _set_up(self, up: bool) -> None:
        self.up = up
        self.up_gauge.set(1 if up else 0)

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client, self._client_source = None, None
