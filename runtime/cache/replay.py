"""A cached whole answer replayed as the stream the client asked for: OpenAI chat or legacy
completion chunks ending in `data: [DONE]`, or Anthropic's Messages events ending in
`message_stop`, the same text, tool calls and usage the answer holds."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["replay_stream"]


def _data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"


def _chat(answer: dict[str, Any], usage: bool) -> bytes:
    base: dict[str, Any] = {k: answer[k] for k in ("id", "created", "model", "system_fingerprint", "service_tier")
                            if k in answer}
    base["object"] = "chat.completion.chunk"
    nulls = {"usage": None} if usage else {}
    out: list[bytes] = []

    def chunk(index: int, delta: dict[str, Any], finish: Any = None) -> None:
        out.append(_data({**base, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                               "finish_reason": finish}], **nulls}))

    for choice in answer.get("choices") or []:
        i = choice.get("index", 0)
        msg = choice.get("message") or {}
        chunk(i, {"role": msg.get("role", "assistant"), "content": ""})
        for field in ("reasoning_content", "content", "refusal"):
            if msg.get(field):
                chunk(i, {field: msg[field]})
        for j, call in enumerate(msg.get("tool_calls") or []):
            chunk(i, {"tool_calls": [{"index": j, **call}]})
        chunk(i, {}, choice.get("finish_reason") or "stop")
    if usage and answer.get("usage") is not None:
        out.append(_data({**base, "choices": [], "usage": answer["usage"]}))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def _completion(answer: dict[str, Any], usage: bool) -> bytes:
    base: dict[str, Any] = {k: answer[k] for k in ("id", "created", "model", "system_fingerprint") if k in answer}
    base["object"] = "text_completion"
    nulls = {"usage": None} if usage else {}
    out: list[bytes] = []
    for choice in answer.get("choices") or []:
        i = choice.get("index", 0)
        if choice.get("text"):
            out.append(_data({**base, "choices": [{"index": i, "text": choice["text"], "logprobs": None,
                                                   "finish_reason": None}], **nulls}))
        out.append(_data({**base, "choices": [{"index": i, "text": "", "logprobs": None,
                                               "finish_reason": choice.get("finish_reason") or "stop"}], **nulls}))
    if usage and answer.get("usage") is not None:
        out.append(_data({**base, "choices": [], "usage": answer["usage"]}))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def _block_start(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A content block's `content_block_start` form and the deltas that fill it."""
    kind = block.get("type")
    if kind == "text":
        start = {k: v for k, v in block.items() if k not in ("text", "citations")}
        deltas = [{"type": "citations_delta", "citation": c} for c in block.get("citations") or []]
        return {**start, "text": ""}, [{"type": "text_delta", "text": block.get("text", "")}, *deltas]
    if kind in ("tool_use", "server_tool_use"):
        raw = orjson.dumps(block.get("input", {})).decode()
        return {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": raw}]
    if kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")}]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        return {**block, "thinking": "", "signature": ""}, deltas
    return block, []  # redacted thinking, server tool results: whole in their start event


def _messages(answer: dict[str, Any]) -> bytes:
    usage = dict(answer.get("usage") or {})
    start_usage = {**usage, "output_tokens": min(1, int(usage.get("output_tokens") or 0))}
    message = {**answer, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    out = [_event("message_start", {"message": message}), _event("ping", {})]
    for i, block in enumerate(answer.get("content") or []):
        start, deltas = _block_start(block)
        out.append(_event("content_block_start", {"index": i, "content_block": start}))
        out.extend(_event("content_block_delta", {"index": i, "delta": d}) for d in deltas)
        out.append(_event("content_block_stop", {"index": i}))
    delta = {"stop_reason": answer.get("stop_reason") or "end_turn", "stop_sequence": answer.get("stop_sequence")}
    out.append(_event("message_delta", {"delta": delta, "usage": usage}))
    out.append(_event("message_stop", {}))
    return b"".join(out)


def replay_stream(op: str, answer: bytes, data: dict[str, Any]) -> bytes:
    """The whole `answer` (the client's dialect) as the event stream of `op`."""
    obj = orjson.loads(answer)
    if op == "messages":
        return _messages(obj)
    options = data.get("stream_options")
    usage = isinstance(options, dict) and options.get("include_usage") is True
    return _completion(obj, usage) if op == "completions" else _chat(obj, usage)
