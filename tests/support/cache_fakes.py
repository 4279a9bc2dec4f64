"""A counting OpenAI-wire upstream for the response cache's tests: every chat or legacy completion
answer is numbered (`Answer 3 to: <last user text>`), so a second live answer never equals the
first and a replay is told from a fresh call; embeddings are vectors the test chooses per input.

Behaviour by the upstream model name: `fail` answers 500; `cut` streams half an answer and drops
the connection; `slow` waits on `release` before answering (for races). Only the fields OpenAI
takes are accepted (an unknown one, like a leaked `cache`, is a 400, as OpenAI answers)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import trio

from tests.support.fake_base import FakeServer, Seen
from tests.support.strict_openai import PARAMS

__all__ = ["CountingOpenAI"]

_USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
          "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
_COMPLETION_PARAMS = PARAMS | {"prompt", "echo", "suffix", "best_of"}


def _last_user(body: dict[str, Any]) -> str:
    if "prompt" in body:
        return str(body["prompt"])
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c or [])
    return ""


class _Cut(Exception):
    """Raised inside the ASGI app after half a stream: the server drops the connection."""


@dataclass
class CountingOpenAI(FakeServer):
    calls: int = 0
    """Chat and completion requests answered (embeddings are counted apart)."""
    embedding_calls: int = 0
    vectors: dict[str, list[float]] = field(default_factory=dict)
    """Input text -> its embedding; any other text gets a vector from its hash."""
    release: trio.Event = field(default_factory=trio.Event)
    arrived: int = 0

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def chat_bodies(self) -> list[dict[str, Any]]:
        return [s.body for s in self.seen if not s.path.endswith("/embeddings")]

    async def answer(self, seen: Seen, send: Any) -> None:
        body = seen.body if isinstance(seen.body, dict) else {}
        allowed = _COMPLETION_PARAMS if seen.path.endswith("/completions") and "prompt" in body else PARAMS | {"input",
                                                                                                              "dimensions",
                                                                                                              "encoding_format"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            await self.json(send, 400, {"error": {"message": f"Unrecognized request argument supplied: {unknown[0]}",
                                                  "type": "invalid_request_error", "param": None, "code": None}})
            return
        model = str(body.get("model"))
        if model == "fail":
            await self.json(send, 500, {"error": {"message": "The server had an error", "type": "server_error",
                                                  "param": None, "code": None}})
            return
        if seen.path.endswith("/embeddings"):
            self.embedding_calls += 1
            text = body["input"] if isinstance(body["input"], str) else body["input"][0]
            vec = self.vectors.get(text) or [b / 255 for b in hashlib.sha256(text.encode()).digest()[:8]]
            await self.json(send, 200, {"object": "list", "model": body["model"], "data": [
                {"object": "embedding", "index": 0, "embedding": vec}], "usage": {"prompt_tokens": 5,
                                                                                   "total_tokens": 5}})
            return
        if model == "slow":
            self.arrived += 1
            await self.release.wait()
        self.calls += 1
        text = f"Answer {self.calls} to: {_last_user(body)}"
        chat = seen.path.endswith("/chat/completions")
        tools = body.get("tools") or []
        call = None
        if chat and tools:
            call = {"id": f"call_{self.calls}", "type": "function",
                    "function": {"name": tools[0]["function"]["name"], "arguments": json.dumps({"n": self.calls})}}
        if body.get("stream"):
            await self.stream(send, _chunks(body, text, call, chat, model))
            if model == "cut":
                raise _Cut
            return
        if chat:
            msg: dict[str, Any] = {"role": "assistant", "content": None if call else text, "refusal": None}
            if call:
                msg["tool_calls"] = [call]
            choice: dict[str, Any] = {"index": 0, "message": msg, "logprobs": None,
                                      "finish_reason": "tool_calls" if call else "stop"}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
        await self.json(send, 200, {"id": f"cmpl-{self.calls}", "object": "chat.completion" if chat else
                                    "text_completion", "created": 1700000000, "model": model, "choices": [choice],
                                    "usage": _USAGE})

    async def stream(self, send: Any, raw: bytes, content_type: bytes = b"text/event-stream") -> None:
        if not raw.endswith(b"[DONE]\n\n"):  # `cut`: half the events, then the connection drops
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
            await send({"type": "http.response.body", "body": raw, "more_body": True})
            return
        await super().stream(send, raw, content_type)


def _chunks(body: dict[str, Any], text: str, call: dict[str, Any] | None, chat: bool, model: str) -> bytes:
    base = {"id": "cmpl-s", "object": "chat.completion.chunk" if chat else "text_completion",
            "created": 1700000000, "model": model}
    usage = (body.get("stream_options") or {}).get("include_usage") is True
    events: list[dict[str, Any]] = []

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if chat:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}

    if chat:
        events.append({**base, "choices": [choice({"role": "assistant", "content": ""})]})
    if call:
        events.append({**base, "choices": [choice({"tool_calls": [{"index": 0, **call, "function": {
            "name": call["function"]["name"], "arguments": ""}}]})]})
        args = call["function"]["arguments"]
        events += [{**base, "choices": [choice({"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 4]}}]})]}
                   for i in range(0, len(args), 4)]
    else:
        events += [{**base, "choices": [choice({"content": text[i:i + 6]})]} for i in range(0, len(text), 6)]
    if model == "cut":
        return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events[: len(events) // 2])
    events.append({**base, "choices": [choice({}, "tool_calls" if call else "stop")]})
    if usage:
        events.append({**base, "choices": [], "usage": _USAGE})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
