"""Event-loop lag while the spend writer writes many rows: a probe sleeps 1 ms in a loop and records
how late it wakes, while rows are queued as fast as requests would queue them and written through
the store's worker-thread seam. Lag is what every request on the loop would wait on top of its own work.

Usage: python -m tests.bench.loop_lag [ROWS] [RATE|flood] [DATABASE_URL]
(defaults: 50000 rows, 20000 rows/s — over ten times the gateway's request rate —, a temporary sqlite
file; `flood` queues every row at once, so the buffer holds tens of thousands of rows)
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass

import trio
import trio.lowlevel

from sidegate.runtime.store.database import Store
from sidegate.runtime.store.models import SpendLog
from sidegate.runtime.store.spend import SpendRow, SpendWriter

PROBE = 0.001


@dataclass(frozen=True)
class LagReport:
    rows: int
    seconds: float
    max_lag_ms: float
    p99_lag_ms: float
    probes: int
    idle_max_lag_ms: float
    """The same probe for the same time with no writes: the machine's own noise."""

    def __str__(self) -> str:
        return (f"{self.rows} spend rows written in {self.seconds:.2f} s ({self.rows / self.seconds:,.0f} rows/s); "
                f"loop lag over {self.probes} probes: max {self.max_lag_ms:.1f} ms, p99 {self.p99_lag_ms:.1f} ms "
                f"(idle loop on this machine: max {self.idle_max_lag_ms:.1f} ms)")


async def _probe(lags: list[float], done: trio.Event) -> None:
    while not done.is_set():
        t0 = trio.current_time()
        await trio.sleep(PROBE)
        lags.append(trio.current_time() - t0 - PROBE)


async def idle_lag(seconds: float) -> float:
    """The probe's worst lag over `seconds` with nothing else running (seconds)."""
    lags: list[float] = []
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_probe, lags, done)
        await trio.sleep(seconds)
        done.set()
    return max(lags)


def _row(i: int) -> SpendRow:
    return SpendRow(request_id=f"lag-{i}", key_hash=f"k{i % 50}", team=f"t{i % 5}", user=None, model=f"m{i % 3}",
                    deployment="p/m", prompt_tokens=100 + i % 7, completion_tokens=20, cached_tokens=0,
                    reasoning_tokens=0, cost=0.0001, estimated=False, latency_ms=12.5, status=200,
                    created_at=time.time())


async def measure(url: str, rows: int, rate: float | None = 20_000, burst: int = 50) -> LagReport:
    """Queue `rows` spend rows, `rate` a second (None: as fast as the loop turns), in bursts of
    `burst` per loop turn, while probing loop lag."""
    store = await Store.open(url)
    before = await store.run(lambda: SpendLog.select().count())
    writer = SpendWriter(store)
    lags: list[float] = []
    done = trio.Event()
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        nursery.start_soon(_probe, lags, done)
        began = trio.current_time()
        for start in range(0, rows, burst):
            for i in range(start, min(start + burst, rows)):
                writer.record_nowait(_row(i))
            if rate is None:
                await trio.lowlevel.checkpoint()
            else:
                await trio.sleep_until(began + (start + burst) / rate)
        while writer.pending:
            await trio.sleep(0.01)
        seconds = time.perf_counter() - t0
        done.set()
        nursery.cancel_scope.cancel()
    written = await store.run(lambda: SpendLog.select().count()) - before
    await store.aclose()
    if written != rows:
        raise AssertionError(f"{written} rows written, {rows} queued")
    lags.sort()
    idle = await idle_lag(min(seconds, 1.0))
    return LagReport(rows=rows, seconds=seconds, max_lag_ms=lags[-1] * 1000,
                     p99_lag_ms=lags[int(len(lags) * 0.99)] * 1000, probes=len(lags), idle_max_lag_ms=idle * 1000)


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    arg = sys.argv[2] if len(sys.argv) > 2 else "20000"
    rate = None if arg == "flood" else float(arg)
    if len(sys.argv) > 3:
        print(trio.run(measure, sys.argv[3], rows, rate))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(trio.run(measure, f"sqlite:///{tmp}/lag.db", rows, rate))


if __name__ == "__main__":
    main()
