"""OpenAI chat answers and chunk streams as Gemini `GenerateContentResponse`s (whole, or one per
`data:` event of an `?alt=sse` stream: text as it comes, function calls whole once their arguments
are, the last event with `finishReason` and `usageMetadata`)."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.runtime.upstream.openai_wire import Usage, valid_usage
from sidegate.runtime.upstream.providers.common import SseParser, loads_upstream

__all__ = ["OpenAIToGeminiStream", "openai_to_gemini_response", "usage_metadata"]

_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY", "tool_calls": "STOP",
           "function_call": "STOP"}


def usage_metadata(usage: Usage | None) -> dict[str, int]:
    """Gemini's `usageMetadata` (its candidate count leaves the thoughts out)."""
    if usage is None:
        return {"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0}
    out = {"promptTokenCount": usage.prompt, "candidatesTokenCount": max(0, usage.completion - usage.reasoning),
           "totalTokenCount": usage.prompt + usage.completion}
    if usage.cached:
        out["cachedContentTokenCount"] = usage.cached
    if usage.reasoning:
        out["thoughtsTokenCount"] = usage.reasoning
    return out


def _args(text: str) -> Any:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_value": value}


def _call_part(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"functionCall": {"id": call_id, "name": name, "args": _args(arguments)}}


def _response(parts: list[dict[str, Any]], finish: str | None, usage: Usage | None, model: str,
              rid: str) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = _FINISH.get(finish, "OTHER")
    out: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": rid}
    if finish is not None:
        out["usageMetadata"] = usage_metadata(usage)
    return out


def openai_to_gemini_response(body: bytes, model: str) -> bytes:
    """A `chat.completion` as a `GenerateContentResponse`."""
    obj = loads_upstream(body)
    choices = obj.get("choices") if isinstance(obj, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    parts: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append({"text": reasoning, "thought": True})
    if isinstance(message.get("content"), str) and message["content"]:
        parts.append({"text": message["content"]})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        parts.append(_call_part(str(call.get("id") or ""), str(fn.get("name")), str(fn.get("arguments") or "")))
    rid = str(obj.get("id") or "sidegate") if isinstance(obj, dict) else "sidegate"
    out = _response(parts, str(choice.get("finish_reason") or "stop"), valid_usage(obj), model, rid)
    return orjson.dumps(out)


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\r\n\r\n"


class OpenAIToGeminiStream:
    """OpenAI chunk SSE bytes -> Gemini `?alt=sse` events (`data: {GenerateContentResponse}`)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: Usage | None = None
        self.done = False
        self._parser = SseParser()
        self._rid = "sidegate"
        self._calls: dict[int, list[str]] = {}
        self._finish: str | None = None

    def feed(self, data: bytes) -> bytes:
        """Gemini events for these OpenAI chunk bytes."""
        out: list[bytes] = []
        for obj in self._parser.chunks(data):
            if not self.done:
                out.append(self._end() if obj is None else self._chunk(obj))
        return b"".join(out)

    def _chunk(self, obj: dict[str, Any]) -> bytes:
        self._rid = str(obj.get("id") or self._rid)
        usage = valid_usage(obj)
        if usage is not None:
            self.usage = usage
        parts: list[dict[str, Any]] = []
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                parts.append({"text": reasoning, "thought": True})
            if isinstance(delta.get("content"), str) and delta["content"]:
                parts.append({"text": delta["content"]})
            for tc in delta.get("tool_calls") or []:
                index = tc.get("index", len(self._calls))
                fn = tc.get("function") or {}
                slot = self._calls.setdefault(index, ["", "", ""])
                slot[0] = tc.get("id") or slot[0]
                slot[1] = fn.get("name") or slot[1]
                slot[2] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
        if not parts:
            return b""
        return _event(_response(parts, None, None, self.model, self._rid))

    def _end(self) -> bytes:
        """The last event: the whole function calls, the finish reason and the usage."""
        self.done = True
        parts = [_call_part(i, n, a) for i, n, a in (self._calls[k] for k in sorted(self._calls))]
        if not parts:
            parts = [{"text": ""}]
        return _event(_response(parts, self._finish or "stop", self.usage, self.model, self._rid))
