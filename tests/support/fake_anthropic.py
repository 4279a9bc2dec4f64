"""A fake Anthropic Messages API (`POST /v1/messages`) speaking the documented wire format.

Wire examples follow https://docs.anthropic.com/en/api/messages (answers),
https://docs.anthropic.com/en/docs/build-with-claude/tool-use (tool_use answers),
https://docs.anthropic.com/en/api/messages-streaming (SSE events) and
https://docs.anthropic.com/en/api/errors (error envelope and statuses).

Behaviour by the `model` in the body (`mode[:anything]`):
  ok (default)    text; with tools, one tool_use per tool (two tools -> parallel calls)
  overloaded-529  HTTP 529 overloaded_error       rate-429   HTTP 429 with retry-after: 7
  context         HTTP 400 prompt is too long     bad-request HTTP 400 invalid_request_error
  auth-401        HTTP 401 authentication_error   stream-error  stream that ends with an error event
Requests without `x-api-key` or `anthropic-version` are refused as the real API does.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.fake_base import FakeServer, Seen, open_fake, sse

__all__ = ["MESSAGE_TEXT", "MESSAGE_TOOL", "STREAM_TOOL", "FakeAnthropic", "open_fake_anthropic", "tool_stream"]

# https://docs.anthropic.com/en/api/messages (response example), usage with cache fields.
MESSAGE_TEXT: dict[str, Any] = {
    "content": [{"text": "Hi! My name is Claude.", "type": "text"}],
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "model": "claude-sonnet-4-5",
    "role": "assistant",
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "type": "message",
    "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_read_input_tokens": 100,
              "cache_creation_input_tokens": 20},
}

# https://docs.anthropic.com/en/docs/build-with-claude/tool-use (tool_use response example).
MESSAGE_TOOL: dict[str, Any] = {
    "id": "msg_01Aq9w938a90dw8q",
    "model": "claude-sonnet-4-5",
    "stop_reason": "tool_use",
    "role": "assistant",
    "type": "message",
    "content": [
        {"type": "text", "text": "I need to use get_weather, and the user wants SF, which is likely San Francisco, CA."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
         "input": {"location": "San Francisco, CA", "unit": "celsius"}},
    ],
    "stop_sequence": None,
    "usage": {"input_tokens": 472, "output_tokens": 89},
}


def tool_stream(calls: list[tuple[str, str, list[str]]], text: str = "Okay, let's check.") -> list[tuple[str, Any]]:
    """The events of https://docs.anthropic.com/en/api/messages-streaming ("Streaming request with
    tool use"): a text block, then one tool_use block per (id, name, argument pieces)."""
    events: list[tuple[str, Any]] = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant",
            "model": "claude-3-haiku-20240307", "stop_sequence": None,
            "usage": {"input_tokens": 472, "output_tokens": 2}, "content": [], "stop_reason": None}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
    ]
    for piece in (text[:5], text[5:]):
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": piece}}))
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    for n, (call_id, name, pieces) in enumerate(calls, start=1):
        events.append(("content_block_start", {"type": "content_block_start", "index": n, "content_block": {
            "type": "tool_use", "id": call_id, "name": name, "input": {}}}))
        for piece in ["", *pieces]:
            events.append(("content_block_delta", {"type": "content_block_delta", "index": n,
                                                   "delta": {"type": "input_json_delta", "partial_json": piece}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": n}))
    stop = "tool_use" if calls else "end_turn"
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"output_tokens": 89}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


STREAM_TOOL = tool_stream([("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather",
                            ['{"location":', ' "San', ' Francisc', 'o,', ' CA"', ", ", '"unit": "fah', 'renheit"}'])])

_ERRORS = {
    "overloaded-529": (529, "overloaded_error", "Overloaded"),
    "rate-429": (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    "context": (400, "invalid_request_error", "prompt is too long: 208000 tokens > 200000 maximum"),
    "bad-request": (400, "invalid_request_error", "messages: roles must alternate between \"user\" and \"assistant\""),
    "auth-401": (401, "authentication_error", "invalid x-api-key"),
}


class FakeAnthropic(FakeServer):
    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    async def answer(self, seen: Seen, send: Any) -> None:
        body = seen.body or {}
        mode = str(body.get("model", "ok")).split(":")[0]
        if "x-api-key" not in seen.headers:
            mode = "auth-401"
        elif "anthropic-version" not in seen.headers:
            await self._error(send, 400, "invalid_request_error", "anthropic-version header is required")
            return
        if seen.path.endswith("/messages/count_tokens"):
            await self.count_tokens(mode, body, send)
            return
        await self.answer_mode(mode, body, send)

    async def count_tokens(self, mode: str, body: dict[str, Any], send: Any) -> None:
        """`POST /v1/messages/count_tokens` (https://docs.anthropic.com/en/api/messages-count-tokens):
        `{"input_tokens": n}`; this fake counts 1 token per 3 bytes of the counted fields' JSON."""
        if mode in _ERRORS:
            status, kind, message = _ERRORS[mode]
            await self._error(send, status, kind, message)
            return
        if set(body) - {"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"}:
            await self._error(send, 400, "invalid_request_error", f"unexpected fields: {sorted(body)}")
            return
        counted = {k: v for k, v in body.items() if k != "model"}
        await self.json(send, 200, {"input_tokens": len(json.dumps(counted)) // 3})

    async def answer_mode(self, mode: str, body: dict[str, Any], send: Any) -> None:
        """The answer for `mode` (the model name's first part) to a checked request."""
        if mode in _ERRORS:
            status, kind, message = _ERRORS[mode]
            await self._error(send, status, kind, message, [(b"retry-after", b"7")] if status == 429 else [])
            return
        names = [t["name"] for t in body.get("tools") or []][:2]
        calls = [(f"toolu_0{i}", name, ['{"location":', ' "Paris"}']) for i, name in enumerate(names)]
        if body.get("stream"):
            events = tool_stream(calls)
            if mode == "stream-error":
                events = [*events[:5], ("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                            "message": "Overloaded"}})]
            await self.stream(send, sse(events))
            return
        if calls:
            answer = {**MESSAGE_TOOL, "model": body.get("model"), "content": [
                MESSAGE_TOOL["content"][0],
                *({"type": "tool_use", "id": i, "name": n, "input": {"location": "Paris"}} for i, n, _ in calls)]}
        else:
            answer = {**MESSAGE_TEXT, "model": body.get("model")}
        if (body.get("thinking") or {}).get("type") == "enabled":
            # Extended thinking: a `thinking` block (with its signature) before the answer.
            answer["content"] = [{"type": "thinking", "thinking": "Mersenne: 2^61-1 is a known prime.",
                                  "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pk"}, *answer["content"]]
        await self.json(send, 200, answer)

    async def _error(self, send: Any, status: int, kind: str, message: str,
                     headers: list[tuple[bytes, bytes]] = []) -> None:
        await self.json(send, status, {"type": "error", "error": {"type": kind, "message": message}}, headers)


def open_fake_anthropic():  # type: ignore[no-untyped-def]
    return open_fake(FakeAnthropic())


class FakeVertexClaude(FakeAnthropic):
    """Claude on Vertex AI (https://docs.anthropic.com/en/api/claude-on-vertex-ai): the same Messages
    answers at `.../publishers/anthropic/models/{model}:rawPredict` (`:streamRawPredict` for
    streams), the model in the URL and not the body, `anthropic_version: vertex-2023-10-16` in the
    body, an OAuth bearer token instead of x-api-key; Vertex's own errors in Google's envelope."""

    def vertex_base_url(self, project: str = "proj", region: str = "us-central1") -> str:
        return f"{self.root}/v1/projects/{project}/locations/{region}/publishers/google"

    async def answer(self, seen: Seen, send: Any) -> None:
        body = seen.body or {}
        prefix, _, tail = seen.path.partition("/publishers/anthropic/models/")
        model, _, method = tail.rpartition(":")
        if not prefix.startswith("/v1/projects/") or method not in ("rawPredict", "streamRawPredict"):
            await self.json(send, 404, {"error": {"code": 404, "message": f"no route {seen.path}",
                                                  "status": "NOT_FOUND"}})
            return
        if not seen.headers.get("authorization", "").startswith("Bearer "):
            await self.json(send, 401, {"error": {"code": 401, "message": "Request had invalid authentication "
                                                  "credentials.", "status": "UNAUTHENTICATED"}})
            return
        if body.get("anthropic_version") != "vertex-2023-10-16" or "model" in body:
            await self._error(send, 400, "invalid_request_error",
                              "anthropic_version: vertex-2023-10-16 is required and model must not be set")
            return
        if (method == "streamRawPredict") != bool(body.get("stream")):
            await self._error(send, 400, "invalid_request_error", "stream must match the method")
            return
        await self.answer_mode(model.split("@")[0].removeprefix("claude-"), {**body, "model": model}, send)
