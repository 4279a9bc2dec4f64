"""Start sidegate in-process on an ephemeral port for a test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import trio

from sidegate.runtime.plan import Plan
from sidegate.runtime.server import Handle, serve


@asynccontextmanager
async def open_gateway(
    plan: Plan, load_plan: Callable[[], Plan] | None = None, watch_path: str | None = None,
    poll_interval: float = 1.0,
) -> AsyncIterator[Handle]:
    async with trio.open_nursery() as nursery:
        handle: Handle = await nursery.start(
            partial(serve, plan, load_plan=load_plan or (lambda: plan), watch_path=watch_path,
                    handle_signals=False, port=0, poll_interval=poll_interval)
        )
        try:
            yield handle
        finally:
            handle.shutdown.set()


def base_url(handle: Handle) -> str:
    return f"http://127.0.0.1:{handle.port}/v1"
