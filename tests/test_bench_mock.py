"""The benchmark's mock upstream answers as OpenAI does (each SSE event its own chunk of the chunked
body; a usage event only when the request asks for it), keeps pipelined requests in order, paces
streams with their send times embedded, and the paced client reads those times back. Each test runs
the mock on a free port and reads its raw bytes: fast, no wrk."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.bench import mock_upstream, paced

OPTS = mock_upstream.Options(events=3, paced_events=4, rate=200.0)


def post(body: dict[str, Any] | bytes, *, chunked: bool = False) -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if chunked:
        half = len(raw) // 2
        framed = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, raw[:half], len(raw) - half, raw[half:])
        return b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + framed
    return b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(raw), raw)


def chunks_of(raw: bytes) -> tuple[bytes, list[bytes], bytes]:
    """(head, the chunks of a chunked body, what follows the last chunk)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    out: list[bytes] = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return head, out, rest[2:]
        out.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]


async def _exchange(request: bytes, until: bytes, opts: mock_upstream.Options = OPTS) -> bytes:
    server = await mock_upstream.serve(0, opts)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    data = b""
    while data.count(until) < request.count(b"POST ") and (more := await asyncio.wait_for(reader.read(65536), 5)):
        data += more
    writer.close()
    server.close()
    return data


def exchange(request: bytes, until: bytes = b"\r\n0\r\n\r\n") -> bytes:
    return asyncio.run(_exchange(request, until))


def sse(events: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for e in events:
        assert e.startswith(b"data: ") and e.endswith(b"\n\n") and e.count(b"\n\n") == 1, e
        if e != b"data: [DONE]\n\n":
            out.append(json.loads(e[6:]))
    return out


def test_each_event_is_its_own_chunk_and_no_usage_unless_asked() -> None:
    head, chunks, rest = chunks_of(exchange(post({"model": "m", "stream": True})))
    assert b"transfer-encoding: chunked" in head and rest == b""
    assert len(chunks) == 3 + 2 and chunks[-1] == b"data: [DONE]\n\n"
    events = sse(chunks)
    assert all("usage" not in e for e in events)
    assert [e["choices"][0]["delta"].get("content") for e in events] == ["tok0 ", "tok1 ", "tok2 ", None]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_include_usage_adds_a_usage_event_with_no_choices() -> None:
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    _, chunks, _ = chunks_of(exchange(post(body)))
    events = sse(chunks)
    assert len(events) == 5
    assert all(e["usage"] is None for e in events[:-1])
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 3


def test_one_chunk_model_sends_the_whole_stream_in_one_chunk() -> None:
    _, chunks, _ = chunks_of(exchange(post({"model": "bench-one-chunk", "stream": True})))
    assert len(chunks) == 1 and chunks[0].count(b"data: ") == 5 and chunks[0].endswith(b"data: [DONE]\n\n")


def test_pipelined_requests_answer_in_order_including_chunked_bodies() -> None:
    request = (post({"model": "m"}) + post({"model": "bench-paced", "stream": True}, chunked=True)
               + post({"model": "m"}) + post(b"not json"))
    raw = asyncio.run(_exchange(request, b"HTTP/1.1 200 OK"))  # the last two wait for the paced stream
    answers = raw.split(b"HTTP/1.1 200 OK")[1:]
    assert len(answers) == 4
    assert b"application/json" in answers[0] and b"text/event-stream" in answers[1]
    assert answers[1].count(b"tok@") == 4 and b"[DONE]" in answers[1]
    assert b"chat.completion\"" in answers[2] and b"chat.completion\"" in answers[3]


def test_paced_events_carry_their_send_time_on_the_timetable() -> None:
    _, chunks, _ = chunks_of(exchange(post({"model": "bench-paced", "stream": True})))
    sent = [int(e["choices"][0]["delta"]["content"][4:]) for e in sse(chunks)[:4]]
    assert sent == sorted(sent)
    # 200 events/s on a fixed timetable from the first: event i never leaves before i * 5 ms (a late
    # one may be followed closely by the next, so no bound on single gaps on a loaded machine).
    assert all((t - sent[0]) / 1e6 >= i * 5 - 0.5 for i, t in enumerate(sent)), sent


async def _paced_run(cut_after: int) -> paced.Tally:
    server = await mock_upstream.serve(0, OPTS)
    port = server.sockets[0].getsockname()[1]
    tally, _ = await paced.run(f"http://127.0.0.1:{port}/v1/chat/completions", 20, cut_after=cut_after,
                               ramp=0.05, deadline=10)
    server.close()
    return tally


def test_the_paced_client_reads_every_event_and_its_delay() -> None:
    tally = asyncio.run(_paced_run(0))
    assert (tally.completed, tally.errors, len(tally.delays_ns)) == (20, 0, 80)
    assert tally.events == 20 * 6  # 4 paced, the finish event, [DONE]
    assert all(0 < d < 1e9 for d in tally.delays_ns)
    assert len(tally.first_ns) == 20


def test_the_paced_client_cuts_streams() -> None:
    tally = asyncio.run(_paced_run(2))
    assert (tally.cut, tally.completed, tally.errors) == (20, 0, 0)


def test_a_marker_split_across_reads_is_counted_once() -> None:
    class _T:
        def write(self, data: bytes) -> None:
            pass

        def close(self) -> None:
            pass

    async def go() -> paced.Tally:
        tally = paced.Tally()
        s = paced._Stream(b"", tally, 0, asyncio.get_running_loop().create_future())
        s.transport = _T()  # type: ignore[assignment]
        body = b"HTTP/1.1 200 OK\r\n\r\n" + b"".join(
            mock_upstream.chunk(mock_upstream.event(f"tok@{1000 + i} ", usage=False)) for i in range(3))
        body += mock_upstream.chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        for i in range(0, len(body), 7):
            s.data_received(body[i : i + 7])
        return tally

    tally = asyncio.run(go())
    assert (len(tally.delays_ns), tally.events, tally.completed) == (3, 4, 1)


def test_percentile_by_nearest_rank() -> None:
    assert paced.percentile(list(range(1, 101)), 0.99) == 99.0
    assert paced.percentile([5], 0.5) == 5.0 and paced.percentile([], 0.5) == 0.0
