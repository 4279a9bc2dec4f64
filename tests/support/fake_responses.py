"""A fake OpenAI upstream for the Responses API tests: a real HTTP server on 127.0.0.1 speaking

- `POST /v1/responses` (https://platform.openai.com/docs/api-reference/responses): stateful like
  OpenAI's (it keeps its answers; an unknown `previous_response_id` is a 400), streamed with the
  documented event sequence, refusing unknown parameters;
- `POST /v1/chat/completions` with function calling: tools and a user turn last -> a call of the
  first tool with `{"city": "Paris"}` (Codex CLI's `exec_command`: `echo sidegate-tool-ran`); a tool result last -> "Sunny, <result>"; a JSON schema format
  -> `{"city": "Paris"}`; otherwise "You said: <last user text> (<n> messages)". It refuses what
  OpenAI refuses: unknown parameters, `reasoning_effort` on a non-reasoning model, a `tool` message
  that answers no preceding tool call, roles other than system/developer/user/assistant/tool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.fake_base import FakeServer, Seen, open_fake, sse

_CHAT_PARAMS = {"model", "messages", "tools", "tool_choice", "max_tokens", "max_completion_tokens", "temperature",
                "top_p", "stream", "stream_options", "response_format", "parallel_tool_calls", "user", "logprobs",
                "top_logprobs", "reasoning_effort", "stop", "n", "seed"}
_RESPONSES_PARAMS = {"model", "input", "instructions", "tools", "tool_choice", "text", "reasoning",
                     "max_output_tokens", "parallel_tool_calls", "temperature", "top_p", "stream", "user",
                     "previous_response_id", "store", "metadata", "include", "truncation", "top_logprobs",
                     "service_tier", "prompt_cache_key", "safety_identifier", "stream_options", "max_tool_calls"}
TOOL_ARGS = {"exec_command": '{"cmd": "echo sidegate-tool-ran"}', "shell": '{"command": ["echo", "sidegate-tool-ran"]}'}
"""The arguments this fake calls a tool with, by name (Codex CLI's shell tools get a harmless command)."""
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def _error(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def _last_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


@dataclass
class FakeOpenAIResponses(FakeServer):
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    async def answer(self, seen: Seen, send: Any) -> None:
        body = seen.body if isinstance(seen.body, dict) else {}
        if seen.headers.get("authorization") != "Bearer sk-upstream":
            await self.json(send, 401, _error("Incorrect API key provided.", code="invalid_api_key"))
        elif seen.path == "/v1/chat/completions":
            await self.chat(body, send)
        elif seen.path == "/v1/responses":
            await self.responses(body, send)
        else:
            await self.json(send, 404, _error(f"Invalid URL (POST {seen.path})"))

    # -- chat completions ------------------------------------------------------------------------
    def _chat_problem(self, body: dict[str, Any]) -> dict[str, Any] | None:
        unknown = sorted(set(body) - _CHAT_PARAMS)
        if unknown:
            return _error(f"Unrecognized request argument supplied: {unknown[0]}")
        if "reasoning_effort" in body and not str(body.get("model", "")).startswith(("o", "gpt-5")):
            return _error("Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                          "reasoning_effort", "unsupported_parameter")
        calls: set[str] = set()
        for i, m in enumerate(body.get("messages") or []):
            if m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
                return _error(f"Invalid value: '{m.get('role')}'.", f"messages[{i}].role")
            for c in m.get("tool_calls") or []:
                calls.add(c["id"])
            if m["role"] == "tool" and m.get("tool_call_id") not in calls:
                return _error("messages with role 'tool' must be a response to a preceeding message with "
                              "'tool_calls'.", f"messages[{i}].role")
        return None

    def _chat_message(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        last = messages[-1]
        fmt = body.get("response_format") or {}
        if last["role"] == "tool":
            return {"role": "assistant", "content": f"Sunny, {last['content']}"}
        if body.get("tools") and last["role"] == "user":
            name = body["tools"][0]["function"]["name"]
            args = TOOL_ARGS.get(name, '{"city": "Paris"}')
            return {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{len(messages)}", "type": "function", "function": {"name": name, "arguments": args}}]}
        if fmt.get("type") == "json_schema":
            return {"role": "assistant", "content": '{"city": "Paris"}'}
        user = next(m for m in reversed(messages) if m["role"] == "user")
        return {"role": "assistant", "content": f"You said: {_last_text(user['content'])} ({len(messages)} messages)"}

    async def chat(self, body: dict[str, Any], send: Any) -> None:
        problem = self._chat_problem(body)
        if problem is not None:
            await self.json(send, 400, problem)
            return
        message = self._chat_message(body)
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            await self.json(send, 200, {**base, "object": "chat.completion", "usage": USAGE, "choices": [
                {"index": 0, "message": message, "finish_reason": finish}]})
            return
        chunk = {**base, "object": "chat.completion.chunk"}
        events: list[tuple[str | None, Any]] = [(None, {**chunk, "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})]
        for call in message.get("tool_calls") or []:
            args = call["function"]["arguments"]
            events.append((None, {**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": call["id"], "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": ""}}]}, "finish_reason": None}]}))
            for piece in (args[:7], args[7:]):
                events.append((None, {**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [
                    {"index": 0, "function": {"arguments": piece}}]}, "finish_reason": None}]}))
        text = message.get("content") or ""
        for start in range(0, len(text), 5):
            events.append((None, {**chunk, "choices": [{"index": 0, "delta": {"content": text[start:start + 5]},
                                                        "finish_reason": None}]}))
        events.append((None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append((None, {**chunk, "choices": [], "usage": USAGE}))
        await self.stream(send, sse(events) + b"data: [DONE]\n\n")

    # -- responses -------------------------------------------------------------------------------
    async def responses(self, body: dict[str, Any], send: Any) -> None:
        unknown = sorted(set(body) - _RESPONSES_PARAMS)
        if unknown:
            await self.json(send, 400, _error(f"Unknown parameter: '{unknown[0]}'.", unknown[0], "unknown_parameter"))
            return
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.stored:
            await self.json(send, 400, _error(f"Previous response with id '{previous}' not found.",
                                              "previous_response_id", "previous_response_not_found"))
            return
        items = body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
        turns = len(items) + (self.stored[previous]["_turns"] if previous else 0)
        said = _last_text(next((i.get("content") for i in reversed(items) if i.get("role") == "user"), ""))
        rid = f"resp_up{len(self.stored)}"
        text = f"upstream: {said} ({turns} items)"
        message = {"type": "message", "id": f"msg_up{len(self.stored)}", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}
        response = {"id": rid, "object": "response", "created_at": int(time.time()), "status": "completed",
                    "model": body["model"], "output": [message], "previous_response_id": previous,
                    "usage": {"input_tokens": 20, "output_tokens": 5, "total_tokens": 25,
                              "input_tokens_details": {"cached_tokens": 0},
                              "output_tokens_details": {"reasoning_tokens": 0}}}
        if body.get("store", True):
            self.stored[rid] = {**response, "_turns": turns + 1}
        if not body.get("stream"):
            await self.json(send, 200, response)
            return
        start = {**response, "status": "in_progress", "output": []}
        seq = iter(range(100))
        events: list[tuple[str | None, Any]] = [
            ("response.created", {"type": "response.created", "response": start}),
            ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                            "item": {**message, "status": "in_progress", "content": []}}),
            ("response.content_part.added", {"type": "response.content_part.added", "item_id": message["id"],
                                             "output_index": 0, "content_index": 0,
                                             "part": {"type": "output_text", "text": "", "annotations": []}}),
            ("response.output_text.delta", {"type": "response.output_text.delta", "item_id": message["id"],
                                            "output_index": 0, "content_index": 0, "delta": text}),
            ("response.output_text.done", {"type": "response.output_text.done", "item_id": message["id"],
                                           "output_index": 0, "content_index": 0, "text": text}),
            ("response.content_part.done", {"type": "response.content_part.done", "item_id": message["id"],
                                            "output_index": 0, "content_index": 0, "part": message["content"][0]}),
            ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": message}),
            ("response.completed", {"type": "response.completed", "response": response}),
        ]
        await self.stream(send, sse([(n, {**e, "sequence_number": next(seq)}) for n, e in events]))


def open_fake_responses():  # type: ignore[no-untyped-def]
    return open_fake(FakeOpenAIResponses())


__all__ = ["TOOL_ARGS", "USAGE", "FakeOpenAIResponses", "open_fake_responses"]
