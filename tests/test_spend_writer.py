"""The spend writer through the store's worker-thread seam, on sqlite and PostgreSQL: batched and
aggregated, retried while the database refuses, flushed on shutdown, bounded, and visible in
/metrics-ready counters."""

from __future__ import annotations

from dataclasses import replace

import peewee
import trio
import trio.lowlevel
from prometheus_client import generate_latest

from sidegate.runtime.observe.metrics import Metrics
from sidegate.runtime.store.database import SCHEMA_VERSION, Store
from sidegate.runtime.store.models import DailySpend, SpendLog
from sidegate.runtime.store.spend import SpendRow, SpendWriter
from tests.support.postgres import pg_server, store_url  # noqa: F401 - fixtures


def _row(i: int, key: str = "h", cost: float = 0.001) -> SpendRow:
    return SpendRow(request_id=f"r{i}", key_hash=key, team="t", user=None, model="m", deployment="p/m",
                    prompt_tokens=10, completion_tokens=5, cached_tokens=0, reasoning_tokens=0, cost=cost,
                    estimated=False, latency_ms=1.0, status=200, created_at=1_795_000_000.0 + i)


def _sample(metrics: Metrics, name: str) -> float:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def test_spend_writer_batches_and_aggregates(store_url: str) -> None:  # noqa: F811
    store = await Store.open(store_url)
    assert await store.schema_version() == SCHEMA_VERSION
    metrics = Metrics()
    writer = SpendWriter(store, metrics=metrics)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            for i in range(1200):
                writer.record_nowait(_row(i))
            assert _sample(metrics, "sidegate_spend_rows_pending") == 1200
            while writer.pending:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    total = await store.run(lambda: SpendLog.select().count())
    daily = await store.run(lambda: [(d.requests, round(d.cost, 6)) for d in DailySpend.select()])
    await store.aclose()
    assert total == 1200 and sum(n for n, _ in daily) == 1200 and round(sum(c for _, c in daily), 6) == 1.2
    assert _sample(metrics, "sidegate_spend_rows_written_total") == 1200
    assert _sample(metrics, "sidegate_spend_rows_pending") == 0


async def test_spend_rows_survive_a_database_outage(store_url: str) -> None:  # noqa: F811
    store = await Store.open(store_url)
    failures: list[str] = []
    metrics = Metrics()
    writer = SpendWriter(store, on_failure=lambda msg, n: failures.append(msg), metrics=metrics)
    real_run = store.run
    down = True

    async def flaky(fn):  # type: ignore[no-untyped-def]
        if down:
            raise peewee.OperationalError("database is locked")
        return await real_run(fn)

    store.run = flaky  # type: ignore[method-assign]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            for i in range(50):
                writer.record_nowait(_row(i))
            while not failures:
                await trio.sleep(0.01)
            assert writer.pending == 50 and _sample(metrics, "sidegate_spend_rows_pending") == 50
            assert _sample(metrics, "sidegate_spend_write_failures_total") >= 1
            down = False
            while writer.pending:
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert await real_run(lambda: SpendLog.select().count()) == 50
    assert await real_run(lambda: sorted(int(r.request_id[1:]) for r in SpendLog.select())) == list(range(50))
    await store.aclose()


async def test_a_full_buffer_drops_the_oldest_rows_and_counts_them(store_url: str) -> None:  # noqa: F811
    store = await Store.open(store_url)
    metrics = Metrics()
    writer = SpendWriter(store, max_buffer=10, metrics=metrics)
    for i in range(25):
        writer.record_nowait(_row(i))
    assert writer.pending == 10 and writer.overflowed == 15
    assert _sample(metrics, 'sidegate_spend_rows_dropped_total{reason="overflow"}') == 15
    assert _sample(metrics, 'sidegate_spend_rows_dropped_total{reason="rejected"}') == 0
    await writer.flush()
    kept = await store.run(lambda: sorted(int(r.request_id[1:]) for r in SpendLog.select()))
    await store.aclose()
    assert kept == list(range(15, 25))


async def test_shutdown_flushes_what_is_queued(store_url: str) -> None:  # noqa: F811
    store = await Store.open(store_url)
    writer = SpendWriter(store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await trio.lowlevel.checkpoint()
        for i in range(30):
            writer.record_nowait(_row(i))
        nursery.cancel_scope.cancel()
    assert await store.run(lambda: SpendLog.select().count()) == 30
    await store.aclose()


async def test_a_row_the_database_refuses_is_dropped_alone(store_url: str) -> None:  # noqa: F811
    """One bad row (a NOT NULL column left empty) must not stall the writer: its batch is written row
    by row, the bad row is dropped, logged and counted, and the rest are written. Over-long text (a
    client's x-request-id) is clipped to the column's 255 characters rather than refused."""
    store = await Store.open(store_url)
    metrics = Metrics()
    failures: list[str] = []
    writer = SpendWriter(store, metrics=metrics, on_failure=lambda msg, n: failures.append(msg))
    rows = [_row(i) for i in range(10)]
    rows[3] = replace(rows[3], model=None)  # type: ignore[arg-type]
    rows[5] = replace(rows[5], request_id="x" * 1000)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            for row in rows:
                writer.record_nowait(row)
            while writer.pending:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    ids = await store.run(lambda: sorted(r.request_id for r in SpendLog.select()))
    await store.aclose()
    assert ids == sorted([f"r{i}" for i in range(10) if i not in (3, 5)] + ["x" * 255])
    assert writer.rejected == 1 and writer.written == 9
    assert _sample(metrics, 'sidegate_spend_rows_dropped_total{reason="rejected"}') == 1
    assert len(failures) == 1 and "'r3' refused" in failures[0]


async def test_an_in_memory_store_keeps_the_newest_rows_and_whole_aggregates() -> None:
    from sidegate.runtime.store.spend import MEMORY_ROWS, write_rows

    store = await Store.open("sqlite://:memory:")
    for start in range(0, MEMORY_ROWS + 2_000, 1_000):
        batch = [_row(i) for i in range(start, start + 1_000)]
        await store.run(lambda batch=batch: write_rows(batch))  # type: ignore[misc]
    kept = await store.run(lambda: [r.request_id for r in SpendLog.select(SpendLog.request_id)])
    requests = await store.run(lambda: sum(d.requests for d in DailySpend.select()))
    await store.aclose()
    assert len(kept) == MEMORY_ROWS and f"r{MEMORY_ROWS + 1_999}" in kept and "r0" not in kept
    assert requests == MEMORY_ROWS + 2_000, "the daily aggregates count every row"
