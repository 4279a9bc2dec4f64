"""Responses API input items (https://platform.openai.com/docs/api-reference/responses/create):
normalised, validated and lowered to chat-completions messages.

An input is a string (one user message) or a list of items: messages (`role` user, assistant,
system or developer; content a string or `input_text` / `input_image` / `input_file` parts, and
`output_text` / `refusal` parts for assistant turns), `function_call` and `function_call_output`
items, and `reasoning` items (kept for the record, not sent to a chat backend: it has no field for
them). The output items of a stored response become input items of the next turn unchanged.
"""

from __future__ import annotations

import uuid
from typing import Any

from sidegate.runtime.errors import BadRequest

__all__ = ["ITEM_TYPES", "input_items", "new_id", "to_messages"]

ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning"})
_ROLES = frozenset({"user", "assistant", "system", "developer"})


def new_id(prefix: str) -> str:
    """An id in OpenAI's style (`resp_...`, `msg_...`, `fc_...`)."""
    return f"{prefix}_{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}"


def _bad(message: str, param: str = "input") -> BadRequest:
    return BadRequest(message, param=param)


def input_items(value: Any) -> list[dict[str, Any]]:
    """The request's `input` as a list of items, each checked for its type's required fields."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise _bad("'input' must be a string or an array of input items")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"input[{i}] must be an object", f"input[{i}]")
        kind = item.get("type", "message" if "role" in item else None)
        if kind not in ITEM_TYPES:
            raise _bad(f"input[{i}]: unsupported input item type {kind!r}", f"input[{i}].type")
        item = {**item, "type": kind}
        if kind == "message":
            if item.get("role") not in _ROLES:
                raise _bad(f"input[{i}].role must be one of user, assistant, system, developer", f"input[{i}].role")
            if not isinstance(item.get("content"), str | list):
                raise _bad(f"input[{i}].content must be a string or an array of content parts", f"input[{i}].content")
        elif kind == "function_call":
            for field in ("call_id", "name", "arguments"):
                if not isinstance(item.get(field), str):
                    raise _bad(f"input[{i}].{field} is required (a string)", f"input[{i}].{field}")
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise _bad(f"input[{i}].call_id is required (a string)", f"input[{i}].call_id")
            if not isinstance(item.get("output"), str | list):
                raise _bad(f"input[{i}].output must be a string or an array", f"input[{i}].output")
        out.append(item)
    return out


def _part(part: Any, where: str) -> dict[str, Any] | None:
    """A chat content part for a Responses content part (None: nothing to send)."""
    if not isinstance(part, dict):
        raise _bad(f"{where} must be an object", where)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _bad(f"{where}: an input_image needs an image_url (file ids are not supported)", where)
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        data = part.get("file_data")
        if not isinstance(data, str):
            raise _bad(f"{where}: an input_file needs file_data (file ids are not supported)", where)
        file: dict[str, Any] = {"file_data": data}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    raise _bad(f"{where}: unsupported content part type {kind!r}", f"{where}.type")


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts = [p for i, raw in enumerate(content) if (p := _part(raw, f"{where}[{i}]")) is not None]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    return "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))


def to_messages(items: list[dict[str, Any]], instructions: str | None) -> list[dict[str, Any]]:
    """Chat messages for a conversation's items: consecutive function calls become one assistant
    turn's tool calls; each function_call_output must answer a call made before it (400 otherwise)."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    calls: set[str] = set()
    for i, item in enumerate(items):
        kind, where = item["type"], f"input[{i}]"
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": _content(item["content"], f"{where}.content")})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and (last.get("tool_calls") or not last.get("content")):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            calls.add(item["call_id"])
        elif kind == "function_call_output":
            if item["call_id"] not in calls:
                raise _bad(f"{where}: no function call with call_id {item['call_id']!r} precedes this output",
                           f"{where}.call_id")
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _output_text(item["output"])})
    for m in messages:
        if m["role"] == "assistant" and m.get("content") is None and not m.get("tool_calls"):
            m["content"] = ""
    return messages
