"""Spend rows written off the hot path: requests queue rows without waiting; one task writes them
in batches through the store's worker-thread seam. If the database is down, rows wait in a bounded
buffer and are retried with backoff (a log line and a metric say so); a request never blocks on
them. Rows past the buffer's bound, and those still unwritten at shutdown, go to the local journal
(`runtime.store.journal`, fsync'd), which is replayed into the store exactly once as soon as it answers
(at the next start at the latest). Without a journal (an in-memory store) rows past the bound are
dropped and counted."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import trio

from sidegate.runtime.store.database import Store
from sidegate.runtime.store.journal import Journal, replay_values
from sidegate.runtime.store.models import DailySpend, SpendLog
from sidegate.runtime.store.orm import peewee

if TYPE_CHECKING:
    from sidegate.runtime.observe.metrics import Metrics

__all__ = ["SpendRow", "SpendWriter", "guardrail_summary", "write_rows", "write_values"]

BATCH = 500
LINGER = 0.05
"""How long the writer waits after the first queued row, so rows are written in batches."""
MEMORY_ROWS = 10_000
"""Spend log rows kept by an in-memory store (`sqlite://:memory:`); a file or PostgreSQL keeps all."""
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
    cache_hit: bool = False
    saved_cost: float = 0.0
    guardrails: str | None = None
    """The guardrails' decisions (`name:outcome,...`; see `guardrail_summary`)."""


_COLUMNS = tuple(f.name for f in fields(SpendRow))
_values = attrgetter(*_COLUMNS)
_DAILY = ("day", "key_hash", "team", "model", "requests", "prompt_tokens", "completion_tokens", "cost")


def _statements(db: peewee.Database) -> tuple[str, str]:
    """The insert and the daily upsert as SQL both sqlite (>= 3.24) and PostgreSQL accept."""
    q = db.quote[0]
    log, daily = SpendLog._meta.table_name, DailySpend._meta.table_name

    def names(cols: tuple[str, ...]) -> str:
        return ", ".join(f"{q}{c}{q}" for c in cols)

    one = f"({', '.join([db.param] * len(_DAILY))})"
    bump = ", ".join(f"{q}{c}{q} = {q}{daily}{q}.{q}{c}{q} + excluded.{q}{c}{q}" for c in _DAILY[4:])
    upsert = (f"INSERT INTO {q}{daily}{q} ({names(_DAILY)}) VALUES {one} "
              f"ON CONFLICT ({names(_DAILY[:4])}) DO UPDATE SET {bump}")
    return f"INSERT INTO {q}{log}{q} ({names(_COLUMNS)}) VALUES ", upsert


Values = tuple[Any, ...]
"""A row as a plain tuple in `_COLUMNS` order: what the writer buffers (tuples of strings and numbers
are untracked by the garbage collector, so a full buffer does not lengthen collections on the loop)."""
_I = {name: i for i, name in enumerate(_COLUMNS)}
MAX_TEXT = 255
"""Text columns are VARCHAR(255) on PostgreSQL: longer values (a client's x-request-id) are clipped."""
_RETRY = (peewee.OperationalError, peewee.InterfaceError, peewee.ProgrammingError)
"""Failures of the database, not of a row: the batch is kept and retried. Anything else (a constraint,
a value out of range) is a row the database refuses: the batch is written row by row and only the
refused rows are dropped (logged and counted), so one bad row cannot stall the writer."""


def guardrail_summary(decisions: list[str] | None) -> str | None:
    """The spend row's `guardrails`: the decisions (`name:outcome`) comma-separated, whole ones only
    within the column's `MAX_TEXT` (then `+N` says how many more were left out)."""
    if not decisions:
        return None
    out: list[str] = []
    for i, d in enumerate(decisions):
        rest = len(decisions) - i - 1
        if len(",".join([*out, d])) + (len(f",+{rest}") if rest else 0) > MAX_TEXT:
            return ",".join([*out, f"+{len(decisions) - i}"])
        out.append(d)
    return ",".join(out)


def _flatten(row: SpendRow) -> Values:
    values: Values = _values(row)
    if any(isinstance(v, str) and len(v) > MAX_TEXT for v in values):
        values = tuple(v[:MAX_TEXT] if isinstance(v, str) else v for v in values)
    return values


_TAIL: Values = (False, 0.0, None)
"""Defaults of the columns added last (cache_hit, saved_cost, guardrails), for rows journaled by an older
version."""


def _padded(values: Values) -> Values:
    missing = len(_COLUMNS) - len(values)
    return values + _TAIL[len(_TAIL) - missing:] if 0 < missing <= len(_TAIL) else values


def write_rows(rows: list[SpendRow]) -> None:
    """Insert rows and fold them into the daily aggregates, in one transaction (blocking)."""
    write_values([_flatten(r) for r in rows])


def write_values(values: list[Values]) -> None:
    """`write_rows` for rows already flattened to tuples (blocking).

    Plain SQL through the driver's bulk calls rather than peewee's query builder: the worker thread
    holds the GIL for as little Python as possible, which is what keeps the event loop's lag low
    while thousands of rows are written."""
    db = SpendLog._meta.database
    insert, upsert = _statements(db)
    created, key, team, model = _I["created_at"], _I["key_hash"], _I["team"], _I["model"]
    prompt, completion, cost = _I["prompt_tokens"], _I["completion_tokens"], _I["cost"]
    totals: dict[tuple[str, str, str, str], list[float]] = {}
    for v in values:
        day = time.strftime("%Y-%m-%d", time.gmtime(v[created]))
        t = totals.setdefault((day, v[key] or "", v[team] or "", v[model]), [0, 0, 0, 0.0])
        t[0] += 1
        t[1] += v[prompt]
        t[2] += v[completion]
        t[3] += v[cost]
    daily = [(*k, *t) for k, t in totals.items()]
    with db.atomic():
        cursor = db.cursor()
        if isinstance(db, peewee.PostgresqlDatabase):
            from psycopg2.extras import execute_batch, execute_values

            execute_values(cursor, insert + "%s", values, page_size=len(values))
            execute_batch(cursor, upsert, daily, page_size=len(daily))  # one round trip, not one per row
        else:
            cursor.executemany(insert + f"({', '.join([db.param] * len(_COLUMNS))})", values)
            cursor.executemany(upsert, daily)
            if db.database == ":memory:":
                # An in-memory store lives in this process's RAM: keep the newest rows only (the
                # daily aggregates stay complete), or a busy sidecar would grow without bound.
                q, table = db.quote[0], SpendLog._meta.table_name
                cursor.execute(f"DELETE FROM {q}{table}{q} WHERE id <= "
                               f"(SELECT MAX(id) FROM {q}{table}{q}) - {MEMORY_ROWS}")


class _DatabaseFailed(Exception):
    """The database failed while a refused batch was being written row by row."""


class SpendWriter:
    """Queue of spend rows and the task that writes them."""

    def __init__(self, store: Store, *, max_buffer: int = 100_000,
                 on_failure: Callable[[str, int], None] | None = None, metrics: Metrics | None = None,
                 journal: Journal | None = None) -> None:
        self._store = store
        self._journal = journal
        self._spill: list[Values] = []
        """Rows past the buffer's bound, on their way to the journal."""
        self._spill_wake = trio.Event()
        self._journal_lock = trio.Lock()
        self._journal_broken = False
        """The last journal write failed (disk full...): rows past the bound are dropped and counted."""
        self._failing = False
        """The last write failed (the database is down): shutdown journals without trying again."""
        self.journal_rows = 0
        """Rows in the journal not yet replayed (as far as this process knows)."""
        self.journaled = 0
        self.replayed = 0
        self._buffer: deque[Values] = deque()
        self._writing = 0
        self._max = max_buffer
        self._wake = trio.Event()
        self._on_failure = on_failure
        self._metrics = metrics
        self.written = 0
        self.failures = 0
        self.overflowed = 0
        self.rejected = 0
        self._last_error = ""
        if metrics is not None:
            metrics.spend_pending.set_function(lambda: self.pending)

    def record_nowait(self, row: SpendRow) -> None:
        """Queue a row (never blocks). Past the buffer bound the oldest rows go to the journal (or,
        without one, are dropped and counted): the bound keeps a long outage from exhausting memory."""
        self._buffer.append(_flatten(row))
        self._trim()
        self._wake.set()

    def _trim(self) -> None:
        excess = len(self._buffer) + self._writing - self._max
        if excess <= 0:
            return
        moved = [self._buffer.popleft() for _ in range(min(excess, len(self._buffer)))]
        if self._journal is not None and not self._journal_broken:
            self._spill.extend(moved)
            self._spill_wake.set()
            return
        self.overflowed += len(moved)
        if self._metrics is not None:
            self._metrics.spend_dropped.labels("overflow").inc(len(moved))

    async def _append(self, rows: list[Values]) -> None:
        """Journal rows (fsync'd) in a worker thread; they count as journaled once this returns."""
        assert self._journal is not None
        async with self._journal_lock:
            await trio.to_thread.run_sync(self._journal.append, rows)
        self.journaled += len(rows)
        self.journal_rows += len(rows)
        self._wake.set()  # the writer replays them once the database answers
        if self._metrics is not None:
            self._metrics.spend_journaled.inc(len(rows))

    async def _spill_loop(self) -> None:
        while True:
            await self._spill_wake.wait()
            self._spill_wake = trio.Event()
            await self._spill_now()

    async def _spill_now(self) -> None:
        rows, self._spill = self._spill, []
        if not rows:
            return
        try:
            await self._append(rows)
            self._journal_broken = False
        except OSError as exc:
            self._journal_broken = True
            self.overflowed += len(rows)
            if self._metrics is not None:
                self._metrics.spend_dropped.labels("overflow").inc(len(rows))
            if self._on_failure is not None:
                self._on_failure(f"journal write failed, {len(rows)} rows dropped: {exc}", self.pending)

    async def replay(self) -> int:
        """Write the journal's rows into the store (each exactly once) and empty it; returns how many
        were stored (rows already there are skipped). Raises when the store fails (the journal is kept)."""
        if self._journal is None:
            return 0
        journal = self._journal
        created, rid = _I["created_at"], _I["request_id"]

        def drain() -> int:
            return journal.drain(lambda rows: replay_values([_padded(r) for r in rows], write_values, rid, created))

        async with self._journal_lock:
            stored = await self._store.run(drain)
            self.journal_rows = 0
        self.replayed += stored
        if self._metrics is not None:
            self._metrics.spend_replayed.inc(stored)
        return stored

    async def open_journal(self) -> None:
        """Count what an earlier run left in the journal (so the writer replays it)."""
        if self._journal is not None:
            self.journal_rows = await trio.to_thread.run_sync(self._journal.count)
            if self.journal_rows:
                self._wake.set()

    @property
    def pending(self) -> int:
        """Rows not yet written (queued, in the batch being written, or on their way to the journal)."""
        return len(self._buffer) + self._writing + len(self._spill)

    async def flush(self) -> None:
        """Write everything queued; raises when the database refuses (the failed batch goes back to
        the front of the queue)."""
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(BATCH, len(self._buffer)))]
            self._writing = len(batch)
            try:
                try:
                    await self._store.run(partial(write_values, batch))
                except _RETRY:
                    raise
                except Exception:
                    batch = await self._write_each(batch)  # what is left when the database failed
                    if batch:
                        raise _DatabaseFailed(self._last_error) from None
                else:
                    self._count_written(len(batch))
            except BaseException:
                self._buffer.extendleft(reversed(batch))
                raise
            finally:
                self._writing = 0
                self._trim()

    def _count_written(self, n: int) -> None:
        self.written += n
        if self._metrics is not None:
            self._metrics.spend_written.inc(n)

    async def _write_each(self, batch: list[Values]) -> list[Values]:
        """Write a refused batch row by row, dropping the rows the database refuses; returns the rows
        not yet written when the database itself fails (empty when all were handled)."""
        for i, values in enumerate(batch):
            try:
                await self._store.run(partial(write_values, [values]))
            except _RETRY as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                return batch[i:]
            except Exception as exc:
                self.rejected += 1
                if self._metrics is not None:
                    self._metrics.spend_dropped.labels("rejected").inc()
                if self._on_failure is not None:
                    self._on_failure(f"row {values[_I['request_id']]!r} refused, dropped: "
                                     f"{type(exc).__name__}: {exc}", self.pending)
                continue
            self._count_written(1)
        return []

    async def run(self) -> None:
        """Write rows as they come, retrying with backoff while the database is down, and replay the
        journal once the database answers; on cancellation, one last flush (shielded), and what it
        cannot write goes to the journal."""
        try:
            async with trio.open_nursery() as nursery:
                if self._journal is not None:
                    nursery.start_soon(self._spill_loop)
                await self._write_loop()
        finally:
            with trio.CancelScope(shield=True):
                await self._final()

    async def _write_loop(self) -> None:
        delay = 0.5
        while True:
            await self._wake.wait()
            await trio.sleep(LINGER)  # gather a batch: one thread hop per batch, not per request
            self._wake = trio.Event()
            try:
                await self.flush()
                if self.journal_rows:
                    await self.replay()
                self._failing = False
                delay = 0.5
            except Exception as exc:
                self._failing = True
                self.failures += 1
                if self._metrics is not None:
                    self._metrics.spend_write_failures.inc()
                if self._on_failure is not None:
                    self._on_failure(f"{type(exc).__name__}: {exc}", self.pending)
                await trio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
                self._wake.set()

    async def _final(self) -> None:
        if self._journal is not None:
            await self._spill_now()
        if not self._failing or self._journal is None:
            try:
                await self.flush()
                if self.journal_rows:
                    await self.replay()
                return
            except Exception as exc:
                if self._on_failure is not None:
                    self._on_failure(f"final flush failed: {exc}", self.pending)
        if self._journal is None or not self._buffer:
            return
        rows = list(self._buffer)
        try:
            await self._append(rows)
        except OSError as exc:
            if self._on_failure is not None:
                self._on_failure(f"journal write failed at shutdown, {len(rows)} rows lost: {exc}", self.pending)
            return
        self._buffer.clear()
