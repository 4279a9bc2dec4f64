"""The event loop is not blocked by the store: while the spend writer writes tens of thousands of
rows (sqlite and PostgreSQL), a 1 ms sleep probe on the loop never wakes more than 50 ms late.

The figure is wall-clock on a shared machine, so a run may be retried (at most three): the OS can
deschedule the process on its own. A writer that blocked the loop (sync I/O, a long GIL hold) shows
in every run, and fails."""

from __future__ import annotations

from tests.bench.loop_lag import LagReport, measure
from tests.support.postgres import pg_server, store_url  # noqa: F401 - fixtures

ROWS = 30_000
LIMIT_MS = 50.0


async def test_loop_lag_stays_small_under_heavy_spend_writes(store_url: str) -> None:  # noqa: F811
    reports: list[LagReport] = []
    for _ in range(3):
        report = await measure(store_url, ROWS)
        reports.append(report)
        print(f"{store_url.split(':')[0]}: {report}")
        if report.max_lag_ms < LIMIT_MS:
            break
    best = min(reports, key=lambda r: r.max_lag_ms)
    assert best.max_lag_ms < LIMIT_MS and best.p99_lag_ms < LIMIT_MS / 2, [str(r) for r in reports]
