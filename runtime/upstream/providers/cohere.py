"""Cohere v2 chat (https://docs.cohere.com/reference/chat) and embed
(https://docs.cohere.com/reference/embed): OpenAI chat and embeddings requests to Cohere's v2 API,
answers, SSE events (https://docs.cohere.com/v2/docs/streaming) and errors back to OpenAI's shape.

URLs (see `CohereAdapter.url`): `{base_url}/chat` and `{base_url}/embed` with `base_url`
`https://api.cohere.com/v2`; auth is `Authorization: Bearer` (the provider's auth scheme).
An assistant's `tool_plan` (its words before calling tools) is treated as the message's content.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from sidegate.runtime.errors import GatewayError, UpstreamError
from sidegate.runtime.plan import Provider, Target
from sidegate.runtime.upstream.openai_wire import Usage, thaw
from sidegate.runtime.upstream.providers.chat import EFFORT_BUDGET, Chat, Image, Text, ToolCall, ToolResult, parse_chat
from sidegate.runtime.upstream.providers.common import (
    ChunkWriter,
    NativeAdapterBase,
    NativeStream,
    SseParser,
    completion_body,
    embedding_inputs,
    embeddings_body,
    json_body,
    loads_upstream,
    retry_after_seconds,
    unsupported,
    upstream_error,
)
from sidegate.runtime.upstream.transport import UpstreamRequest
from sidegate.runtime.upstream.usage_check import or_absent, token_count

__all__ = ["CohereAdapter", "CohereStream", "cohere_request_body", "error_from_cohere"]

SUPPORTED = frozenset(
    {"max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop", "tools", "tool_choice",
     "response_format", "seed", "presence_penalty", "frequency_penalty", "reasoning_effort"}
)
FINISH = {
    "complete": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_call": "tool_calls",
    "content_blocked": "content_filter", "error_limit": "length",
}


def _finish(reason: Any) -> str:
    value = str(reason or "complete").lower()
    if value == "error":
        raise UpstreamError("cohere stopped with finish_reason ERROR")
    return FINISH.get(value, "stop")


def _user_content(parts: list[Text | Image | ToolCall | ToolResult]) -> Any:
    items = [p for p in parts if isinstance(p, Text | Image)]
    if all(isinstance(p, Text) for p in items):
        return "".join(p.text for p in items if isinstance(p, Text))
    return [
        {"type": "text", "text": p.text} if isinstance(p, Text) else {"type": "image_url", "image_url": {"url": p.url}}
        for p in items
    ]


def cohere_request_body(chat: Chat, model: str, drop: bool = False) -> dict[str, Any]:
    """The v2 chat body for a parsed chat request."""
    messages: list[dict[str, Any]] = []
    if chat.system:
        messages.append({"role": "system", "content": "\n\n".join(t.text for t in chat.system)})
    for turn in chat.turns:
        if turn.role == "assistant":
            text = "".join(p.text for p in turn.parts if isinstance(p, Text))
            calls = [
                {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.raw}}
                for p in turn.parts if isinstance(p, ToolCall)
            ]
            message: dict[str, Any] = {"role": "assistant"}
            if calls:
                message["tool_calls"] = calls
                if text:
                    message["tool_plan"] = text
            else:
                message["content"] = text
            messages.append(message)
            continue
        for part in turn.parts:
            if isinstance(part, ToolResult):
                messages.append({"role": "tool", "tool_call_id": part.call_id, "content": part.content})
        if any(isinstance(p, Text | Image) for p in turn.parts):
            messages.append({"role": "user", "content": _user_content(turn.parts)})
    out: dict[str, Any] = {"model": model, "messages": messages}
    if chat.stream:
        out["stream"] = True
    if chat.tools:
        out["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.parameters}}
            for t in chat.tools
        ]
        if any(t.strict for t in chat.tools):
            out["strict_tools"] = True
        if chat.tool_name and not drop:
            raise unsupported("cohere", "forcing one named tool", param="tool_choice")
        if chat.tool_choice in ("required", "none"):
            out["tool_choice"] = chat.tool_choice.upper()
    for key, value in (
        ("max_tokens", chat.max_tokens), ("temperature", chat.temperature), ("p", chat.top_p), ("k", chat.top_k),
        ("seed", chat.seed), ("frequency_penalty", chat.frequency_penalty),
        ("presence_penalty", chat.presence_penalty),
    ):
        if value is not None:
            out[key] = value
    if chat.stop:
        out["stop_sequences"] = chat.stop
    if chat.response_format is not None:
        fmt: dict[str, Any] = {"type": "json_object"}
        if chat.response_format.schema is not None:
            fmt["schema"] = chat.response_format.schema
        out["response_format"] = fmt
    return out


def _usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    counts = usage.get("billed_units") or usage.get("tokens") or {}
    return Usage(prompt=token_count(counts.get("input_tokens")), completion=token_count(counts.get("output_tokens")),
                 cached=token_count(usage.get("cached_tokens")))


def error_from_cohere(status: int, headers: httpx.Headers | Mapping[str, str], body: bytes) -> GatewayError:
    """Cohere's `{"message": ...}` error mapped by status (498 invalid token -> auth error)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    message = str(obj.get("message") or "") if isinstance(obj, dict) else ""
    message = message or body[:300].decode("utf-8", "replace") or "no message"
    return upstream_error("cohere", status, message, retry_after=retry_after_seconds(headers), auth=status == 498)


class CohereAdapter(NativeAdapterBase):
    """OpenAI chat and embeddings <-> Cohere v2."""

    @staticmethod
    def url(base_url: str, model: str, op: str) -> str:
        """`{base_url}/chat` or `{base_url}/embed`."""
        return f"{base_url.rstrip('/')}/{'embed' if op == 'embeddings' else 'chat'}"

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
        """POST the translated body to `url`."""
        extra = {k: thaw(v) for k, v in target.extra_body.items()}
        if op == "embeddings":
            texts = embedding_inputs(body, "cohere")
            payload: dict[str, Any] = {"input_type": "search_document", **extra, "model": model, "texts": texts,
                                       "embedding_types": ["float"]}
            if isinstance(body.get("dimensions"), int):
                payload["output_dimension"] = body["dimensions"]
        elif op == "chat":
            chat = parse_chat(body, "cohere", SUPPORTED, self.drop_unsupported)
            payload = {**extra, **cohere_request_body(chat, model, self.drop_unsupported)}
            if chat.max_tokens is None and target.max_output_tokens:
                payload["max_tokens"] = target.max_output_tokens
            if chat.reasoning_effort == "none":
                payload["thinking"] = {"type": "disabled"}
            elif chat.reasoning_effort is not None:
                payload["thinking"] = {"type": "enabled", "token_budget": EFFORT_BUDGET[chat.reasoning_effort]}
        else:
            raise unsupported("cohere", f"the '{op}' operation", param="model")
        return UpstreamRequest("POST", url, headers, json_body(payload), provider.connect_timeout)

    def response(
        self, op: str, body: bytes, *, model: str = "", request: Mapping[str, Any] | None = None
    ) -> tuple[bytes, Usage | None]:
        """A v2 chat answer as a `chat.completion` (or an embed answer as an embeddings list)."""
        obj = loads_upstream(body)
        if not isinstance(obj, dict):
            raise upstream_error("cohere", 502, "answer is not a JSON object")
        if op == "embeddings":
            vectors = [[float(v) for v in e] for e in (obj.get("embeddings") or {}).get("float") or []]
            tokens = ((obj.get("meta") or {}).get("billed_units") or {}).get("input_tokens")
            fmt = (request or {}).get("encoding_format")
            usage = or_absent(lambda: Usage(prompt=token_count(tokens)))
            encoding = fmt if isinstance(fmt, str) else None
            return embeddings_body(vectors, model, usage.prompt if usage else 0, encoding), usage
        message = obj.get("message") or {}
        text = [str(message.get("tool_plan") or "")]
        reasoning: list[str] = []
        for item in message.get("content") or []:
            if item.get("type") == "text":
                text.append(str(item.get("text") or ""))
            elif item.get("type") == "thinking":
                reasoning.append(str(item.get("thinking") or ""))
        calls = [
            (str(c.get("id")), str((c.get("function") or {}).get("name")),
             str((c.get("function") or {}).get("arguments") or "{}"))
            for c in message.get("tool_calls") or []
        ]
        usage = or_absent(lambda: _usage(obj.get("usage")))
        out = completion_body(
            id=str(obj.get("id") or "cohere"), model=model, created=int(self._clock()), text="".join(text),
            reasoning="".join(reasoning), tool_calls=calls, finish_reason=_finish(obj.get("finish_reason")),
            usage=usage,
        )
        return out, usage

    def stream(self, op: str, keep_usage: bool, *, model: str = "") -> CohereStream:
        """A translator for one v2 chat event stream."""
        return CohereStream(keep_usage, int(self._clock()), model)

    def error(self, status: int, headers: httpx.Headers, body: bytes) -> GatewayError:
        """Cohere's error answer mapped by status."""
        return error_from_cohere(status, headers, body)


class CohereStream(NativeStream):
    """Cohere v2 SSE events -> OpenAI chunk events."""

    __slots__ = ("_parser", "_tools", "_writer")

    def __init__(self, keep_usage: bool, created: int, model: str) -> None:
        super().__init__(keep_usage, created, model)
        self._parser = SseParser()
        self._writer = ChunkWriter("cohere", model, created, keep_usage)
        self._tools: dict[int, int] = {}

    def feed(self, data: bytes) -> bytes:
        """OpenAI chunk bytes for these upstream bytes."""
        out: list[bytes] = []
        for _, obj in self._parser.objects(data, "cohere", lambda: self.done):
            if isinstance(obj, dict):
                out.append(self._event(obj))
        return b"".join(out)

    def _event(self, obj: dict[str, Any]) -> bytes:
        kind = obj.get("type")
        delta = obj.get("delta") or {}
        message = delta.get("message") or {}
        if kind == "message-start":
            self._writer = ChunkWriter(str(obj.get("id") or "cohere"), self._model, self._created, self.keep_usage)
            return self._writer.role()
        w = self._writer
        if kind == "content-delta":
            content = message.get("content") or {}
            return w.text(str(content.get("text") or "")) + w.reasoning(str(content.get("thinking") or ""))
        if kind == "tool-plan-delta":
            return w.text(str(message.get("tool_plan") or ""))
        if kind == "tool-call-start":
            call = message.get("tool_calls") or {}
            fn = call.get("function") or {}
            index = self._tools[int(obj.get("index", len(self._tools)))] = len(self._tools)
            return w.tool_start(index, str(call.get("id")), str(fn.get("name"))) + w.tool_args(
                index, str(fn.get("arguments") or "")
            )
        if kind == "tool-call-delta":
            known = self._tools.get(int(obj.get("index", len(self._tools) - 1)))
            fn = (message.get("tool_calls") or {}).get("function") or {}
            return w.tool_args(known, str(fn.get("arguments") or "")) if known is not None else b""
        if kind == "message-end":
            self.take_usage(_usage, delta.get("usage"))
            finish = _finish(delta.get("finish_reason"))
            self.done = True
            return w.finish(finish) + w.end(self.usage)
        return b""
