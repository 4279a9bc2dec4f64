"""A fake Cohere v2 API: `POST /v2/chat` (JSON or SSE) and `POST /v2/embed`.

Wire examples follow https://docs.cohere.com/reference/chat (response), https://docs.cohere.com/v2/docs/tool-use
(tool_plan and tool_calls), https://docs.cohere.com/v2/docs/streaming (stream events: message-start,
content-start, content-delta, content-end, tool-plan-delta, tool-call-start/-delta/-end, message-end),
https://docs.cohere.com/reference/embed (embeddings by type) and https://docs.cohere.com/reference/errors.

Behaviour by the `model` in the body (`mode[:anything]`):
  ok (default)  text; with tools, one tool call per tool (up to two: parallel calls)
  rate-429  HTTP 429 {"message"}   context  HTTP 400 too many tokens   fail-500  HTTP 500
  bad-token HTTP 498 invalid token  stream-error  stream whose message-end has finish_reason ERROR
Requests without `Authorization: Bearer` get 401.
"""

from __future__ import annotations

from typing import Any

from tests.support.fake_base import FakeServer, Seen, open_fake, sse

__all__ = ["CHAT_TEXT", "CHAT_TOOL", "EMBED", "FakeCohere", "open_fake_cohere", "stream_events"]

USAGE = {"billed_units": {"input_tokens": 5, "output_tokens": 418}, "tokens": {"input_tokens": 71, "output_tokens": 418},
         "cached_tokens": 2}

# https://docs.cohere.com/reference/chat (response example)
CHAT_TEXT: dict[str, Any] = {
    "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
    "finish_reason": "COMPLETE",
    "message": {"role": "assistant", "content": [{"type": "text", "text": "LLMs stand for Large Language Models."}]},
    "usage": USAGE,
}

# https://docs.cohere.com/v2/docs/tool-use (tool calling step)
CHAT_TOOL: dict[str, Any] = {
    "id": "1fb1ddf8-5b5b-4aa3-93a7-e5e9c5b3e0a1",
    "finish_reason": "TOOL_CALL",
    "message": {
        "role": "assistant",
        "tool_plan": "I will search for the weather in Toronto.",
        "tool_calls": [{"id": "get_weather_1byjy32y4hvq", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Toronto"}'}}],
    },
    "usage": {"billed_units": {"input_tokens": 37, "output_tokens": 28}, "tokens": {"input_tokens": 913,
                                                                                    "output_tokens": 81}},
}

# https://docs.cohere.com/reference/embed (response with embedding_types=["float"])
EMBED: dict[str, Any] = {
    "id": "da6e531f-54c6-4a73-bf92-f60566d8d753",
    "embeddings": {"float": [[0.5, -0.25, 0.125]]},
    "texts": ["hello"],
    "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 3}},
    "response_type": "embeddings_by_type",
}


def stream_events(calls: list[tuple[str, str, list[str]]], finish: str | None = None) -> list[tuple[str, Any]]:
    """The documented event sequence: text events without calls, tool plan + tool calls with them."""
    events: list[tuple[str, Any]] = [("message-start", {"id": "29f14a5a-11de-4cae-9800-25e4747408ea",
                                                        "type": "message-start", "delta": {"message": {
                                                            "role": "assistant", "content": [], "tool_plan": "",
                                                            "tool_calls": [], "citations": []}}})]
    if calls:
        for piece in ("I will", " check."):
            events.append(("tool-plan-delta", {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}}))
        for n, (call_id, name, pieces) in enumerate(calls):
            events.append(("tool-call-start", {"type": "tool-call-start", "index": n, "delta": {"message": {
                "tool_calls": {"id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}}}}))
            for piece in pieces:
                events.append(("tool-call-delta", {"type": "tool-call-delta", "index": n, "delta": {"message": {
                    "tool_calls": {"function": {"arguments": piece}}}}}))
            events.append(("tool-call-end", {"type": "tool-call-end", "index": n}))
    else:
        events.append(("content-start", {"type": "content-start", "index": 0, "delta": {"message": {
            "content": {"type": "text", "text": ""}}}}))
        for piece in ("Hi", " there", "!"):
            events.append(("content-delta", {"type": "content-delta", "index": 0, "delta": {"message": {
                "content": {"text": piece}}}}))
        events.append(("content-end", {"type": "content-end", "index": 0}))
    reason = finish or ("TOOL_CALL" if calls else "COMPLETE")
    events.append(("message-end", {"type": "message-end", "delta": {"finish_reason": reason, "usage": USAGE}}))
    return events


_ERRORS = {
    "rate-429": (429, "You are using a Trial key, which is limited to 10 API calls / minute."),
    "context": (400, "too many tokens: total number of tokens in the prompt cannot exceed 128000 - received 130000"),
    "fail-500": (500, "internal server error, this has been reported to our developers"),
    "bad-token": (498, "invalid api token"),
    "unauthorized": (401, "no api key supplied"),
}


class FakeCohere(FakeServer):
    @property
    def base_url(self) -> str:
        return f"{self.root}/v2"

    async def answer(self, seen: Seen, send: Any) -> None:
        body = seen.body or {}
        mode = str(body.get("model", "ok")).split(":")[0]
        if not seen.headers.get("authorization", "").startswith("Bearer "):
            mode = "unauthorized"
        if mode in _ERRORS:
            status, message = _ERRORS[mode]
            await self.json(send, status, {"id": "e0c7d6a5", "message": message},
                            [(b"retry-after", b"7")] if status == 429 else [])
            return
        if seen.path.endswith("/embed"):
            await self.json(send, 200, {**EMBED, "texts": body["texts"],
                                        "embeddings": {"float": [[0.5, -0.25, 0.125] for _ in body["texts"]]}})
            return
        names = [t["function"]["name"] for t in body.get("tools") or []][:2]
        calls = [(f"{n}_{i}x", n, ['{"location":', ' "Paris"}']) for i, n in enumerate(names)]
        if body.get("stream"):
            events = stream_events(calls, "ERROR" if mode == "stream-error" else None)
            await self.stream(send, sse(events))
            return
        if calls:
            answer = {**CHAT_TOOL, "message": {**CHAT_TOOL["message"], "tool_calls": [
                {"id": i, "type": "function", "function": {"name": n, "arguments": '{"location": "Paris"}'}}
                for i, n, _ in calls]}}
        else:
            answer = CHAT_TEXT
        await self.json(send, 200, answer)


def open_fake_cohere():  # type: ignore[no-untyped-def]
    return open_fake(FakeCohere())
