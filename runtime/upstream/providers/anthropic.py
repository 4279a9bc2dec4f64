"""Anthropic Messages API (https://docs.anthropic.com/en/api/messages): OpenAI chat requests to
`POST {base_url}/messages`, Anthropic's answers, SSE events and errors back to OpenAI's shape.

The URL the adapter expects is `AnthropicAdapter.url(base_url, model, op)`: `https://api.anthropic.com/v1/messages`
for `base_url` `https://api.anthropic.com/v1`. Auth is the provider's `x-api-key` header (the catalog's
auth scheme); `anthropic-version: 2023-06-01` is added unless configured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson

from sidegate.runtime.errors import BadRequest, GatewayError
from sidegate.runtime.plan import Provider, Target
from sidegate.runtime.upstream.openai_wire import Usage, thaw
from sidegate.runtime.upstream.providers.chat import (
    Chat,
    Image,
    Text,
    ToolCall,
    ToolResult,
    parse_chat,
    thinking_budget,
)
from sidegate.runtime.upstream.providers.common import (
    ChunkWriter,
    NativeAdapterBase,
    NativeStream,
    SseParser,
    completion_body,
    json_body,
    loads_upstream,
    retry_after_seconds,
    unsupported,
    upstream_error,
    with_header,
)
from sidegate.runtime.upstream.transport import UpstreamRequest
from sidegate.runtime.upstream.usage_check import InvalidUsage, or_absent, token_count

__all__ = [
    "ANTHROPIC_VERSION",
    "AnthropicAdapter",
    "AnthropicRelay",
    "AnthropicStream",
    "anthropic_request_body",
    "client_versioned",
    "error_from_anthropic",
    "message_usage",
    "passthrough_request",
]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
"""`max_tokens` when neither the request nor the target's context table gives one."""

SUPPORTED = frozenset(
    {"max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop", "tools", "tool_choice",
     "parallel_tool_calls", "response_format", "reasoning_effort"}
)
FINISH = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter",
}
ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
    "overloaded_error": 529,
}


def _block(part: Text | Image | ToolCall | ToolResult) -> dict[str, Any]:
    if isinstance(part, Text):
        out: dict[str, Any] = {"type": "text", "text": part.text}
        if part.cache_control is not None:
            out["cache_control"] = part.cache_control
        return out
    if isinstance(part, Image):
        if part.data is not None:
            source = {"type": "base64", "media_type": part.media_type, "data": part.data}
        else:
            source = {"type": "url", "url": part.url}
        return {"type": "image", "source": source}
    if isinstance(part, ToolCall):
        if not isinstance(part.arguments, dict):
            raise BadRequest(f"arguments of tool call '{part.name}' must be a JSON object", param="messages")
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": part.arguments}
    return {"type": "tool_result", "tool_use_id": part.call_id, "content": part.content}


def anthropic_request_body(chat: Chat, model: str, default_max_tokens: int | None) -> dict[str, Any]:
    """The Messages API body for a parsed chat request."""
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": chat.max_tokens or default_max_tokens or DEFAULT_MAX_TOKENS,
        "messages": [{"role": t.role, "content": [_block(p) for p in t.parts]} for t in chat.turns],
    }
    if chat.system:
        out["system"] = [_block(t) for t in chat.system]
    for key, value in (("temperature", chat.temperature), ("top_p", chat.top_p), ("top_k", chat.top_k)):
        if value is not None:
            out[key] = value
    if chat.stop:
        out["stop_sequences"] = chat.stop
    if chat.stream:
        out["stream"] = True
    if chat.tools:
        tools = []
        for tool in chat.tools:
            spec: dict[str, Any] = {"name": tool.name, "input_schema": tool.parameters}
            if tool.description:
                spec["description"] = tool.description
            if tool.strict:
                spec["strict"] = True
            if tool.cache_control is not None:
                spec["cache_control"] = tool.cache_control
            tools.append(spec)
        out["tools"] = tools
        choice: dict[str, Any] | None = None
        if chat.tool_name:
            choice = {"type": "tool", "name": chat.tool_name}
        elif chat.tool_choice:
            choice = {"type": {"required": "any"}.get(chat.tool_choice, chat.tool_choice)}
        if chat.parallel_tool_calls is False and (choice is None or choice["type"] != "none"):
            choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if choice is not None:
            out["tool_choice"] = choice
    if chat.response_format is not None:
        schema = chat.response_format.schema or {"type": "object"}
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if chat.user:
        out["metadata"] = {"user_id": chat.user}
    budget = thinking_budget(chat, out["max_tokens"], "anthropic")
    if budget is not None:
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    return out


def message_usage(usage: Mapping[str, Any], previous: Usage | None = None) -> Usage:
    """OpenAI-style usage from Anthropic's: prompt tokens include cache reads and writes."""
    prev = previous or Usage()

    def count(key: str, default: int) -> int:
        value = usage.get(key)
        return default if value is None else token_count(value)  # InvalidUsage for a bad count

    uncached = count("input_tokens", -1)
    read = count("cache_read_input_tokens", prev.cached)
    written = count("cache_creation_input_tokens", -1)
    details = usage.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
    prompt = prev.prompt if uncached < 0 else uncached + read + max(written, 0)
    return Usage(
        prompt=prompt,
        completion=count("output_tokens", prev.completion),
        cached=read,
        reasoning=prev.reasoning if thinking is None else token_count(thinking),
    )


def error_from_anthropic(status: int, headers: httpx.Headers | Mapping[str, str], body: bytes) -> GatewayError:
    """Anthropic's `{"type": "error", "error": {"type", "message"}}` mapped by status."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    err = obj.get("error") if isinstance(obj, dict) else None
    kind = None
    if isinstance(err, dict):
        message = str(err.get("message") or err.get("type"))
        kind = err.get("type") if isinstance(err.get("type"), str) else None
    else:
        message = body[:300].decode("utf-8", "replace")
    return upstream_error("anthropic", status, message or "no message", retry_after=retry_after_seconds(headers),
                          code=kind)


class AnthropicAdapter(NativeAdapterBase):
    """OpenAI chat <-> Anthropic Messages."""

    @staticmethod
    def url(base_url: str, model: str, op: str) -> str:
        """The upstream URL for `op` (`chat` only) under the provider's base URL."""
        return f"{base_url.rstrip('/')}/messages"

    def request(
        self,
        provider: Provider,
        target: Target,
        url: str,
        headers: tuple[tuple[str, str], ...],
        op: str,
        model: str,
        body: dict[str, Any],
    ) -> UpstreamRequest:
        """POST the translated body to `url` (`.../v1/messages`)."""
        if op != "chat":
            raise unsupported("anthropic", f"the '{op}' operation", param="model")
        chat = parse_chat(body, "anthropic", SUPPORTED, self.drop_unsupported)
        payload = {**{k: thaw(v) for k, v in target.extra_body.items()},
                   **anthropic_request_body(chat, model, target.max_output_tokens)}
        headers = with_header(headers, "anthropic-version", ANTHROPIC_VERSION)
        return UpstreamRequest("POST", url, headers, json_body(payload), provider.connect_timeout)

    def response(
        self, op: str, body: bytes, *, model: str = "", request: Mapping[str, Any] | None = None
    ) -> tuple[bytes, Usage | None]:
        """A Messages API answer as a `chat.completion`."""
        obj = loads_upstream(body)
        if not isinstance(obj, dict) or not isinstance(obj.get("content"), list):
            raise upstream_error("anthropic", 502, "answer without content")
        text: list[str] = []
        reasoning: list[str] = []
        calls: list[tuple[str, str, str]] = []
        for block in obj["content"]:
            kind = block.get("type")
            if kind == "text":
                text.append(block.get("text") or "")
            elif kind == "thinking":
                reasoning.append(block.get("thinking") or "")
            elif kind == "tool_use":
                args = orjson.dumps(block.get("input", {})).decode()
                calls.append((str(block.get("id")), str(block.get("name")), args))
        usage = or_absent(lambda: message_usage(obj.get("usage") or {}))
        out = completion_body(
            id=str(obj.get("id") or "msg"), model=str(obj.get("model") or model), created=int(self._clock()),
            text="".join(text), reasoning="".join(reasoning), tool_calls=calls,
            finish_reason=FINISH.get(str(obj.get("stop_reason")), "stop"), usage=usage,
        )
        return out, usage

    def stream(self, op: str, keep_usage: bool, *, model: str = "") -> AnthropicStream:
        """A translator for one Messages API event stream."""
        return AnthropicStream(keep_usage, int(self._clock()), model)

    def error(self, status: int, headers: httpx.Headers, body: bytes) -> GatewayError:
        """Anthropic's error envelope mapped by status (529 overloaded -> 502)."""
        return error_from_anthropic(status, headers, body)


class AnthropicStream(NativeStream):
    """Anthropic SSE events -> OpenAI chunk events."""

    __slots__ = ("_blocks", "_finish", "_parser", "_tools", "_writer")

    def __init__(self, keep_usage: bool, created: int, model: str) -> None:
        super().__init__(keep_usage, created, model)
        self._parser = SseParser()
        self._writer = ChunkWriter("msg", model, created, keep_usage)
        self._blocks: dict[int, int] = {}
        """Anthropic content block index -> OpenAI tool call index."""
        self._tools = 0
        self._finish = "stop"

    def feed(self, data: bytes) -> bytes:
        """OpenAI chunk bytes for these upstream bytes."""
        out: list[bytes] = []
        for _, obj in self._parser.objects(data, "anthropic", lambda: self.done):
            out.append(self._event(obj))
        return b"".join(out)

    def _event(self, obj: dict[str, Any]) -> bytes:
        kind = obj.get("type")
        w = self._writer
        if kind == "message_start":
            message = obj.get("message") or {}
            w = self._writer = ChunkWriter(str(message.get("id") or "msg"), str(message.get("model") or self._model),
                                           self._created, self.keep_usage)
            self.take_usage(message_usage, message.get("usage") or {})
            return w.role()
        if kind == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._blocks[int(obj.get("index", 0))] = self._tools
                self._tools += 1
                return w.tool_start(self._tools - 1, str(block.get("id")), str(block.get("name")))
            if block.get("type") == "text":
                return w.text(block.get("text") or "")
            return b""
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                return w.text(delta.get("text") or "")
            if dtype == "input_json_delta":
                index = self._blocks.get(int(obj.get("index", 0)))
                return w.tool_args(index, delta.get("partial_json") or "") if index is not None else b""
            if dtype == "thinking_delta":
                return w.reasoning(delta.get("thinking") or "")
            return b""
        if kind == "message_delta":
            self.take_usage(message_usage, obj.get("usage") or {}, self.usage)
            self._finish = FINISH.get(str((obj.get("delta") or {}).get("stop_reason")), "stop")
            return w.finish(self._finish)
        if kind == "message_stop":
            self.done = True
            return w.end(self.usage)
        if kind == "error":
            err = obj.get("error") or {}
            etype = str(err.get("type") or "api_error")
            raise upstream_error("anthropic", ERROR_STATUS.get(etype, 500), str(err.get("message") or etype))
        return b""


def passthrough_request(
    provider: Provider,
    target: Target,
    url: str,
    headers: tuple[tuple[str, str], ...],
    model: str,
    body: dict[str, Any],
    client_headers: Mapping[str, str],
) -> UpstreamRequest:
    """An inbound `/v1/messages` body forwarded to an Anthropic target untouched but for `model`
    (and `max_tokens` when missing). The client's `anthropic-version` and `anthropic-beta` go along."""
    payload = {**{k: thaw(v) for k, v in target.extra_body.items()}, **body, "model": model}
    payload.setdefault("max_tokens", target.max_output_tokens or DEFAULT_MAX_TOKENS)
    return UpstreamRequest("POST", url, client_versioned(headers, client_headers), json_body(payload),
                           provider.connect_timeout)


def client_versioned(headers: tuple[tuple[str, str], ...], client: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """`headers` with the client's `anthropic-version` / `anthropic-beta` (configured ones win), and
    sidegate's API version when the client sent none."""
    for name in ("anthropic-beta", "anthropic-version"):
        value = client.get(name)
        if value:
            headers = with_header(headers, name, value)
    return with_header(headers, "anthropic-version", ANTHROPIC_VERSION)


class AnthropicRelay:
    """Passes an Anthropic event stream through unchanged (whole events per write), recording usage
    from `message_start` / `message_delta`. An `error` event before anything was relayed is raised
    (so the router can still retry or fall back); after that it is passed on, ends the stream, and
    is kept in `failure` so the call is accounted as the error it was."""

    __slots__ = ("_buf", "_invalid", "_relayed", "done", "failure", "keep_usage", "usage")

    def __init__(self, keep_usage: bool = True) -> None:
        self.keep_usage = keep_usage
        self.usage: Usage | None = None
        self.done = False
        self.failure: GatewayError | None = None
        self._relayed = False
        self._buf = SseParser()
        self._invalid = False

    def _take_usage(self, read: Callable[..., Usage], *args: Any) -> None:
        """As :meth:`NativeStream.take_usage`: an invalid count makes the stream's usage absent."""
        if not self._invalid:
            try:
                self.usage = read(*args)
            except InvalidUsage:
                self._invalid, self.usage = True, None

    def feed(self, data: bytes) -> bytes:
        """The complete events in these bytes, re-serialised with their `event:` lines."""
        out: list[bytes] = []
        for event in self._buf.feed(data):
            try:
                obj = orjson.loads(event.data) if event.data else {}
            except orjson.JSONDecodeError:
                obj = {}
            kind = obj.get("type") if isinstance(obj, dict) else None
            if kind == "message_start":
                self._take_usage(message_usage, (obj.get("message") or {}).get("usage") or {})
            elif kind == "message_delta":
                self._take_usage(message_usage, obj.get("usage") or {}, self.usage)
            elif kind == "message_stop":
                self.done = True
            elif kind == "error":
                err = obj.get("error") or {}
                etype = str(err.get("type") or "api_error")
                failure = upstream_error("anthropic", ERROR_STATUS.get(etype, 500), str(err.get("message") or etype))
                if not (self._relayed or out):
                    raise failure
                self.failure, self.done = failure, True
            name = event.event or (kind if isinstance(kind, str) else "")
            out.append((f"event: {name}\n" if name else "").encode() + f"data: {event.data}\n\n".encode())
        self._relayed = self._relayed or bool(out)
        return b"".join(out)
