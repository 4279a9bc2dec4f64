"""A fake Anthropic Messages upstream that answers by the shared script (`tests.support.script`), in
Anthropic's wire format (https://docs.anthropic.com/en/api/messages, .../messages-streaming): a
`tool_use` block for a `[[call NAME {json}]]` directive, `Tool said: ...` after tool results.
Requests without `x-api-key` and `anthropic-version`, or with a role other than user/assistant in
`messages` (user, assistant and the system turns Claude Code sends), are refused as the real API refuses them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.support.fake_base import FakeServer, Seen, sse
from tests.support.script import Reply, reply_for

__all__ = ["ScriptedAnthropic"]


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}


def _turns(body: dict[str, Any]) -> list[tuple[str, str]]:
    turns: list[tuple[str, str]] = []
    for m in body.get("messages") or []:
        content = m.get("content")
        if isinstance(content, str):
            turns.append((m["role"], content))
            continue
        for block in content or []:
            if block.get("type") == "text":
                turns.append((m["role"], block["text"]))
            elif block.get("type") == "tool_result":
                inner = block.get("content")
                text = inner if isinstance(inner, str) else "".join(
                    b.get("text", "") for b in inner or [] if b.get("type") == "text")
                turns.append(("tool", text))
            elif block.get("type") == "tool_use":
                turns.append(("assistant", ""))
    return turns


@dataclass
class ScriptedAnthropic(FakeServer):
    refused: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    async def answer(self, seen: Seen, send: Any) -> None:
        if "x-api-key" not in seen.headers or "anthropic-version" not in seen.headers:
            await self.json(send, 401, _error("authentication_error", "x-api-key header is required"))
            return
        body = seen.body if isinstance(seen.body, dict) else {}
        if seen.path.endswith("/count_tokens"):
            await self.json(send, 200, {"input_tokens": 42})
            return
        bad = [m.get("role") for m in body.get("messages") or [] if m.get("role") not in ("user", "assistant", "system")]
        if bad or not seen.path.endswith("/v1/messages"):
            reason = f"messages: Unexpected role \"{bad[0]}\"" if bad else f"Not found: {seen.path}"
            self.refused.append(reason)
            await self.json(send, 400 if bad else 404, _error("invalid_request_error" if bad else "not_found_error",
                                                              reason))
            return
        offered = {t.get("name") for t in body.get("tools") or []}
        schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
        reply = reply_for(_turns(body), {n for n in offered if isinstance(n, str)}, schema)
        message = _message(body, reply)
        if body.get("stream"):
            await self.stream(send, sse(_events(message)))
        else:
            await self.json(send, 200, message)


def _message(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    if reply.call:
        content.append({"type": "tool_use", "id": "toolu_" + reply.call[0].lower(), "name": reply.call[0],
                        "input": reply.call[1]})
    return {"id": "msg_scripted", "type": "message", "role": "assistant", "model": body.get("model"),
            "content": content, "stop_reason": "tool_use" if reply.call else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 50, "output_tokens": 9, "cache_read_input_tokens": 0,
                      "cache_creation_input_tokens": 0}}


def _events(message: dict[str, Any]) -> list[tuple[str | None, Any]]:
    start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
    events: list[tuple[str | None, Any]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "text_delta", "text": block["text"]}}))
        else:
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {**block, "input": {}}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"],
                                                                        "stop_sequence": None},
                                     "usage": {"output_tokens": message["usage"]["output_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events
