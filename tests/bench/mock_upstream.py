"""A fast OpenAI-wire mock upstream for benchmarks: a raw asyncio protocol server (no framework),
so the upstream costs as little as possible and the gateway's overhead is what gets measured.

POST .../chat/completions answers a fixed chat completion; with `"stream": true` in the body it
answers SSE with CHUNKS content events (sent together), a finish event, a usage event and [DONE].
Usage: python -m tests.bench.mock_upstream PORT [CHUNKS]
"""

from __future__ import annotations

import asyncio
import json
import sys

_BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16},
}, separators=(",", ":")).encode()


def _sse(chunks: int) -> bytes:
    base = '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench",'
    events = [f'data: {base}"choices":[{{"index":0,"delta":{{"content":"tok{i} "}},"finish_reason":null}}],"usage":null}}\n\n'
              for i in range(chunks)]
    events.append(f'data: {base}"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}],"usage":null}}\n\n')
    events.append(f'data: {base}"choices":[],"usage":{{"prompt_tokens":10,"completion_tokens":{chunks},'
                  f'"total_tokens":{10 + chunks}}}}}\n\n')
    events.append("data: [DONE]\n\n")
    payload = "".join(events).encode()
    # Chunked transfer encoding, as streaming servers send it: one chunk, then the terminator.
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n")


class _Protocol(asyncio.Protocol):
    def __init__(self, whole: bytes, stream: bytes) -> None:
        self.buf = b""
        self.whole = whole
        self.stream = stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            streaming = b'"stream":true' in body.replace(b" ", b"")
            self.transport.write(self.stream if streaming else self.whole)  # type: ignore[attr-defined]


async def main(port: int, chunks: int) -> None:
    whole = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
             + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)
    stream = _sse(chunks)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Protocol(whole, stream), "127.0.0.1", port, backlog=2048)
    print(f"mock upstream on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 20))
