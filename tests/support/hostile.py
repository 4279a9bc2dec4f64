"""A hostile OpenAI-wire upstream, run in its own process (`python -m tests.support.hostile`) so a
test measures the gateway's latency, not the fake's own CPU. It prints its port, then serves:

  `endless`  200 text/event-stream: 20 MB of one SSE event that never ends
  `huge`     200 application/json: a 50 MB body
  `many`     valid chat.completion.chunk events, 50 MB of them
Each piece is written as its own body message, as a real server would, at up to ~30 MB/s.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from tests.support.fake_base import FakeServer, Seen

MB = 1_000_000
RATE = 30 * MB
"""Bytes a second an answer is written at, at most: a fast real upstream."""
CATCH_UP = 0.01
"""Seconds behind its schedule the writer makes up at most (the timer wakes it late by ~0.7 ms)."""
PIECE = b"x" * 16_384
EVENT = (b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
         b'"delta":{"content":"word "},"finish_reason":null}]}\n\n')


class Hostile(FakeServer):
    async def answer(self, seen: Seen, send: Any) -> None:
        mode = (seen.body or {}).get("model")
        content_type = b"application/json" if mode == "huge" else b"text/event-stream"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        sent = 0
        piece = EVENT * 100 if mode == "many" else PIECE
        if mode == "endless":
            await send({"type": "http.response.body", "body": b'data: {"a": "', "more_body": True})
        start = trio.current_time()
        while sent < (20 * MB if mode == "endless" else 50 * MB):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            sent += len(piece)
            # Paced at up to RATE, so this process does not take a whole core of the shared machine
            # away from the gateway being measured. Against the clock: a fixed sleep a piece would
            # set the rate by the timer's granularity instead (0.5 ms asked, ~1.2 ms slept: 13 MB/s).
            # Late wake-ups are made up; a slow reader's backlog is not (no burst after a stall).
            start = max(start, trio.current_time() - sent / RATE - CATCH_UP)
            await trio.sleep_until(start + sent / RATE)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@asynccontextmanager
async def open_hostile() -> AsyncIterator[str]:
    """Start the hostile upstream in a child process; yields its root URL."""
    async with trio.open_nursery() as nursery:
        command = [sys.executable, "-m", "tests.support.hostile"]
        process: trio.Process = await nursery.start(partial(trio.run_process, command, stdout=-1, check=False))
        assert process.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(64)
            assert chunk, "the hostile upstream died before printing its port"
            line += chunk
        try:
            yield f"http://127.0.0.1:{int(line)}"
        finally:
            process.kill()


async def _main() -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, Hostile(), config)  # type: ignore[arg-type]
        print(binds[0].rsplit(":", 1)[1], flush=True)


if __name__ == "__main__":
    trio.run(_main)
