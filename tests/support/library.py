"""For the library's tests: a fake OpenAI upstream served from its own thread's Trio loop (so plain
and asyncio tests can use it), with a `gated` model whose stream waits for the test between its
first chunk and the rest, and spec text pointing at it."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from tests.support.upstream import FakeOpenAI


@dataclass
class GatedOpenAI(FakeOpenAI):
    gate: threading.Event = field(default_factory=threading.Event)
    """Set by the test to let the `gated` stream go on past its first chunk."""

    async def _answer(self, path: str, data: dict[str, Any], send: Any) -> None:
        if data.get("model") != "gated":
            await super()._answer(path, data, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        for i, word in enumerate(["Hi", " there", "!"]):
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gated",
                     "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                        "more_body": True})
            if i == 0:
                await trio.to_thread.run_sync(self.gate.wait, abandon_on_cancel=True)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


@contextmanager
def upstream_thread() -> Iterator[GatedOpenAI]:
    """The fake on 127.0.0.1, in a thread of its own, until the block ends."""
    fake = GatedOpenAI()
    ready = threading.Event()
    stop: list[Any] = []

    async def main() -> None:
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = None
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, fake, config)  # type: ignore[arg-type]
            fake.port = int(binds[0].rsplit(":", 1)[1])
            done = trio.Event()
            stop.extend([trio.lowlevel.current_trio_token(), done])
            ready.set()
            await done.wait()
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield fake
    finally:
        fake.gate.set()
        stop[0].run_sync_soon(stop[1].set)
        thread.join(10)


def library_spec(base_url: str, database: Path, *, auth: bool = False) -> str:
    """Groups: `chat` (its only target answers 500, `backup` is its fallback), `limited` (429),
    `slow` (a gated stream), `embed`, `stuck` (never answers); spend rows in sqlite at `database`. With `auth`: a key
    (`${LIB_TEST_KEY}`) in team `capped`, whose budget one call spends."""
    governance = """
auth:
  keys:
    - {name: lib, key: "${LIB_TEST_KEY}", team: capped}
teams:
  capped:
    budget: {amount: 0.01, period: 1d}
""" if auth else ""
    return f"""\
version: 1
providers:
  up: {{type: openai-compatible, base_url: "{base_url}"}}
models:
  chat:
    targets: [{{provider: up, model: fail-500, price: {{input: 1000, output: 1000}}}}]
    fallbacks: [backup]
  backup:
    targets: [{{provider: up, model: ok, price: {{input: 1000, output: 1000}}}}]
  limited:
    targets: [{{provider: up, model: rate-429}}]
  slow:
    targets: [{{provider: up, model: gated}}]
  embed:
    targets: [{{provider: up, model: ok}}]
  stuck:
    targets: [{{provider: up, model: hang}}]
store:
  database: "sqlite:///{database}"
{governance}"""


def spend_rows(database: Path) -> list[tuple[str, str, int, int]]:
    """(model, deployment, status, prompt tokens) of each spend row, oldest first."""
    with sqlite3.connect(database) as db:
        return db.execute("SELECT model, deployment, status, prompt_tokens FROM spendlog ORDER BY id").fetchall()
