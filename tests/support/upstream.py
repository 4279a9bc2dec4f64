"""A fake OpenAI upstream: a real HTTP server on 127.0.0.1 (hypercorn, in the test's Trio loop)
speaking OpenAI's documented wire format for chat completions, completions and embeddings.

Behaviour is chosen by the upstream model name the gateway sends:
  `ok` (default)     a normal answer; streams are split at odd byte boundaries
  `fail-500`         HTTP 500 with OpenAI's error envelope
  `rate-429`         HTTP 429 with `retry-after: 7`
  `bad-request`      HTTP 400 naming a parameter
  `hang`             never answers (for deadlines)
  `break-stream`     a stream that stops mid-way (connection dropped, no [DONE])
  `slow-stream`      a stream with 50 ms between events
  `no-usage`         an answer without usage (no usage member; a stream without the usage chunk)
Every request is recorded (method, path, query, headers, JSON body).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from tests.support.fake_base import lifespan, read_all


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    client: tuple[str, int] | None = None


@dataclass
class FakeOpenAI:
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    cancelled: int = 0
    """Requests whose handler was cancelled (the gateway went away)."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_all(receive)
        data = json.loads(body) if body else None
        self.seen.append(Seen(scope["method"], scope["path"], scope["query_string"].decode(),
                              {k.decode(): v.decode() for k, v in scope["headers"]}, data,
                              tuple(scope["client"]) if scope.get("client") else None))
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                # The gateway hanging up mid-request shows as http.disconnect before we answered.
                if (await receive())["type"] == "http.disconnect" and not done:
                    self.cancelled += 1
                    nursery.cancel_scope.cancel()

            done = False
            nursery.start_soon(watch)
            await self._answer(scope["path"], data or {}, send)
            done = True
            nursery.cancel_scope.cancel()

    async def _json(self, send: Any, status: int, obj: Any, headers: list[tuple[bytes, bytes]] = []) -> None:
        raw = json.dumps(obj).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers]})
        await send({"type": "http.response.body", "body": raw})

    async def _answer(self, path: str, data: dict[str, Any], send: Any) -> None:
        model = str(data.get("model", "ok"))
        mode = model.split(":")[0]
        if mode == "fail-500":
            await self._json(send, 500, {"error": {"message": "The server had an error", "type": "server_error",
                                                   "param": None, "code": None}})
            return
        if mode == "rate-429":
            await self._json(send, 429, {"error": {"message": "Rate limit reached for requests",
                                                   "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
                             [(b"retry-after", b"7")])
            return
        if mode == "bad-request":
            await self._json(send, 400, {"error": {"message": "Unrecognized request argument supplied: foo",
                                                   "type": "invalid_request_error", "param": "foo", "code": None}})
            return
        if mode == "hang":
            await trio.sleep_forever()
        if path.endswith("/embeddings"):
            await self._embeddings(send, data)
            return
        chat = path.endswith("/chat/completions")
        if data.get("stream"):
            await self._stream(send, data, chat, mode)
            return
        usage = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13,
                 "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 0}}
        if chat:
            msg: dict[str, Any] = {"role": "assistant", "content": "Hi there!", "refusal": None}
            finish = "stop"
            if data.get("tools"):
                name = data["tools"][0]["function"]["name"]
                msg = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                    {"id": "call_abc123", "type": "function",
                     "function": {"name": name, "arguments": "{\"location\": \"Paris\"}"}}]}
                finish = "tool_calls"
            obj = {"id": "chatcmpl-123", "object": "chat.completion", "created": 1700000000, "model": model,
                   "system_fingerprint": "fp_1", "choices": [{"index": 0, "message": msg, "logprobs": None,
                                                              "finish_reason": finish}], "usage": usage}
        else:
            obj = {"id": "cmpl-123", "object": "text_completion", "created": 1700000000, "model": model,
                   "choices": [{"index": 0, "text": "Hi there!", "logprobs": None, "finish_reason": "stop"}],
                   "usage": usage}
        if mode == "no-usage":
            del obj["usage"]
        await self._json(send, 200, obj)

    async def _embeddings(self, send: Any, data: dict[str, Any]) -> None:
        import base64
        import struct

        inputs = data["input"] if isinstance(data["input"], list) else [data["input"]]
        out = []
        for i, _ in enumerate(inputs):
            vec = [0.5, -0.25, 0.125]
            emb: Any = vec
            if data.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack("<3f", *vec)).decode()
            out.append({"object": "embedding", "index": i, "embedding": emb})
        await self._json(send, 200, {"object": "list", "data": out, "model": data["model"],
                                     "usage": {"prompt_tokens": 3, "total_tokens": 3}})

    async def _stream(self, send: Any, data: dict[str, Any], chat: bool, mode: str) -> None:
        base = {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1700000000,
                "model": data["model"], "system_fingerprint": "fp_1"}
        with_usage = (data.get("stream_options") or {}).get("include_usage") and mode != "no-usage"
        extra = {"usage": None} if with_usage else {}
        events = []
        if chat and data.get("tools"):
            name = data["tools"][0]["function"]["name"]
            deltas = [{"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": "call_abc123", "type": "function", "function": {"name": name, "arguments": ""}}]}]
            for piece in ["{\"loc", "ation\": ", "\"Paris\"}"]:
                deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            finish = "tool_calls"
        else:
            deltas = [{"role": "assistant", "content": ""}] + [{"content": w} for w in ["Hi", " there", "!"]]
            finish = "stop"
        for d in deltas:
            choice = {"index": 0, "delta": d, "logprobs": None, "finish_reason": None} if chat else \
                {"index": 0, "text": d.get("content", ""), "logprobs": None, "finish_reason": None}
            events.append({**base, "choices": [choice], **extra})
        last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish} if chat else \
            {"index": 0, "text": "", "logprobs": None, "finish_reason": finish}
        events.append({**base, "choices": [last], **extra})
        if with_usage:
            events.append({**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                                            "total_tokens": 12}})
        raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        if mode == "break-stream":
            await send({"type": "http.response.body", "body": raw[: len(raw) // 2], "more_body": True})
            await trio.sleep(0.05)
            raise RuntimeError("fake upstream drops the connection mid-stream")
        step = 37  # odd boundaries: events and even lines are split across writes
        for start in range(0, len(raw), step):
            await send({"type": "http.response.body", "body": raw[start : start + step], "more_body": True})
            await trio.sleep(0.05 if mode == "slow-stream" else 0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@asynccontextmanager
async def open_fake_openai() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, fake, config)  # type: ignore[arg-type]
        fake.port = int(binds[0].rsplit(":", 1)[1])
        yield fake
        nursery.cancel_scope.cancel()
