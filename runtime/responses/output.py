"""Response objects: a chat completion's answer as a Responses API `response`, and the fields every
response echoes from its request (https://platform.openai.com/docs/api-reference/responses/object)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from sidegate.runtime.responses.items import new_id
from sidegate.runtime.upstream.openai_wire import Usage, usage_from

__all__ = ["from_chat", "response_usage", "shell", "status_of", "usage_of_response"]

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def shell(data: dict[str, Any], response_id: str, model: str, created: int | None = None) -> dict[str, Any]:
    """A response object without output yet (`in_progress`), echoing the request's parameters."""
    text = data.get("text") if isinstance(data.get("text"), dict) else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created if created is not None else int(time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": data.get("instructions"),
        "max_output_tokens": data.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": data.get("parallel_tool_calls", True),
        "previous_response_id": data.get("previous_response_id"),
        "reasoning": data.get("reasoning") or {"effort": None, "summary": None},
        "store": data.get("store", True),
        "temperature": data.get("temperature", 1.0),
        "text": text or {"format": {"type": "text"}},
        "tool_choice": data.get("tool_choice", "auto"),
        "tools": data.get("tools") or [],
        "top_p": data.get("top_p", 1.0),
        "truncation": data.get("truncation", "disabled"),
        "usage": None,
        "user": data.get("user"),
        "metadata": data.get("metadata") or {},
    }


def response_usage(usage: Usage | None) -> dict[str, Any]:
    """A Responses `usage` object."""
    u = usage or Usage()
    return {"input_tokens": u.prompt, "input_tokens_details": {"cached_tokens": u.cached},
            "output_tokens": u.completion, "output_tokens_details": {"reasoning_tokens": u.reasoning},
            "total_tokens": u.prompt + u.completion}


def usage_of_response(obj: Any) -> Usage | None:
    """Usage from a Responses `response` object (a pass-through answer)."""
    u = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(u, dict):
        return None

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    inp, out = u.get("input_tokens_details") or {}, u.get("output_tokens_details") or {}
    return Usage(prompt=count(u.get("input_tokens")), completion=count(u.get("output_tokens")),
                 cached=count(inp.get("cached_tokens")) if isinstance(inp, dict) else 0,
                 reasoning=count(out.get("reasoning_tokens")) if isinstance(out, dict) else 0)


def status_of(finish: str | None) -> tuple[str, dict[str, str] | None]:
    """The response status and incomplete details for a chat finish reason."""
    reason = _INCOMPLETE.get(finish or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def message_item(text: str, refusal: str | None = None, item_id: str | None = None) -> dict[str, Any]:
    """An assistant message output item."""
    content: list[dict[str, Any]] = []
    if text or refusal is None:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"type": "message", "id": item_id or new_id("msg"), "status": "completed", "role": "assistant",
            "content": content}


def function_item(call_id: str, name: str, arguments: str, item_id: str | None = None) -> dict[str, Any]:
    """A function_call output item."""
    return {"type": "function_call", "id": item_id or new_id("fc"), "call_id": call_id, "name": name,
            "arguments": arguments, "status": "completed"}


def reasoning_item(summary: str, item_id: str | None = None) -> dict[str, Any]:
    """A reasoning output item whose summary is the backend's reasoning text."""
    return {"type": "reasoning", "id": item_id or new_id("rs"), "summary": [{"type": "summary_text", "text": summary}]}


def from_chat(chat: bytes, base: dict[str, Any]) -> tuple[dict[str, Any], Usage | None]:
    """The completed response for a chat completion (`base`: the shell of this response)."""
    obj = orjson.loads(chat)
    choice = (obj.get("choices") or [{}])[0] if isinstance(obj, dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        output.append(reasoning_item(str(message["reasoning_content"])))
    text, refusal = message.get("content"), message.get("refusal")
    if text or refusal or not message.get("tool_calls"):
        output.append(message_item(text if isinstance(text, str) else "",
                                   refusal if isinstance(refusal, str) else None))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        output.append(function_item(str(call.get("id") or new_id("call")), str(fn.get("name", "")),
                                    str(fn.get("arguments") or "")))
    usage = usage_from(obj)
    status, incomplete = status_of(choice.get("finish_reason"))
    return {**base, "status": status, "incomplete_details": incomplete, "output": output,
            "usage": response_usage(usage)}, usage
