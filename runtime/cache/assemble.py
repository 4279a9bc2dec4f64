"""A completed stream, as the client received it, folded into the whole answer of its dialect (what
the cache keeps). A stream that did not end properly (no `[DONE]` or `message_stop`, an error event,
a choice without its finish reason) assembles to None and is never cached."""

from __future__ import annotations

from typing import Any

import orjson

from sidegate.runtime.upstream.providers.common import SseParser

__all__ = ["assemble"]


class _Broken(Exception):
    """The stream is not a complete, well-formed answer."""


def _events(raw: bytes) -> list[tuple[str, str]]:
    parser = SseParser()
    return [(e.event, e.data) for e in parser.feed(raw + b"\n\n")]


def _json(data: str) -> dict[str, Any]:
    obj = orjson.loads(data)
    if not isinstance(obj, dict) or "error" in obj:
        raise _Broken
    return obj


def _openai(raw: bytes, chat: bool) -> dict[str, Any]:
    head: dict[str, Any] | None = None
    choices: dict[int, dict[str, Any]] = {}
    usage: Any = None
    done = False
    for _, data in _events(raw):
        if done:
            raise _Broken
        if data.strip() == "[DONE]":
            done = True
            continue
        obj = _json(data)
        if head is None:
            head = {k: obj[k] for k in ("id", "created", "model", "system_fingerprint", "service_tier") if k in obj}
        if obj.get("usage") is not None:
            usage = obj["usage"]
        for c in obj.get("choices") or []:
            i = int(c.get("index", 0))
            slot = choices.setdefault(i, {"index": i, "text": [], "tools": {}, "finish": None, "extra": {}})
            if c.get("finish_reason"):
                slot["finish"] = c["finish_reason"]
            if not chat:
                slot["text"].append(c.get("text") or "")
                continue
            delta = c.get("delta") or {}
            for field in ("reasoning_content", "refusal"):
                if delta.get(field):
                    slot["extra"][field] = slot["extra"].get(field, "") + delta[field]
            slot["text"].append(delta.get("content") or "")
            for call in delta.get("tool_calls") or []:
                t = slot["tools"].setdefault(int(call.get("index", 0)), {"function": {"name": "", "arguments": ""}})
                fn = call.get("function") or {}
                t["function"]["name"] += fn.get("name") or ""
                t["function"]["arguments"] += fn.get("arguments") or ""
                for k in ("id", "type"):
                    if call.get(k):
                        t[k] = call[k]
    if not done or head is None or not choices or any(s["finish"] is None for s in choices.values()):
        raise _Broken
    out: list[dict[str, Any]] = []
    for i in sorted(choices):
        s = choices[i]
        if not chat:
            out.append({"index": i, "text": "".join(s["text"]), "logprobs": None, "finish_reason": s["finish"]})
            continue
        text = "".join(s["text"])
        msg: dict[str, Any] = {"role": "assistant", "content": text or (None if s["tools"] else ""),
                               **s["extra"]}
        msg.setdefault("refusal", None)
        if s["tools"]:
            msg["tool_calls"] = [{"id": t.get("id", f"call_{j}"), "type": t.get("type", "function"),
                                  "function": t["function"]} for j, t in sorted(s["tools"].items())]
        out.append({"index": i, "message": msg, "logprobs": None, "finish_reason": s["finish"]})
    answer = {**head, "object": "chat.completion" if chat else "text_completion", "choices": out}
    if usage is not None:
        answer["usage"] = usage
    return answer


def _messages(raw: bytes) -> dict[str, Any]:
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, list[str]] = {}
    done = False
    for name, data in _events(raw):
        obj = _json(data)
        kind = obj.get("type") or name
        if done or kind == "error":
            raise _Broken
        if kind == "message_start":
            message = dict(obj["message"])
        elif kind == "content_block_start":
            blocks[int(obj["index"])] = dict(obj["content_block"])
        elif kind == "content_block_delta":
            block, delta = blocks[int(obj["index"])], obj["delta"]
            dt = delta.get("type")
            if dt == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif dt == "input_json_delta":
                partial.setdefault(int(obj["index"]), []).append(delta.get("partial_json", ""))
            elif dt == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif dt == "signature_delta":
                block["signature"] = delta.get("signature", "")
            elif dt == "citations_delta":
                block.setdefault("citations", []).append(delta.get("citation"))
        elif kind == "content_block_stop":
            i = int(obj["index"])
            if i in partial:
                text = "".join(partial.pop(i))
                blocks[i]["input"] = orjson.loads(text) if text else {}
        elif kind == "message_delta" and message is not None:
            message.update(obj.get("delta") or {})
            message["usage"] = {**(message.get("usage") or {}), **(obj.get("usage") or {})}
        elif kind == "message_stop":
            done = True
    if not done or message is None or partial:
        raise _Broken
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message


def assemble(op: str, raw: bytes) -> bytes | None:
    """The whole answer for the stream `raw` of `op` (chat, completions or messages), or None when
    the stream is not a complete answer."""
    try:
        answer = _messages(raw) if op == "messages" else _openai(raw, op == "chat")
    except (_Broken, ValueError, KeyError, TypeError, AttributeError):
        return None
    return orjson.dumps(answer)
