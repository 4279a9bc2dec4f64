"""A fast OpenAI-wire mock upstream for benchmarks: a raw asyncio protocol server (no framework),
so the upstream costs as little as possible and the gateway's overhead is what gets measured.

POST .../chat/completions answers a fixed chat completion. With `"stream": true` it answers SSE the
way OpenAI and vLLM do: each event is its own chunk of the chunked body, written with its own
transport.write (so on its own TCP segment): EVENTS content events, a finish event, then, only when
the request asks with `stream_options.include_usage`, a usage event with `"choices": []` (and every
event before it carries `"usage": null`; without the option no event has a usage field), then
`data: [DONE]`. The request's model picks the variant, so one mock serves every scenario:

- a model containing `one-chunk` (or every stream, with `--one-chunk`): the whole stream in ONE
  chunk, the unrealistic case the benchmark measured before (kept as a labelled extra scenario);
- a model containing `paced`: PACED_EVENTS content events at RATE events/s, sent on asyncio timers
  on a fixed schedule from the request's arrival. Each carries its send time as content
  `tok@<time.monotonic_ns()> ` (and in its id): CLOCK_MONOTONIC is system-wide, so a client on the
  same machine computes each event's relay delay as its own receive time minus that.

Requests may be pipelined on a keep-alive connection; answers go out in order (a paced answer holds
the ones behind it). Bodies are read by content-length or chunked transfer encoding.

Usage: python -m tests.bench.mock_upstream PORT [EVENTS] [--one-chunk] [--paced-events 20] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass

_BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16},
}, separators=(",", ":")).encode()
_WHOLE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
_SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
_END = b"0\r\n\r\n"
_BASE = '{{"id":"chatcmpl-{id}","object":"chat.completion.chunk","created":1700000000,"model":"bench",'


def event(content: str | None, *, usage: bool, eid: str = "bench", finish: bool = False) -> bytes:
    """One `data: ...\\n\\n` content event (content None and finish: the finish event)."""
    delta = "{}" if content is None else json.dumps({"content": content}, separators=(",", ":"))
    tail = ',"usage":null}' if usage else "}"
    reason = '"stop"' if finish else "null"
    return (f'data: {_BASE.format(id=eid)}"choices":[{{"index":0,"delta":{delta},"finish_reason":{reason}}}]'
            f"{tail}\n\n").encode()


def usage_event(completion_tokens: int) -> bytes:
    return (f'data: {_BASE.format(id="bench")}"choices":[],"usage":{{"prompt_tokens":10,'
            f'"completion_tokens":{completion_tokens},"total_tokens":{10 + completion_tokens}}}}}\n\n').encode()


def events(n: int, *, usage: bool) -> list[bytes]:
    """The SSE events of an unpaced stream of `n` content events."""
    out = [event(f"tok{i} ", usage=usage) for i in range(n)]
    out.append(event(None, usage=usage, finish=True))
    if usage:
        out.append(usage_event(n))
    out.append(b"data: [DONE]\n\n")
    return out


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass(frozen=True)
class Options:
    events: int = 20
    one_chunk: bool = False
    paced_events: int = 20
    rate: float = 50.0


class _Protocol(asyncio.Protocol):
    """One connection: parse requests as they arrive, answer them in order."""

    def __init__(self, opts: Options, canned: dict[tuple[bool, bool], list[bytes]]) -> None:
        self.opts = opts
        self.canned = canned
        self.buf = b""
        self.queue: deque[bytes] = deque()  # request bodies; b"-": not a chat completion
        self.pacing: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pacing is not None:
            self.pacing.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (parsed := self._parse()) is not None:
            self.queue.append(parsed)
        if self.pacing is None:
            self._answer()

    def _parse(self) -> bytes | None:
        """Take one whole request off the buffer and return its body (b"-" for other paths)."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buf[:end].lower()
        lines = head.split(b"\r\n")
        length, chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
        start = end + 4
        if chunked:
            body, stop = _dechunk(self.buf, start)
            if body is None:
                return None
        else:
            if len(self.buf) < start + length:
                return None
            body, stop = self.buf[start : start + length], start + length
        self.buf = self.buf[stop:]
        return body if b"/chat/completions" in lines[0] else b"-"

    def _answer(self) -> None:
        """Answer queued requests until one starts a paced stream (it resumes the queue when done)."""
        while self.queue and not self.transport.is_closing():
            body = self.queue.popleft()
            if body == b"-":
                self.transport.write(_NOT_FOUND)
                continue
            if b"stream" not in body:
                self.transport.write(_WHOLE)
                continue
            req = json.loads(body)
            if req.get("stream") is not True:
                self.transport.write(_WHOLE)
                continue
            usage = (req.get("stream_options") or {}).get("include_usage") is True
            model = str(req.get("model", ""))
            self.transport.write(_SSE_HEAD)
            if "paced" in model:
                self._pace(usage, 0, asyncio.get_running_loop().time())
                return
            for ev in self.canned[(usage, self.opts.one_chunk or "one-chunk" in model)]:
                if self.transport.is_closing():  # the client left (wrk stopping): asyncio warns on
                    return  # every write past that
                self.transport.write(ev)

    def _pace(self, usage: bool, i: int, t0: float) -> None:
        """Send paced event `i` now, then schedule the next one on the stream's fixed timetable."""
        self.pacing = None
        if self.closed or self.transport.is_closing():
            return
        n, write = self.opts.paced_events, self.transport.write
        if i < n:
            now = time.monotonic_ns()
            write(chunk(event(f"tok@{now} ", usage=usage, eid=str(now))))
            loop = asyncio.get_running_loop()
            self.pacing = loop.call_at(t0 + (i + 1) / self.opts.rate, self._pace, usage, i + 1, t0)
            return
        write(chunk(event(None, usage=usage, finish=True)))
        if usage:
            write(chunk(usage_event(n)))
        write(chunk(b"data: [DONE]\n\n"))
        write(_END)
        self._answer()


def _dechunk(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    """A chunked body starting at `pos`: (body, end) or (None, pos) while incomplete (no trailers)."""
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None, pos
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            if len(buf) < eol + 4:
                return None, pos
            return b"".join(parts), eol + 4
        if len(buf) < eol + 2 + size + 2:
            return None, pos
        parts.append(buf[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2


def canned(opts: Options) -> dict[tuple[bool, bool], list[bytes]]:
    """Precomputed writes of unpaced streams by (include_usage, one chunk): one write per event."""
    out: dict[tuple[bool, bool], list[bytes]] = {}
    for usage in (False, True):
        evs = events(opts.events, usage=usage)
        out[(usage, False)] = [*(chunk(e) for e in evs), _END]
        out[(usage, True)] = [chunk(b"".join(evs)) + _END]
    return out


async def serve(port: int, opts: Options) -> asyncio.Server:
    """Listen on 127.0.0.1:`port` (0: any free port; read it from the server's sockets)."""
    loop = asyncio.get_running_loop()
    writes = canned(opts)
    return await loop.create_server(lambda: _Protocol(opts, writes), "127.0.0.1", port, backlog=4096)


async def main(port: int, opts: Options) -> None:
    server = await serve(port, opts)
    print(f"mock upstream on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("port", type=int)
    ap.add_argument("events", type=int, nargs="?", default=20, help="content events of an unpaced stream")
    ap.add_argument("--one-chunk", action="store_true", help="every unpaced stream in one chunk")
    ap.add_argument("--paced-events", type=int, default=20)
    ap.add_argument("--rate", type=float, default=50.0, help="paced events per second")
    a = ap.parse_args()
    asyncio.run(main(a.port, Options(a.events, a.one_chunk, a.paced_events, a.rate)))


if __name__ == "__main__":
    cli()
