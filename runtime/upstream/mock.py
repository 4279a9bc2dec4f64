"""The `mock` provider: a deterministic, in-process test double speaking OpenAI's wire format.

It sits behind the same transport seam as real upstreams, so everything between the client and
the wire (routing, caps, streaming relay, usage, errors) runs exactly as for a real provider.
Replies are canned text or an echo of the last user message; with `tools`, it calls a tool whose
arguments echo that message. Errors are injected at a seeded rate. Every answer is deterministic
but for its `id` (fresh and unique for each answer, as a real upstream's) and `created` time. It
is a test double for quickstarts, CI and benchmarks, not a model.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import secrets
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import trio

from sidegate.runtime.plan import MockBehaviour
from sidegate.runtime.upstream.transport import UpstreamRequest, UpstreamResponse, UpstreamStream

__all__ = ["MockTransport", "count_tokens"]

_TOKEN = re.compile(r"\S+\s*|\s+")
_JSON = httpx.Headers({"content-type": "application/json"})
_SSE = httpx.Headers({"content-type": "text/event-stream"})


def count_tokens(text: str) -> int:
    """The mock's tokenizer: whitespace-separated words (a deterministic stand-in)."""
    return len(_TOKEN.findall(text))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _error(status: int, message: str, kind: str) -> UpstreamResponse:
    body = orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})
    headers = httpx.Headers({"content-type": "application/json"})
    if status == 429:
        headers["retry-after"] = "1"
    return UpstreamResponse(status, headers, body)


class _Reply:
    """What the mock will answer to one chat or completion request."""

    def __init__(self, body: dict[str, Any], behaviour: MockBehaviour, chat: bool) -> None:
        self.model = str(body.get("model", "mock"))
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        if chat:
            messages = body.get("messages") or []
            prompt_text = " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            last = _text_of(users[-1].get("content")) if users else ""
            after_tool = bool(messages) and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"
        else:
            prompt = body.get("prompt", "")
            prompt_text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
            last, after_tool = prompt_text, False
        self.prompt_tokens = count_tokens(prompt_text) + (3 if chat else 0)
        self.tool: tuple[str, str, str] | None = None
        tools = body.get("tools") if chat else None
        if tools and body.get("tool_choice") != "none" and not after_tool:
            self.tool = self._tool_call(tools, body.get("tool_choice"), last)
        text = behaviour.text if behaviour.text is not None else last
        if after_tool:
            text = "Tool result: " + _text_of(messages[-1].get("content"))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        tokens = _TOKEN.findall(text) if self.tool is None else []
        self.finish = "tool_calls" if self.tool else "stop"
        if isinstance(limit, int) and 0 <= limit < len(tokens):
            tokens, self.finish = tokens[:limit], "length"
        self.tokens = tokens
        self.completion_tokens = len(tokens) if self.tool is None else count_tokens(self.tool[2])
        # A fresh id for every answer (as a real upstream gives): identical requests must not get the
        # same id, or clients and logs that key on it would mix two answers up. All chunks of one
        # stream share it. Everything else about the answer stays a pure function of the request.
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)

    @staticmethod
    def _tool_call(tools: Any, choice: Any, last: str) -> tuple[str, str, str] | None:
        functions = [t.get("function", {}) for t in tools if isinstance(t, dict)]
        if isinstance(choice, dict):
            wanted = choice.get("function", {}).get("name")
            functions = [f for f in functions if f.get("name") == wanted] or functions
        if not functions or not isinstance(functions[0].get("name"), str):
            return None
        fn = functions[0]
        props = (fn.get("parameters") or {}).get("properties") or {}
        required = (fn.get("parameters") or {}).get("required") or list(props)
        key = next((k for k in required if (props.get(k) or {}).get("type", "string") == "string"), "input")
        args = orjson.dumps({key: last}).decode()
        call_id = "call_" + hashlib.sha256((fn["name"] + args).encode()).hexdigest()[:24]
        return call_id, fn["name"], args

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class MockTransport:
    """A Transport that answers `mock://` URLs in-process, per its provider's behaviour."""

    def __init__(self, behaviour: MockBehaviour) -> None:
        self._b = behaviour
        self._rng = random.Random(behaviour.seed)

    def _inject(self) -> UpstreamResponse | None:
        if self._b.error_rate > 0 and self._rng.random() < self._b.error_rate:
            return _error(self._b.error_status, "mock: injected error", "server_error")
        return None

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Answer a whole request (streams are read to the end)."""
        async with self.stream(request) as resp:
            return UpstreamResponse(resp.status, resp.headers, await resp.read())

    @asynccontextmanager
    async def stream(self, request: UpstreamRequest) -> AsyncIterator[UpstreamStream]:
        """Answer a request; SSE bodies are produced token by token with the configured delays."""
        yield self._answer(request)

    async def aclose(self) -> None:
        """Nothing to close."""

    def _answer(self, request: UpstreamRequest) -> UpstreamStream:
        injected = self._inject()
        if injected is not None:
            return _Whole(injected)
        op = request.url.rsplit("/", 1)[-1].split("?", 1)[0]
        if request.method == "GET":
            return _Whole(UpstreamResponse(200, _JSON, orjson.dumps({"object": "list", "data": []})))
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return _Whole(_error(400, "mock: body is not JSON", "invalid_request_error"))
        if not isinstance(body, dict):
            return _Whole(_error(400, "mock: body must be an object", "invalid_request_error"))
        if op == "embeddings":
            return _Whole(self._embeddings(body))
        if op != "completions":
            return _Whole(_error(404, f"mock: no endpoint {op}", "invalid_request_error"))
        chat = request.url.endswith("/chat/completions")
        reply = _Reply(body, self._b, chat)
        return _Generated(reply, self._b, chat)

    def _embeddings(self, body: dict[str, Any]) -> UpstreamResponse:
        raw = body.get("input")
        items = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
        b64 = body.get("encoding_format") == "base64"
        data, tokens = [], 0
        for i, item in enumerate(items):
            text = item if isinstance(item, str) else orjson.dumps(item).decode()
            tokens += count_tokens(text) if isinstance(item, str) else len(item or [])
            vector = _vector(text, self._b.embedding_dimensions)
            emb: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if b64 else vector
            data.append({"object": "embedding", "index": i, "embedding": emb})
        out = {
            "object": "list",
            "data": data,
            "model": body.get("model", "mock"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return UpstreamResponse(200, _JSON, orjson.dumps(out))


def _vector(text: str, dims: int) -> list[float]:
    seed = hashlib.sha256(text.encode()).digest()
    rng = random.Random(seed)
    values = [rng.uniform(-1.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Round-trip through float32 so float and base64 encodings give identical numbers.
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]


class _Whole:
    """A complete response exposed as an UpstreamStream."""

    def __init__(self, response: UpstreamResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self._body = response.body

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        yield self._body

    async def read(self) -> bytes:
        return self._body


class _Generated:
    """A generated reply: a JSON body, or SSE events paced by the mock's latencies."""

    def __init__(self, reply: _Reply, behaviour: MockBehaviour, chat: bool) -> None:
        self._r, self._b, self._chat = reply, behaviour, chat
        self.status = 200
        self.headers = _SSE if reply.stream else _JSON
        self._created = int(time.time())

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_bytes()])

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        r, b = self._r, self._b
        if b.latency > 0:
            await trio.sleep(b.latency)
        if not r.stream:
            if b.latency_per_token > 0:
                await trio.sleep(b.latency_per_token * len(r.tokens))
            yield orjson.dumps(self._whole())
            return
        for i, event in enumerate(self._events()):
            if i > 1 and b.latency_per_token > 0:
                await trio.sleep(b.latency_per_token)
            yield b"data: " + orjson.dumps(event) + b"\n\n"
        yield b"data: [DONE]\n\n"

    def _base(self) -> dict[str, Any]:
        kind = "chat.completion" if self._chat else "text_completion"
        return {"id": self._r.id, "object": kind, "created": self._created, "model": self._r.model}

    def _whole(self) -> dict[str, Any]:
        r = self._r
        text = "".join(r.tokens)
        if not self._chat:
            choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": r.finish}
        else:
            message: dict[str, Any] = {"role": "assistant", "content": None if r.tool else text, "refusal": None}
            if r.tool:
                call_id, name, args = r.tool
                message["tool_calls"] = [
                    {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
                ]
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": r.finish}
        return {**self._base(), "choices": [choice], "usage": r.usage()}

    def _chunk(self, delta: dict[str, Any] | str, finish: str | None) -> dict[str, Any]:
        base = self._base()
        base["object"] = "chat.completion.chunk" if self._chat else "text_completion"
        if self._chat:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}
        base["choices"] = [choice]
        if self._r.include_usage:
            base["usage"] = None
        return base

    def _events(self) -> list[dict[str, Any]]:
        r = self._r
        events: list[dict[str, Any]] = []
        if self._chat:
            events.append(self._chunk({"role": "assistant", "content": "" if r.tool is None else None}, None))
        if r.tool is not None:
            call_id, name, args = r.tool
            head = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
            events.append(self._chunk({"tool_calls": [head]}, None))
            for start in range(0, len(args), 8):
                piece = {"index": 0, "function": {"arguments": args[start : start + 8]}}
                events.append(self._chunk({"tool_calls": [piece]}, None))
        for token in r.tokens:
            events.append(self._chunk({"content": token} if self._chat else token, None))
        events.append(self._chunk({} if self._chat else "", r.finish))
        if r.include_usage:
            final = self._base()
            final["object"] = "chat.completion.chunk" if self._chat else "text_completion"
            final["choices"] = []
            final["usage"] = r.usage()
            events.append(final)
        return events
