"""Spend rows written off the hot path: requests queue rows without waiting; one task writes them
in batches through the store's worker-thread seam. If the database is down, rows wait in a bounded
buffer and are retried with backoff (a log line and a metric say so); they are never silently
dropped, and a request never blocks on them. On shutdown the buffer is flushed."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING

import trio

from runtime.models import DailySpend, SpendLog
from runtime.store import Store

if TYPE_CHECKING:
    from runtime.metrics import Metrics

__all__ = ["SpendRow", "SpendWriter", "write_rows"]

BATCH = 500
LINGER = 0.05
"""How long the writer waits after the first queued row, so rows are written in batches."""
MAX_RETRY_DELAY = 5.0
"""The longest wait between retries while the database is down (backoff doubles from 0.5 s)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SpendRow:
    """One request's spend."""

    request_id: str
    key_hash: str | None
    team: str | None
    user: str | None
    model: str
    deployment: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost: float
    estimated: bool
    latency_ms: float
    status: int
    created_at: float


def write_rows(rows: list[SpendRow]) -> None:
    """Insert rows and fold them into the daily aggregates, in one transaction (blocking)."""
    db = SpendLog._meta.database
    with db.atomic():
        SpendLog.insert_many([asdict(r) for r in rows]).execute()
        totals: dict[tuple[str, str, str, str], list[float]] = {}
        for r in rows:
            day = time.strftime("%Y-%m-%d", time.gmtime(r.created_at))
            t = totals.setdefault((day, r.key_hash or "", r.team or "", r.model), [0, 0, 0, 0.0])
            t[0] += 1
            t[1] += r.prompt_tokens
            t[2] += r.completion_tokens
            t[3] += r.cost
        for (day, key, team, model), (n, p, c, cost) in totals.items():
            DailySpend.insert(
                day=day, key_hash=key, team=team, model=model, requests=n, prompt_tokens=p,
                completion_tokens=c, cost=cost,
            ).on_conflict(
                conflict_target=[DailySpend.day, DailySpend.key_hash, DailySpend.team, DailySpend.model],
                update={
                    DailySpend.requests: DailySpend.requests + n,
                    DailySpend.prompt_tokens: DailySpend.prompt_tokens + p,
                    DailySpend.completion_tokens: DailySpend.completion_tokens + c,
                    DailySpend.cost: DailySpend.cost + cost,
                },
            ).execute()


class SpendWriter:
    """Queue of spend rows and the task that writes them."""

    def __init__(self, store: Store, *, max_buffer: int = 100_000,
                 on_failure: Callable[[str, int], None] | None = None, metrics: Metrics | None = None) -> None:
        self._store = store
        self._buffer: deque[SpendRow] = deque()
        self._writing = 0
        self._max = max_buffer
        self._wake = trio.Event()
        self._on_failure = on_failure
        self._metrics = metrics
        self.written = 0
        self.failures = 0
        self.overflowed = 0
        if metrics is not None:
            metrics.spend_pending.set_function(lambda: self.pending)

    def record_nowait(self, row: SpendRow) -> None:
        """Queue a row (never blocks). Past the buffer bound the oldest row is dropped and counted:
        the bound is what keeps a long database outage from exhausting memory."""
        self._buffer.append(row)
        self._trim()
        self._wake.set()

    def _trim(self) -> None:
        excess = len(self._buffer) + self._writing - self._max
        for _ in range(min(excess, len(self._buffer))):
            self._buffer.popleft()
        if excess > 0:
            self.overflowed += excess
            if self._metrics is not None:
                self._metrics.spend_dropped.inc(excess)

    @property
    def pending(self) -> int:
        """Rows not yet written (queued, or in the batch being written)."""
        return len(self._buffer) + self._writing

    async def flush(self) -> None:
        """Write everything queued; raises when the database refuses (the failed batch goes back to
        the front of the queue)."""
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(BATCH, len(self._buffer)))]
            self._writing = len(batch)
            try:
                await self._store.run(partial(write_rows, batch))
            except BaseException:
                self._buffer.extendleft(reversed(batch))
                raise
            finally:
                self._writing = 0
                self._trim()
            self.written += len(batch)
            if self._metrics is not None:
                self._metrics.spend_written.inc(len(batch))

    async def run(self) -> None:
        """Write rows as they come, retrying with backoff while the database is down; on
        cancellation, one last flush (shielded)."""
        delay = 0.5
        try:
            while True:
                await self._wake.wait()
                await trio.sleep(LINGER)  # gather a batch: one thread hop per batch, not per request
                self._wake = trio.Event()
                try:
                    await self.flush()
                    delay = 0.5
                except Exception as exc:
                    self.failures += 1
                    if self._metrics is not None:
                        self._metrics.spend_write_failures.inc()
                    if self._on_failure is not None:
                        self._on_failure(f"{type(exc).__name__}: {exc}", self.pending)
                    await trio.sleep(delay)
                    delay = min(delay * 2, MAX_RETRY_DELAY)
                    self._wake.set()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await self.flush()
                except Exception as exc:
                    if self._on_failure is not None:
                        self._on_failure(f"final flush failed: {exc}", self.pending)
