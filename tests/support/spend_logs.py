"""Spend rows read back through the admin API, once the spend writer (which batches off the hot
path) has stored them: polled under a deadline, never a fixed sleep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import trio

__all__ = ["spend_row", "spend_rows"]

Row = dict[str, Any]
DEADLINE = 30.0
"""Seconds to wait for the rows at most (the writer stores a batch within about a second; the tests' own deadlines are usually shorter)."""


async def spend_rows(root: str, master: str, until: Callable[[list[Row]], bool]) -> list[Row]:
    """`GET /spend/logs` (up to 1,000 rows) until `until(rows)` holds; the rows, oldest first.
    Long polls fail at :data:`DEADLINE`."""
    async with httpx.AsyncClient(base_url=root, headers={"authorization": f"Bearer {master}"}) as c:
        with trio.fail_after(DEADLINE):
            while True:
                rows: list[Row] = (await c.get("/spend/logs", params={"limit": 1000})).json()["data"]
                if until(rows):
                    return sorted(rows, key=lambda r: r["created_at"])
                await trio.sleep(0.05)


async def spend_row(root: str, master: str, request_id: str) -> Row:
    """The spend row of request `request_id`."""
    rows = await spend_rows(root, master, lambda rs: any(r["request_id"] == request_id for r in rs))
    return next(r for r in rows if r["request_id"] == request_id)
