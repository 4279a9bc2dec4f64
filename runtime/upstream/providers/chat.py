"""An OpenAI chat request parsed into a neutral form that each native adapter lowers to its wire.

System and developer messages are collected apart; the rest becomes alternating `user` /
`assistant` turns (tool results ride in user turns, as Anthropic and Bedrock want them; a provider
that wants separate tool messages splits them again). Parameters the target cannot take raise a 400
naming them, or are dropped when the spec says `drop_unsupported`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidegate.runtime.errors import BadRequest
from sidegate.runtime.upstream.providers.common import data_url, unsupported

__all__ = [
    "EFFORT_BUDGET",
    "Chat",
    "Image",
    "ResponseFormat",
    "Text",
    "Tool",
    "ToolCall",
    "ToolResult",
    "Turn",
    "parse_chat",
    "result_text",
    "thinking_budget",
]

ALWAYS = frozenset({"model", "messages", "stream", "stream_options", "user", "store", "metadata"})
"""Fields every adapter takes: routing fields and bookkeeping that never reaches the model."""

EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}
"""Thinking-token budgets for OpenAI's `reasoning_effort` on providers that take a budget instead
(1,024 is Anthropic's floor); `none` turns thinking off where the provider allows it."""

_NO_OP = {"n": (None, 1), "parallel_tool_calls": (None, True), "logprobs": (None, False)}
"""Values of parameters that change nothing, accepted even where the parameter is not."""


@dataclass(slots=True)
class Text:
    """A text part; `cache_control` is passed through to providers that know it."""

    text: str
    cache_control: Any = None


@dataclass(slots=True)
class Image:
    """An image part: a URL, or base64 `data` with its media type (from a data URL)."""

    url: str
    media_type: str | None
    data: str | None


@dataclass(slots=True)
class ToolCall:
    """A tool call the assistant made; `arguments` is the parsed JSON, `raw` the original text."""

    id: str
    name: str
    arguments: Any
    raw: str


@dataclass(slots=True)
class ToolResult:
    """The result of tool call `call_id` (named `name`) as text."""

    call_id: str
    name: str
    content: str


Part = Text | Image | ToolCall | ToolResult


@dataclass(slots=True)
class Turn:
    """One side's consecutive messages merged: role `user` or `assistant`."""

    role: str
    parts: list[Part]


@dataclass(slots=True)
class Tool:
    """A function the model may call."""

    name: str
    description: str | None
    parameters: dict[str, Any]
    strict: bool | None = None
    cache_control: Any = None


@dataclass(slots=True)
class ResponseFormat:
    """`json_object` (schema None) or `json_schema`."""

    kind: str
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(slots=True)
class Chat:
    """The parsed request."""

    system: list[Text] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str | None = None
    """`auto`, `none` or `required`; with `tool_name` set, that one function is forced."""
    tool_name: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: ResponseFormat | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    reasoning_effort: str | None = None
    """`none`, or a key of EFFORT_BUDGET."""
    stream: bool = False
    dropped: list[str] = field(default_factory=list)
    """Parameters dropped under `drop_unsupported`."""


def parse_chat(body: dict[str, Any], provider: str, supported: Iterable[str], drop: bool = False) -> Chat:
    """Parse and check an OpenAI chat body for `provider`, which maps the fields in `supported`."""
    allowed = ALWAYS | frozenset(supported)
    chat = Chat()
    for key, value in body.items():
        if key in allowed or (key in _NO_OP and value in _NO_OP[key]):
            continue
        if key == "response_format" and isinstance(value, dict) and value.get("type") == "text":
            continue
        if drop:
            chat.dropped.append(key)
            continue
        raise unsupported(provider, f"parameter '{key}'", param=key)
    _messages(chat, body["messages"], provider)

    def get(key: str) -> Any:
        return None if key in chat.dropped else body.get(key)

    chat.max_tokens = _int(get("max_completion_tokens"), "max_completion_tokens") or _int(
        get("max_tokens"), "max_tokens"
    )
    chat.temperature = _number(get("temperature"), "temperature")
    chat.top_p = _number(get("top_p"), "top_p")
    chat.top_k = _int(get("top_k"), "top_k")
    chat.seed = _int(get("seed"), "seed")
    chat.presence_penalty = _number(get("presence_penalty"), "presence_penalty")
    chat.frequency_penalty = _number(get("frequency_penalty"), "frequency_penalty")
    stop = get("stop")
    chat.stop = [stop] if isinstance(stop, str) else [str(s) for s in stop] if isinstance(stop, list) else []
    chat.parallel_tool_calls = get("parallel_tool_calls")
    user = body.get("user")
    chat.user = user if isinstance(user, str) else None
    chat.stream = body.get("stream") is True
    effort = get("reasoning_effort")
    if effort is not None and effort != "none" and effort not in EFFORT_BUDGET:
        raise BadRequest("'reasoning_effort' must be one of none, minimal, low, medium, high", param="reasoning_effort")
    chat.reasoning_effort = effort
    chat.tools = [_tool(t, provider) for t in get("tools") or []]
    _tool_choice(chat, get("tool_choice"))
    chat.response_format = _response_format(get("response_format"))
    return chat


def thinking_budget(chat: Chat, max_tokens: int, provider: str) -> int | None:
    """The thinking budget for `chat.reasoning_effort` under a `max_tokens` cap that includes the
    thinking (OpenAI counts reasoning inside max_completion_tokens; Anthropic wants the budget
    below max_tokens): None when the request asks for no thinking."""
    if chat.reasoning_effort is None or chat.reasoning_effort == "none":
        return None
    budget = min(EFFORT_BUDGET[chat.reasoning_effort], max_tokens - 1)
    if budget < 1024:
        raise BadRequest(
            f"reasoning_effort on {provider} needs max_completion_tokens above 1024 (thinking takes at least 1024)",
            param="reasoning_effort",
        )
    return budget


def _int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{name}' must be an integer", param=name)
    return value


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"'{name}' must be a number", param=name)
    return float(value)


def _content(content: Any, provider: str, images: bool) -> list[Text | Image]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)] if content else []
    if not isinstance(content, list):
        raise BadRequest("message 'content' must be a string or an array of parts", param="messages")
    parts: list[Text | Image] = []
    for item in content:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text" and isinstance(item.get("text"), str):
            if item["text"]:
                parts.append(Text(item["text"], item.get("cache_control")))
        elif kind == "image_url" and images:
            ref = item.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise BadRequest("'image_url.url' must be a string", param="messages")
            inline = data_url(url)
            parts.append(Image(url, inline[0], inline[1]) if inline else Image(url, None, None))
        else:
            raise unsupported(provider, f"content part type '{kind}'")
    return parts


def _messages(chat: Chat, messages: list[Any], provider: str) -> None:
    names: dict[str, str] = {}
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object", param="messages")
        role = message.get("role")
        parts: list[Part]
        if role in ("system", "developer"):
            chat.system.extend(p for p in _content(message.get("content"), provider, False) if isinstance(p, Text))
            continue
        if role == "user":
            parts = list(_content(message.get("content"), provider, True))
        elif role == "assistant":
            if message.get("function_call"):
                raise unsupported(provider, "legacy 'function_call' messages")
            parts = list(_content(message.get("content"), provider, False))
            for call in message.get("tool_calls") or []:
                parsed = _call(call)
                names[parsed.id] = parsed.name
                parts.append(parsed)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise BadRequest("tool messages need a 'tool_call_id'", param="messages")
            text = "".join(p.text for p in _content(message.get("content"), provider, False) if isinstance(p, Text))
            name = names.get(call_id) or str(message.get("name") or "")
            parts = [ToolResult(call_id, name, text)]
            role = "user"
        else:
            raise unsupported(provider, f"message role '{role}'")
        if not parts:
            continue
        if chat.turns and chat.turns[-1].role == role:
            last = chat.turns[-1]
            # Tool results first: providers want them right after the calls they answer.
            if isinstance(parts[0], ToolResult) and not all(isinstance(p, ToolResult) for p in last.parts):
                results = [p for p in last.parts if isinstance(p, ToolResult)]
                last.parts = [*results, *parts, *(p for p in last.parts if not isinstance(p, ToolResult))]
            else:
                last.parts.extend(parts)
        else:
            chat.turns.append(Turn(role, parts))


def _call(call: Any) -> ToolCall:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise BadRequest("each tool call needs 'function.name'", param="messages")
    raw = fn.get("arguments") or "{}"
    if not isinstance(raw, str):
        raise BadRequest("tool call 'arguments' must be a JSON string", param="messages")
    try:
        arguments = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(f"tool call arguments of '{fn['name']}' are not valid JSON", param="messages") from None
    return ToolCall(str(call.get("id") or ""), fn["name"], arguments, raw)


def _tool(tool: Any, provider: str) -> Tool:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise unsupported(provider, f"tool type '{kind}'", param="tools")
    fn = tool["function"]
    if not isinstance(fn.get("name"), str):
        raise BadRequest("each tool needs 'function.name'", param="tools")
    params = fn.get("parameters")
    return Tool(
        fn["name"],
        fn.get("description") if isinstance(fn.get("description"), str) else None,
        params if isinstance(params, dict) else {"type": "object", "properties": {}},
        fn.get("strict") if isinstance(fn.get("strict"), bool) else None,
        tool.get("cache_control"),
    )


def _tool_choice(chat: Chat, choice: Any) -> None:
    if choice is None:
        return
    if choice in ("auto", "none", "required"):
        chat.tool_choice = choice
        return
    fn = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        chat.tool_choice, chat.tool_name = "required", fn["name"]
        return
    raise BadRequest("'tool_choice' must be auto, none, required or a function", param="tool_choice")


def _response_format(value: Any) -> ResponseFormat | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object")
    spec = value.get("json_schema") if kind == "json_schema" else None
    if isinstance(spec, dict) and isinstance(spec.get("schema", {}), dict):
        strict = spec.get("strict")
        return ResponseFormat(
            "json_schema", spec.get("name"), spec.get("schema") or {"type": "object"},
            strict if isinstance(strict, bool) else None,
        )
    raise BadRequest("'response_format' must be text, json_object or json_schema", param="response_format")


def result_text(value: Any) -> str:
    """A tool result or argument value as text (JSON for anything but strings)."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()
