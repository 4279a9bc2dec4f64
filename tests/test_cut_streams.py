"""One rule for streams that do not run to their end. A client that hangs up: status 499, charged
for what the upstream generated until then (its usage if it reported one, else metered from the
relayed text, flagged estimated). A stream cut by the shutdown drain (`server.drain_timeout`):
status 503 with the reason, charged the same way; the client gets an error event if it can."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import trio

from sidegate.runtime.plan import Price, Store
from sidegate.runtime.store.database import Store as StateStore
from sidegate.runtime.store.models import SpendLog
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import group, mock_provider, plan, target, text

PRICE = Price(input=1e-3, output=2e-3, cached_input=None)
WORDS = " ".join(f"w{i}" for i in range(200))
BODY = {"model": "demo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def _plan(db: Path, drain: float = 5.0):  # type: ignore[no-untyped-def]
    p = plan([mock_provider("fake", text=WORDS, latency_per_token=0.05)],
             [group("demo", target("fake", "demo", price=PRICE))], drain=drain)
    return replace(p, store=Store(database=text(f"sqlite:///{db}")))


async def _rows(db: Path) -> list[SpendLog]:
    store = await StateStore.open(f"sqlite:///{db}")
    try:
        return await store.run(lambda: list(SpendLog.select().order_by(SpendLog.id)))
    finally:
        await store.aclose()


async def test_a_client_that_hangs_up_is_499_and_charged_for_what_was_generated(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    with trio.fail_after(30):
        async with open_gateway(_plan(db)) as gw, httpx.AsyncClient(timeout=20) as c:
            async with c.stream("POST", f"{base_url(gw)}/chat/completions", json=BODY) as r:
                seen = b""
                async for chunk in r.aiter_bytes():
                    seen += chunk
                    if seen.count(b"data: ") >= 5:
                        break
            writer = gw.app.access.spend
            assert writer is not None
            while writer.written < 1:
                await trio.sleep(0.02)
    (row,) = await _rows(db)
    assert row.status == 499 and row.estimated
    assert 1 <= row.completion_tokens < 200, "charged for the part generated before the hang-up"
    assert row.cost == row.prompt_tokens * PRICE.input + row.completion_tokens * PRICE.output


async def test_a_stream_cut_by_the_drain_is_503_with_the_reason(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    events: list[bytes] = []
    with trio.fail_after(30):
        async with open_gateway(_plan(db, drain=0.3)) as gw, httpx.AsyncClient(timeout=20) as c:
            async with c.stream("POST", f"{base_url(gw)}/chat/completions", json=BODY) as r:
                try:
                    async for line in r.aiter_lines():
                        if line:
                            events.append(line.encode())
                        if len(events) == 3:
                            gw.shutdown.set()  # SIGTERM: the drain gives the stream 0.3 s
                except httpx.HTTPError:
                    pass  # the connection closes when the server stops
    (row,) = await _rows(db)
    assert row.status == 503 and row.estimated and 3 <= row.completion_tokens < 200
    assert row.cost > 0
    assert b"shutdown_drain" in events[-1], "the client is told why its stream ended"
