"""Inbound Anthropic Messages API (`POST /v1/messages`, https://docs.anthropic.com/en/api/messages):
pure translation between Anthropic's request/answer/stream/error shapes and OpenAI's, so any
backend can serve Anthropic clients (the `anthropic` SDK, Claude Code via `ANTHROPIC_BASE_URL`).

When the chosen target is itself Anthropic the body should not come here: the proxy forwards it
untouched (`runtime.upstream.providers.anthropic.passthrough_request` / `AnthropicRelay`).
"""

from __future__ import annotations

from typing import Any

import orjson

from runtime.errors import BadRequest, GatewayError
from runtime.upstream.openai_wire import Usage, valid_usage
from runtime.upstream.providers.common import SseParser
from runtime.upstream.tokens import REPLY_OVERHEAD, prompt_tokens

__all__ = [
    "OpenAIToAnthropicStream",
    "anthropic_error_body",
    "anthropic_error_event",
    "anthropic_to_openai",
    "estimate_input_tokens",
    "openai_to_anthropic_response",
]

_TOP = frozenset(
    {"model", "max_tokens", "messages", "system", "stop_sequences", "stream", "temperature", "top_p", "top_k",
     "tools", "tool_choice", "metadata", "thinking", "service_tier", "output_config", "cache_control"}
)
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
         "content_filter": "refusal"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                503: "overloaded_error", 529: "overloaded_error"}


def _bad(what: str, param: str = "messages") -> BadRequest:
    return BadRequest(f"{what} cannot be translated for a non-Anthropic backend", param=param)


def _text_part(block: dict[str, Any]) -> dict[str, Any]:
    # cache_control is dropped: OpenAI-format backends refuse unknown keys, and an Anthropic target
    # gets the body untouched through the pass-through path instead.
    return {"type": "text", "text": str(block.get("text") or "")}


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = str(source.get("url"))
    else:
        raise _bad(f"image source '{source.get('type')}'")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for block in content:
        if block.get("type") != "text":
            raise _bad(f"'{block.get('type')}' blocks inside tool_result")
        texts.append(str(block.get("text") or ""))
    return "".join(texts)


def _messages(message: dict[str, Any]) -> list[dict[str, Any]]:
    role, content = message.get("role"), message.get("content")
    if role not in ("user", "assistant"):
        raise BadRequest(f"message role must be user or assistant, not '{role}'", param="messages")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise BadRequest("message content must be a string or an array of blocks", param="messages")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(_text_part(block))
        elif kind == "image" and role == "user":
            parts.append(_image_part(block))
        elif kind == "tool_result" and role == "user":
            out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id")),
                        "content": _tool_result_text(block.get("content"))})
        elif kind == "tool_use" and role == "assistant":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": str(block.get("id")), "type": "function",
                          "function": {"name": str(block.get("name")), "arguments": arguments}})
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # signed reasoning only means something to Anthropic itself
        else:
            raise _bad(f"'{kind}' content blocks")
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        msg: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            msg["tool_calls"] = calls
        if text or calls:
            out.append(msg)
    elif parts:
        plain = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if plain else parts})
    return out


def _effort(budget: Any) -> str:
    tokens = budget if isinstance(budget, int) else 0
    return "low" if tokens < 4096 else "medium" if tokens < 16384 else "high"


def anthropic_to_openai(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request for an Anthropic Messages request (400 for what cannot be expressed)."""
    for key in body:
        if key not in _TOP:
            raise _bad(f"parameter '{key}'", param=key)
    if not isinstance(body.get("max_tokens"), int):
        raise BadRequest("'max_tokens' is required and must be an integer", param="max_tokens")
    if not isinstance(body.get("messages"), list):
        raise BadRequest("'messages' must be an array", param="messages")
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list) and system:
        texts = [_text_part(b) for b in system]
        messages.append({"role": "system", "content": texts[0]["text"] if len(texts) == 1 else texts})
    for message in body["messages"]:
        messages.extend(_messages(message))
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages, "max_tokens": body["max_tokens"]}
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    tools = []
    for tool in body.get("tools") or []:
        if tool.get("type") not in (None, "custom"):
            raise _bad(f"server tool '{tool.get('type')}'", param="tools")
        fn: dict[str, Any] = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {"type": "object"}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        tools.append({"type": "function", "function": fn})
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif kind in ("auto", "any", "none"):
            out["tool_choice"] = {"any": "required"}.get(str(kind), kind)
        if choice.get("disable_parallel_tool_use") and tools:
            out["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        out["reasoning_effort"] = _effort(thinking.get("budget_tokens"))
    config = body.get("output_config") or {}
    if isinstance(config.get("format"), dict):
        schema = config["format"].get("schema") or {"type": "object"}
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    if config.get("effort"):
        out["reasoning_effort"] = {"xhigh": "high", "max": "high"}.get(config["effort"], config["effort"])
    return out


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

    def __init__(self, model: str) -> None:
        self.model = model
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
        for event in self._parser.feed(data):
            if self.done or not event.data:
                continue
            if event.data.strip() == "[DONE]":
                out.append(self._start() + self._close())
                out.append(_event("message_delta", {"delta": {"stop_reason": self._stop, "stop_sequence": None},
                                                    "usage": _anthropic_usage(self.usage)}))
                out.append(_event("message_stop", {}))
                self.done = True
                continue
            try:
                obj = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(self._chunk(obj))
        return b"".join(out)

    def _start(self, chunk_id: Any = None) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {"id": f"msg_{chunk_id or 'sidegate'}", "type": "message", "role": "assistant",
                   "model": self.model, "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
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

