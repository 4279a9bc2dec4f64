"""Inbound Anthropic Messages API (`POST /v1/messages`, https://docs.anthropic.com/en/api/messages):
pure translation between Anthropic's request/answer/stream/error shapes and OpenAI's, so any
backend can serve Anthropic clients (the `anthropic` SDK, Claude Code via `ANTHROPIC_BASE_URL`).

The request half (Messages -> OpenAI, by the target's capabilities) is `runtime.http.anthropic.request`
following the rules table of `runtime.upstream.translation`.

When the chosen target is itself Anthropic the body should not come here: the proxy forwards it
untouched (`runtime.upstream.providers.anthropic.passthrough_request` / `AnthropicRelay`).
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.runtime.errors import GatewayError, GuardrailBlocked
from sidegate.runtime.http.anthropic.request import anthropic_to_openai
from sidegate.runtime.upstream.openai_wire import Usage, valid_usage
from sidegate.runtime.upstream.providers.common import SseParser
from sidegate.runtime.upstream.tokens import REPLY_OVERHEAD, prompt_tokens

__all__ = [
    "OpenAIToAnthropicStream",
    "anthropic_error_body",
    "anthropic_error_event",
    "anthropic_to_openai",
    "estimate_input_tokens",
    "openai_to_anthropic_response",
]

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
         "content_filter": "refusal"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                503: "overloaded_error", 529: "overloaded_error"}


def _anthropic_usage(usage: Usage | None) -> dict[str, int]:
    u = usage or Usage()
    return {"input_tokens": max(0, u.prompt - u.cached), "output_tokens": u.completion,
            "cache_read_input_tokens": u.cached, "cache_creation_input_tokens": 0}


def _arguments(raw: Any) -> Any:
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}


def openai_to_anthropic_response(openai_json: bytes | dict[str, Any], model: str) -> bytes:
    """An Anthropic `message` for an OpenAI `chat.completion`."""
    obj = orjson.loads(openai_json) if isinstance(openai_json, bytes) else openai_json
    choice = (obj.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                        "input": _arguments(fn.get("arguments"))})
    return orjson.dumps({
        "id": f"msg_{obj.get('id') or 'sidegate'}", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": _STOP.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None, "usage": _anthropic_usage(valid_usage(obj)),
    })


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"


def anthropic_error_body(err: GatewayError, request_id: str | None = None) -> bytes:
    """Anthropic's error envelope `{"type": "error", "error": {"type", "message"}}` for `err`."""
    kind = _ERROR_TYPES.get(err.status) or ("invalid_request_error" if err.status < 500 else "api_error")
    payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": err.message}}
    if isinstance(err, GuardrailBlocked):
        payload["error"].update(code=err.code, guardrail=err.guardrail)
    if request_id:
        payload["request_id"] = request_id
    return orjson.dumps(payload)


def anthropic_error_event(err: GatewayError) -> bytes:
    """The `event: error` that ends an Anthropic stream that already started."""
    return b"event: error\ndata: " + anthropic_error_body(err) + b"\n\n"


class OpenAIToAnthropicStream:
    """OpenAI chunk SSE bytes -> Anthropic SSE events with `event:` lines.

    Text, reasoning and each tool call become content blocks in the order they appear; `[DONE]`
    closes the open block and sends `message_delta` (stop reason and usage) and `message_stop`.
    """

    def __init__(self, model: str, input_tokens: int = 0) -> None:
        self.model = model
        self.input_tokens = input_tokens
        """The prompt estimate `message_start` reports (message_delta carries the upstream's count)."""
        self.usage: Usage | None = None
        self.done = False
        self._parser = SseParser()
        self._started = False
        self._open: tuple[str, int] | None = None
        self._next = 0
        self._tools: dict[int, int] = {}
        self._stop = "end_turn"

    def feed(self, data: bytes) -> bytes:
        """Anthropic events for these OpenAI bytes."""
        out: list[bytes] = []
        for obj in self._parser.chunks(data):
            if self.done:
                continue
            if obj is None:
                out.append(self._start() + self._close())
                out.append(_event("message_delta", {"delta": {"stop_reason": self._stop, "stop_sequence": None},
                                                    "usage": _anthropic_usage(self.usage)}))
                out.append(_event("message_stop", {}))
                self.done = True
                continue
            out.append(self._chunk(obj))
        return b"".join(out)

    def _start(self, chunk_id: Any = None) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {"id": f"msg_{chunk_id or 'sidegate'}", "type": "message", "role": "assistant",
                   "model": self.model, "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.input_tokens, "output_tokens": 0}}
        return _event("message_start", {"message": message}) + _event("ping", {})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index = self._open[1]
        self._open = None
        return _event("content_block_stop", {"index": index})

    def _block(self, kind: str, block: dict[str, Any]) -> bytes:
        if self._open is not None and self._open[0] == kind and kind != "tool_use":
            return b""
        out = self._close()
        self._open, self._next = (kind, self._next), self._next + 1
        return out + _event("content_block_start", {"index": self._open[1], "content_block": block})

    def _chunk(self, obj: dict[str, Any]) -> bytes:
        if isinstance(obj.get("error"), dict):
            err = obj["error"]
            self.done = True
            kind = "overloaded_error" if err.get("code") == "service_unavailable" else "api_error"
            return self._start() + _event("error", {"error": {"type": kind, "message": str(err.get("message"))}})
        out = [self._start(obj.get("id"))]
        self.usage = valid_usage(obj) or self.usage
        for choice in obj.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                out.append(self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""}))
                out.append(_event("content_block_delta", {"index": self._next - 1, "delta": {
                    "type": "thinking_delta", "thinking": delta["reasoning_content"]}}))
            if delta.get("content"):
                out.append(self._block("text", {"type": "text", "text": ""}))
                out.append(_event("content_block_delta", {"index": self._next - 1, "delta": {
                    "type": "text_delta", "text": delta["content"]}}))
            for call in delta.get("tool_calls") or []:
                out.append(self._tool_delta(call))
            if choice.get("finish_reason"):
                self._stop = _STOP.get(str(choice["finish_reason"]), "end_turn")
        return b"".join(out)

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        index = int(call.get("index") or 0)
        fn = call.get("function") or {}
        out = b""
        if index not in self._tools:
            block: dict[str, Any] = {"type": "tool_use", "id": call.get("id") or f"toolu_{index}",
                                     "name": fn.get("name") or "", "input": {}}
            out = self._block("tool_use", block)
            self._tools[index] = self._next - 1
        if fn.get("arguments"):
            out += _event("content_block_delta", {"index": self._tools[index], "delta": {
                "type": "input_json_delta", "partial_json": fn["arguments"]}})
        return out


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """A Messages request's input tokens, for `/v1/messages/count_tokens`: the system prompt, message
    text, tool inputs and results and tool definitions counted with tiktoken's `o200k_base` (shipped
    with sidegate), plus 3 tokens of framing a message and 1,600 an image (Anthropic's cost of a
    ~1.15-megapixel image). Claude's own tokenizer differs: expect it within ~+-20% on prose.
    """
    return prompt_tokens(body) - REPLY_OVERHEAD

