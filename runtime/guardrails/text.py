"""Where a request's and an answer's text lives, per operation: the slots a guardrail reads and,
when masking, rewrites in place (message contents and text parts, a system prompt, a prompt or
embeddings input; an answer's message content, completion text or Anthropic text blocks)."""

from __future__ import annotations

from typing import Any

__all__ = ["Slot", "answer_slots", "request_slots"]

Slot = tuple[Any, Any]
"""A container and the key (or index) of one of its strings."""


def _content(holder: Any, key: Any, out: list[Slot]) -> None:
    value = holder[key]
    if isinstance(value, str):
        out.append((holder, key))
    elif isinstance(value, list):
        for part in value:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                out.append((part, "text"))
            if part.get("type") == "tool_result" and "content" in part:
                _content(part, "content", out)


def _strings(holder: Any, key: Any, out: list[Slot]) -> None:
    value = holder[key]
    if isinstance(value, str):
        out.append((holder, key))
    elif isinstance(value, list):
        out.extend((value, i) for i, v in enumerate(value) if isinstance(v, str))


def _every_string(holder: Any, key: Any, out: list[Slot], depth: int = 0) -> None:
    """Every string under `holder[key]` (JSON nesting is bounded by `server.max_json_depth`)."""
    value = holder[key]
    if isinstance(value, str):
        out.append((holder, key))
    elif isinstance(value, dict) and depth < 64:
        for k in value:
            _every_string(value, k, out, depth + 1)
    elif isinstance(value, list) and depth < 64:
        for i in range(len(value)):
            _every_string(value, i, out, depth + 1)


def request_slots(op: str, data: dict[str, Any]) -> list[Slot]:
    """The request's text: chat and Messages contents (and `system`), a prompt, an input, instructions;
    an MCP tool call's arguments (every string value)."""
    out: list[Slot] = []
    if op == "tools/call":
        if "arguments" in data:
            _every_string(data, "arguments", out)
        return out
    if "system" in data and op == "messages":
        _content(data, "system", out)
    if op == "responses" and isinstance(data.get("instructions"), str):
        out.append((data, "instructions"))
    for field in ("prompt", "input"):
        if field in data:
            if op == "responses" and isinstance(data[field], list):
                for item in data[field]:
                    if isinstance(item, dict) and "content" in item:
                        _content(item, "content", out)
            else:
                _strings(data, field, out)
    messages = data.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and "content" in message:
                _content(message, "content", out)
    return out


def answer_slots(op: str, answer: Any) -> list[Slot]:
    """A whole answer's text: chat message contents, completion texts, Anthropic text blocks."""
    out: list[Slot] = []
    if not isinstance(answer, dict):
        return out
    if op == "tools/call":  # an MCP tool's result: text content, embedded resources' text, structured content
        for item in answer.get("content") or ():
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                out.append((item, "text"))
            resource = item.get("resource") if isinstance(item, dict) else None
            if isinstance(resource, dict) and isinstance(resource.get("text"), str):
                out.append((resource, "text"))
        if "structuredContent" in answer:
            _every_string(answer, "structuredContent", out)
        return out
    if op == "messages":
        if isinstance(answer.get("content"), list):
            _content(answer, "content", out)
        return out
    if op == "generate_content":  # Gemini's candidates[].content.parts[].text
        for candidate in answer.get("candidates") or ():
            parts = candidate.get("content", {}).get("parts") if isinstance(candidate, dict) else None
            out.extend((p, "text") for p in parts or () if isinstance(p, dict) and isinstance(p.get("text"), str))
        return out
    for choice in answer.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if op == "completions" and isinstance(choice.get("text"), str):
            out.append((choice, "text"))
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            out.append((message, "content"))
    return out
