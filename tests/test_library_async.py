"""The library from asyncio (`asyncio.run`) and from Trio: the same Gateway, its runtime thread
bridged to the caller's loop, which is never blocked; cancelling a call cancels the upstream one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

import sidegate
from tests.support.library import GatedOpenAI, library_spec, spend_rows, upstream_thread


@pytest.fixture
def fake() -> Iterator[GatedOpenAI]:
    with upstream_thread() as upstream:
        yield upstream


def _text(chunks: list[sidegate.Result]) -> str:
    return "".join(c.choices[0].delta.get("content") or "" for c in chunks if c.choices)


async def _collect(chunks: AsyncIterator[sidegate.Result]) -> list[sidegate.Result]:
    return [c async for c in chunks]


def test_asyncio_calls_fall_back_run_concurrently_and_write_spend_rows(fake: GatedOpenAI, tmp_path: Path) -> None:
    db = tmp_path / "s.db"

    async def main() -> tuple[list[sidegate.Result], sidegate.Result]:
        async with sidegate.Gateway.from_spec(library_spec(fake.base_url, db)) as gw:
            many = await asyncio.gather(*(gw.acompletion("backup", [sidegate.user_message(f"hi {i}")])
                                          for i in range(5)))
            fallback = await gw.acompletion("chat", [sidegate.user_message("hi")])
            await gw.aembedding("embed", "x")
            return list(many), fallback

    many, fallback = asyncio.run(main())
    assert [m.choices[0].message.content for m in many] == ["Hi there!"] * 5
    assert fallback.choices[0].message.content == "Hi there!"
    rows = spend_rows(db)
    assert len(rows) == 7 and ("chat", "up/ok", 200, 11) in rows


def test_asyncio_streams_arrive_incrementally_while_the_loop_keeps_running(fake: GatedOpenAI,
                                                                           tmp_path: Path) -> None:
    async def main() -> tuple[str, list[str], int]:
        ticks = 0

        async def ticker() -> None:  # the asyncio loop is not blocked while the stream waits
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        async with sidegate.Gateway.from_spec(library_spec(fake.base_url, tmp_path / "s.db")) as gw:
            task = asyncio.create_task(ticker())
            chunks = await gw.acompletion("slow", [sidegate.user_message("hi")], stream=True)
            first = await anext(chunks)
            assert not fake.gate.is_set()  # the upstream still holds the rest
            before = ticks
            fake.gate.set()
            rest = [c.choices[0].delta.content for c in await _collect(chunks)]
            task.cancel()
            return first.choices[0].delta.content, rest, ticks - before

    first, rest, ticks = asyncio.run(main())
    assert first == "Hi" and rest == [" there", "!"] and ticks > 0


def test_asyncio_errors_are_typed(fake: GatedOpenAI, tmp_path: Path) -> None:
    async def main() -> sidegate.RateLimitError:
        async with sidegate.Gateway.from_spec(library_spec(fake.base_url, tmp_path / "s.db")) as gw:
            try:
                await gw.acompletion("limited", [sidegate.user_message("hi")])
            except sidegate.RateLimitError as exc:
                return exc
            raise AssertionError("no error")

    assert asyncio.run(main()).retry_after == 7.0


def test_cancelling_an_asyncio_call_cancels_the_upstream_call(fake: GatedOpenAI, tmp_path: Path) -> None:
    db = tmp_path / "s.db"

    async def main() -> None:
        async with sidegate.Gateway.from_spec(library_spec(fake.base_url, db)) as gw:
            call = asyncio.create_task(gw.acompletion("stuck", [sidegate.user_message("hi")]))
            while not fake.seen:  # the upstream has the request
                await asyncio.sleep(0.01)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            deadline = time.monotonic() + 10
            while fake.cancelled == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

    asyncio.run(main())
    assert fake.cancelled == 1
    assert [row[2] for row in spend_rows(db)] == [499]


async def test_trio_calls_streams_and_errors(fake: GatedOpenAI, tmp_path: Path) -> None:
    async with sidegate.Gateway.from_spec(library_spec(fake.base_url, tmp_path / "s.db")) as gw:
        answers: list[str] = []
        async with trio.open_nursery() as nursery:
            async def one(i: int) -> None:
                answer = await gw.acompletion("chat", [sidegate.user_message(f"hi {i}")])
                answers.append(answer.choices[0].message.content)
            for i in range(3):
                nursery.start_soon(one, i)
        chunks = await gw.acompletion("slow", [sidegate.user_message("hi")], stream=True)
        first = await anext(chunks)
        assert not fake.gate.is_set() and first.choices[0].delta.content == "Hi"
        fake.gate.set()
        rest = await _collect(chunks)
        with pytest.raises(sidegate.RateLimitError):
            await gw.acompletion("limited", [sidegate.user_message("hi")])
        message = await gw.amessages("backup", [sidegate.user_message("hi")], max_tokens=8)
        response = await gw.aresponses("backup", "hi")
    assert answers == ["Hi there!"] * 3 and _text(rest) == " there!"
    assert message.content[0].text == "Hi there!" and response.output[0].content[0].text == "Hi there!"


async def test_a_trio_cancel_scope_cancels_the_upstream_call(fake: GatedOpenAI, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with sidegate.Gateway.from_spec(library_spec(fake.base_url, db)) as gw:
        async with trio.open_nursery() as nursery:
            async def call() -> None:
                await gw.acompletion("stuck", [sidegate.user_message("hi")])
            nursery.start_soon(call)
            while not fake.seen:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        with trio.fail_after(10):
            while fake.cancelled == 0:
                await trio.sleep(0.01)
    assert [row[2] for row in spend_rows(db)] == [499]


def test_a_closed_gateway_refuses_calls(fake: GatedOpenAI, tmp_path: Path) -> None:
    gw = sidegate.Gateway.from_spec(library_spec(fake.base_url, tmp_path / "s.db"))
    gw.close()
    gw.close()  # idempotent
    with pytest.raises(sidegate.ServiceUnavailable):
        gw.completion("backup", [sidegate.user_message("hi")])


def test_a_gateway_that_cannot_start_raises_and_leaves_no_thread(tmp_path: Path) -> None:
    import threading

    spec = ("version: 1\nproviders:\n  f: {type: mock}\nmodels:\n  m: {targets: [{provider: f, model: x}]}\n"
            f"store: {{database: \"sqlite:///{tmp_path}/missing/dir/s.db\"}}\n")
    with pytest.raises(OSError):
        sidegate.Gateway.from_spec(spec)
    assert not [t for t in threading.enumerate() if t.name == "sidegate-runtime"]


def test_a_gateway_left_open_writes_its_spend_rows_at_exit(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = tmp_path / "s.db"
    spec = ("version: 1\nproviders:\n  f: {type: mock}\nmodels:\n  m: {targets: [{provider: f, model: x}]}\n"
            f"store: {{database: \"sqlite:///{db}\"}}\n")
    code = (f"import sidegate; gw = sidegate.Gateway.from_spec({spec!r}); "
            "gw.completion('m', [sidegate.user_message('hi')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [row[:3] for row in spend_rows(db)] == [("m", "f/x", 200)]
