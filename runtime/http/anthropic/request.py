"""An Anthropic Messages request as an OpenAI chat request, for one target: the message and
content-block half of the translation (top-level fields follow `runtime.upstream.translation.RULES`).

Mid-conversation `system` turns (Claude Code sends them) stay at their place for targets that take
system messages anywhere and are folded into the system prompt for the others; images inside tool
results follow the tool messages in a user message, since OpenAI's tool messages carry text only.
"""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.runtime.errors import BadRequest
from sidegate.runtime.plan import Family
from sidegate.runtime.upstream.translation import OPEN, TargetView, apply_fields, refuse

__all__ = ["anthropic_to_openai", "translate"]


def _text_part(block: dict[str, Any], t: TargetView) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": str(block.get("text") or "")}
    if t.caps.prompt_caching and block.get("cache_control"):
        part["cache_control"] = block["cache_control"]
    return part


def _image_part(block: dict[str, Any], t: TargetView) -> dict[str, Any]:
    if t.caps.vision is False:
        raise refuse("image blocks (the model reads no images)", "messages", t)
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = str(source.get("url"))
    else:
        raise refuse(f"image source '{source.get('type')}'", "messages", t)
    return {"type": "image_url", "image_url": {"url": url}}


def _document_parts(block: dict[str, Any], t: TargetView) -> list[dict[str, Any]]:
    source = block.get("source") or {}
    kind = source.get("type")
    title = block.get("title")
    head = [{"type": "text", "text": str(title)}] if isinstance(title, str) and title else []
    if kind == "text":
        return [*head, {"type": "text", "text": str(source.get("data") or "")}]
    if kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return [*head, {"type": "text", "text": inner}]
        return [*head, *(_block_part(b, t) for b in inner or [])]
    if kind != "base64" or source.get("media_type") != "application/pdf":
        raise refuse(f"document source '{kind}'", "messages", t)
    if t.caps.pdf is False:
        raise refuse("PDF documents (the model reads no PDFs)", "messages", t)
    data_url = f"data:application/pdf;base64,{source.get('data')}"
    if not t.family.native:
        name = title if isinstance(title, str) and title else "document.pdf"
        return [{"type": "file", "file": {"filename": name, "file_data": data_url}}]
    if t.family in (Family.GEMINI, Family.VERTEX) and not t.caps.prompt_caching:
        return [*head, {"type": "image_url", "image_url": {"url": data_url}}]  # Gemini's inlineData takes PDFs
    raise refuse("PDF documents", "messages", t)


def _block_part(block: Any, t: TargetView) -> dict[str, Any]:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        return _text_part(block, t)
    if kind == "image":
        return _image_part(block, t)
    raise refuse(f"'{kind}' content blocks", "messages", t)


def _tool_result(block: dict[str, Any], t: TargetView) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tool message and the image parts that must follow it in a user message."""
    content = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for inner in content:
            kind = inner.get("type") if isinstance(inner, dict) else None
            if kind == "text":
                texts.append(str(inner.get("text") or ""))
            elif kind == "image":
                images.append(_image_part(inner, t))
            elif kind == "document":
                images.extend(_document_parts(inner, t))
            else:
                raise refuse(f"'{kind}' blocks inside tool_result", "messages", t)
    elif content is not None:
        raise BadRequest("tool_result content must be a string or an array of blocks", param="messages")
    message = {"role": "tool", "tool_call_id": str(block.get("tool_use_id")), "content": "".join(texts)}
    return message, images


def _system_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text") or "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    raise BadRequest("system content must be a string or an array of text blocks", param="messages")


def _message(message: Any, t: TargetView) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise BadRequest("each message must be an object", param="messages")
    role, content = message.get("role"), message.get("content")
    if role == "system":
        return [{"role": "system", "content": _system_text(content)}]
    if role not in ("user", "assistant"):
        raise BadRequest(f"message role must be user, assistant or system, not '{role}'", param="messages")
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
            parts.append(_text_part(block, t))
        elif kind == "image" and role == "user":
            parts.append(_image_part(block, t))
        elif kind == "document" and role == "user":
            parts.extend(_document_parts(block, t))
        elif kind == "tool_result" and role == "user":
            tool, images = _tool_result(block, t)
            out.append(tool)
            parts[:0] = images
        elif kind == "tool_use" and role == "assistant":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": str(block.get("id")), "type": "function",
                          "function": {"name": str(block.get("name")), "arguments": arguments}})
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # signed reasoning only means something to Anthropic itself
        else:
            raise refuse(f"'{kind}' content blocks", "messages", t)
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        msg: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            msg["tool_calls"] = calls
        if text or calls:
            out.append(msg)
    elif parts:
        plain = all(p["type"] == "text" and "cache_control" not in p for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if plain else parts})
    return out


def _fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every system message's text joined into one leading system message."""
    system = [m for m in messages if m["role"] == "system"]
    if len(system) <= 1 and (not system or messages[0] is system[0]):
        return messages
    texts = []
    for m in system:
        content = m["content"]
        texts.append(content if isinstance(content, str) else "\n".join(p["text"] for p in content))
    return [{"role": "system", "content": "\n\n".join(t for t in texts if t)},
            *(m for m in messages if m["role"] != "system")]


def translate(body: dict[str, Any], t: TargetView) -> tuple[dict[str, Any], list[str]]:
    """The OpenAI chat request for Messages request `body` on target `t`, and the top-level fields
    dropped for it; a 400 naming the field for what `t` cannot take without changing the meaning."""
    if not isinstance(body.get("max_tokens"), int):
        raise BadRequest("'max_tokens' is required and must be an integer", param="max_tokens")
    if not isinstance(body.get("messages"), list):
        raise BadRequest("'messages' must be an array", param="messages")
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise BadRequest("system must be a string or an array of text blocks", param="system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list) and system:
        texts = [_text_part(b, t) for b in system if isinstance(b, dict)]
        whole = len(texts) == 1 and "cache_control" not in texts[0]
        messages.append({"role": "system", "content": texts[0]["text"] if whole else texts})
    for message in body["messages"]:
        messages.extend(_message(message, t))
    if not t.caps.system_anywhere and not t.family.native:
        messages = _fold_system(messages)  # native adapters gather system messages themselves
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    dropped = apply_fields(body, t, out)
    return out, dropped


def anthropic_to_openai(body: dict[str, Any], target: TargetView = OPEN) -> dict[str, Any]:
    """The OpenAI chat request for `body` (on a target that takes everything unless one is given)."""
    return translate(body, target)[0]
