"""Message helpers: the chat messages OpenAI's (and LiteLLM's) shape takes."""

from __future__ import annotations

from typing import Any

__all__ = ["Message", "assistant_message", "system_message", "tool_message", "user_message"]

Message = dict[str, Any]


def user_message(content: str | list[dict[str, Any]], *, name: str | None = None) -> Message:
    """`{"role": "user", "content": ...}` (text, or a list of content parts such as images)."""
    return _message("user", content, name)


def system_message(content: str, *, name: str | None = None) -> Message:
    """`{"role": "system", "content": ...}` (the Anthropic surface takes it as `system`)."""
    return _message("system", content, name)


def assistant_message(content: str | None, *, tool_calls: list[dict[str, Any]] | None = None,
                      name: str | None = None) -> Message:
    """`{"role": "assistant", "content": ...}`, with the tool calls it made when there are any."""
    message = _message("assistant", content, name)
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def tool_message(tool_call_id: str, content: str) -> Message:
    """A tool's result: `{"role": "tool", "tool_call_id": ..., "content": ...}`."""
    return {"role": "tool", "tool_call_id": tool_call_id, "content": content}


def _message(role: str, content: Any, name: str | None) -> Message:
    message: Message = {"role": role, "content": content}
    if name is not None:
        message["name"] = name
    return message
