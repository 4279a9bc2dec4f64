"""A Responses API request: its parameters checked, and lowered to the chat-completions request
that every backend other than OpenAI and Azure serves.

Each top-level parameter is mapped (`instructions`, `tools`, `tool_choice`, `text.format`,
`reasoning.effort`, `max_output_tokens`, sampling), dropped because it only tunes OpenAI's own
service (`metadata`, `include`, `truncation`, `service_tier`, `prompt_cache_key`...), or refused
with a 400 naming it because dropping it would change the answer (`background`, `conversation`,
`prompt`, a `tool_choice` that requires a hosted tool). Hosted tools, tool namespaces and custom
tools that are only offered are dropped for backends other than OpenAI and Azure: the model there
cannot call them, and the rest of the request keeps its meaning (Codex offers `web_search` on
every turn). Parameters this table does not know go to OpenAI and Azure as sent (the
upstream judges them) and are dropped for other backends: clients add new ones faster than any
gateway learns them (Codex sends `client_metadata`).
"""

from __future__ import annotations

from typing import Any

from sidegate.runtime.errors import BadRequest
from sidegate.runtime.responses.items import input_items, to_messages
from sidegate.runtime.routing.call import json_object

__all__ = ["DROPPED", "MAPPED", "REFUSED", "forced_builtin", "parse_responses", "to_chat"]

MAPPED = ("model", "input", "instructions", "tools", "tool_choice", "text", "reasoning", "max_output_tokens",
          "parallel_tool_calls", "temperature", "top_p", "top_logprobs", "stream", "user", "previous_response_id")
DROPPED = ("metadata", "store", "include", "truncation", "service_tier", "prompt_cache_key", "safety_identifier",
           "stream_options", "max_tool_calls", "client_metadata")
REFUSED = {"background": "background responses", "conversation": "conversations", "prompt": "prompt templates"}

def parse_responses(body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The request's JSON object with every parameter's shape checked (400 with `param` otherwise),
    and its input as items."""
    data = json_object(body)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
    if "input" not in data:
        raise BadRequest("'input' is required", param="input")
    items = input_items(data["input"])
    for key, what in REFUSED.items():
        if data.get(key) not in (None, False):
            raise BadRequest(f"{what} ('{key}') are not supported by this gateway", param=key)
    for key, kind in (("stream", bool), ("store", bool), ("parallel_tool_calls", bool)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise BadRequest(f"'{key}' must be a boolean", param=key)
    tokens = data.get("max_output_tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 16):
        raise BadRequest("'max_output_tokens' must be an integer of at least 16", param="max_output_tokens")
    if data.get("instructions") is not None and not isinstance(data["instructions"], str):
        raise BadRequest("'instructions' must be a string", param="instructions")
    previous = data.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise BadRequest("'previous_response_id' must be a response id", param="previous_response_id")
    tools = data.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise BadRequest("'tools' must be an array of tool objects", param="tools")
    return data, items


def forced_builtin(data: dict[str, Any]) -> str | None:
    """The non-function tool `tool_choice` requires, if any (it cannot be dropped)."""
    choice = data.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") not in (None, "function", "allowed_tools"):
        return str(choice["type"])
    return None


def _tools(data: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(data.get("tools") or []):
        if tool.get("type") != "function":
            continue  # offered, not required: the model cannot use it on this backend (see forced_builtin)
        if not isinstance(tool.get("name"), str):
            raise BadRequest(f"tools[{i}].name is required", param=f"tools[{i}].name")
        fn: dict[str, Any] = {"name": tool["name"], "parameters": tool.get("parameters") or {"type": "object"}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        if tool.get("strict") is not None:
            fn["strict"] = tool["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        return choice.get("mode", "auto") if choice.get("mode") in ("auto", "required") else "auto"
    raise BadRequest("'tool_choice' must be auto, none, required or a function choice", param="tool_choice")


def _format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise BadRequest("'text' must be an object", param="text")
    fmt = text.get("format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        schema: dict[str, Any] = {"name": fmt.get("name") or "output", "schema": fmt["schema"]}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    raise BadRequest("'text.format' must be text, json_object or json_schema with a schema", param="text.format")


def to_chat(data: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions request for a Responses request whose conversation (earlier turns from
    `previous_response_id`, then this request's input) is `items`."""
    out: dict[str, Any] = {"model": data["model"], "messages": to_messages(items, data.get("instructions"))}
    tools = _tools(data)
    if tools:
        out["tools"] = tools
        if data.get("tool_choice") is not None:
            out["tool_choice"] = _tool_choice(data["tool_choice"])
        if data.get("parallel_tool_calls") is not None:
            out["parallel_tool_calls"] = data["parallel_tool_calls"]
    fmt = _format(data.get("text"))
    if fmt is not None:
        out["response_format"] = fmt
    reasoning = data.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") in ("minimal", "low", "medium", "high"):
        out["reasoning_effort"] = reasoning["effort"]
    if data.get("max_output_tokens") is not None:
        out["max_tokens"] = data["max_output_tokens"]
    for key in ("temperature", "top_p", "user"):
        if data.get(key) is not None:
            out[key] = data[key]
    if isinstance(data.get("top_logprobs"), int) and data["top_logprobs"] > 0:
        out["logprobs"], out["top_logprobs"] = True, data["top_logprobs"]
    if data.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out
