"""The line reader under the MCP stdio and SSE upstreams: linear in the bytes however they are
split (a 16 MB message in 2 KB pieces took seconds when each piece re-copied the buffer), bounded,
and exact."""

from __future__ import annotations

import time

import pytest
import trio

from sidegate.runtime.mcp.sse import Lines, sse_events


def test_a_long_line_in_small_pieces_costs_linear_time() -> None:
    line = b"x" * (16 * 1024 * 1024 - 1)
    lines = Lines()
    t0 = time.process_time()
    out: list[bytes] = []
    for i in range(0, len(line), 2048):
        out += lines.feed(line[i:i + 2048])
    out += lines.feed(b"\n")
    assert time.process_time() - t0 < 3.0  # quadratic copying took ~15 s here; linear takes ~0.05 s
    assert out == [line]


def test_lines_are_split_exactly_and_bounded() -> None:
    lines = Lines(limit=10)
    assert lines.feed(b"ab\ncd") == [b"ab"]
    assert lines.feed(b"e\n\nf") == [b"cde", b""]
    assert lines.feed(b"") == []
    with pytest.raises(ValueError):
        lines.feed(b"0123456789abc")  # the unfinished line passed the limit
    with pytest.raises(ValueError):
        Lines(limit=4).feed(b"0123456789\n")  # so did a complete one


async def test_sse_events_from_any_split() -> None:
    raw = b"event: message\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n: comment\n\ndata: two\n\n"

    async def pieces(step: int):  # type: ignore[no-untyped-def]
        for i in range(0, len(raw), step):
            yield raw[i:i + step]
            await trio.lowlevel.checkpoint()

    for step in (1, 3, 7, len(raw)):
        got = [e async for e in sse_events(pieces(step))]
        assert got == [("message", "{\"a\":\n1}"), ("message", "two")], step
