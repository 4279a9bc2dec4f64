"""Inbound Anthropic Messages API: requests to OpenAI's shape, OpenAI answers and chunk streams back
to Anthropic's exact format (validated with the `anthropic` SDK's own types and stream accumulator),
Anthropic's error envelope, and the count_tokens estimate."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent

from sidegate.runtime.errors import BadRequest, GatewayError, RateLimited, Unavailable, UpstreamError, UpstreamTimeout
from sidegate.runtime.http.anthropic.messages import (
    OpenAIToAnthropicStream,
    anthropic_error_body,
    anthropic_error_event,
    anthropic_to_openai,
    estimate_input_tokens,
    openai_to_anthropic_response,
)
from tests.support.fake_base import feed_split

# https://docs.anthropic.com/en/docs/build-with-claude/tool-use (a multi-turn tool use request)
REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}}],
    "tools": [{"name": "get_weather", "description": "Get the current weather in a given location",
               "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                                "required": ["location"]}}],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "messages": [
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/map.jpg"}},
            {"type": "text", "text": "What's the weather like in San Francisco?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Need the tool.", "signature": "sig"},
            {"type": "text", "text": "I'll check."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"location": "San Francisco, CA"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
            {"type": "text", "text": "And tomorrow?"}]},
    ],
    "stop_sequences": ["\n\nHuman:"], "temperature": 0.5, "top_k": 5, "stream": True,
    "metadata": {"user_id": "user-42"}, "thinking": {"type": "enabled", "budget_tokens": 2000},
}


def test_request_to_openai_shape() -> None:
    out = anthropic_to_openai(REQUEST)
    assert out["model"] == "claude-sonnet-4-5" and out["max_tokens"] == 1024
    assert out["messages"] == [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
            {"type": "image_url", "image_url": {"url": "https://x.test/map.jpg"}},
            {"type": "text", "text": "What's the weather like in San Francisco?"}]},
        {"role": "assistant", "content": "I'll check.", "tool_calls": [
            {"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location":"San Francisco, CA"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert out["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a given location",
        "parameters": REQUEST["tools"][0]["input_schema"]}}]
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert out["stop"] == ["\n\nHuman:"] and out["temperature"] == 0.5 and out["top_k"] == 5
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert "user" not in out and out["reasoning_effort"] == "low"  # metadata is Anthropic-side: dropped


@pytest.mark.parametrize("choice,expected", [
    ({"type": "auto"}, "auto"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
])
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    assert anthropic_to_openai({**REQUEST, "tool_choice": choice})["tool_choice"] == expected


@pytest.mark.parametrize("change,param", [
    ({"container": "c1"}, "container"),
    ({"mcp_servers": [{"type": "url", "url": "https://mcp.test/sse", "name": "x"}]}, "mcp_servers"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages"),
    ({"max_tokens": None}, "max_tokens"),
])
def test_untranslatable_requests_are_400_naming_the_field(change: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        anthropic_to_openai({**REQUEST, **change})
    assert info.value.param == param


def test_structured_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    out = anthropic_to_openai({**REQUEST, "output_config": {"format": {"type": "json_schema", "schema": schema},
                                                            "effort": "max"}})
    assert out["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert out["reasoning_effort"] == "high"


COMPLETION = {
    "id": "chatcmpl-123", "object": "chat.completion", "created": 1, "model": "gpt-4o",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Rome"}'}}]}}],
    "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
              "prompt_tokens_details": {"cached_tokens": 30}},
}


def test_response_is_a_valid_anthropic_message() -> None:
    message = Message.model_validate_json(openai_to_anthropic_response(json.dumps(COMPLETION).encode(), "claude-x"))
    assert message.model == "claude-x" and message.stop_reason == "tool_use"
    assert message.content[0].type == "text" and message.content[0].text == "Let me look."
    uses = [b for b in message.content if b.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == [("call_1", "get_weather", {"location": "Paris"}),
                                                       ("call_2", "get_weather", {"location": "Rome"})]
    assert (message.usage.input_tokens, message.usage.output_tokens, message.usage.cache_read_input_tokens) == (70, 20, 30)
    plain = {**COMPLETION, "choices": [{"index": 0, "finish_reason": "length",
                                        "message": {"role": "assistant", "content": "Hi"}}]}
    assert Message.model_validate_json(openai_to_anthropic_response(plain, "m")).stop_reason == "max_tokens"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


OPENAI_STREAM = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Checking"}), _chunk({"content": " both."}),
    _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"location":'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
    _chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Rome"}'}}]}),
    _chunk({}, "tool_calls"),
    {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
     "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62}},
]) + b"data: [DONE]\n\n"


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            name, data = block.split("\n", 1)
            assert name.startswith("event: ") and data.startswith("data: ")
            out.append((name[len("event: "):], json.loads(data[len("data: "):])))
    return out


@pytest.mark.parametrize("step", [1, 13, 100_000])
def test_stream_is_exact_anthropic_events_the_sdk_accumulates(step: int) -> None:
    translator = OpenAIToAnthropicStream("claude-x")
    events = _events(feed_split(translator, OPENAI_STREAM, step))
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    assert all(n == payload["type"] for n, payload in events), "event: line matches the payload type"
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)
    snapshot: Any = None
    bufs: dict[int, bytes] = {}
    for name, payload in events:
        if name == "ping":
            continue
        snapshot = accumulate_event(event=adapter.validate_python(payload), current_snapshot=snapshot, json_bufs=bufs)
    assert snapshot.content[0].type == "text" and snapshot.content[0].text == "Checking both."
    assert [(b.id, b.input) for b in snapshot.content[1:]] == [("call_1", {"location": "Paris"}),
                                                               ("call_2", {"location": "Rome"})]
    assert snapshot.stop_reason == "tool_use" and snapshot.usage.output_tokens == 12
    assert translator.done and translator.usage is not None and translator.usage.prompt == 50
    starts = [p["index"] for n, p in events if n == "content_block_start"]
    stops = [p["index"] for n, p in events if n == "content_block_stop"]
    assert starts == stops == [0, 1, 2]


def test_stream_error_event() -> None:
    raw = b"data: " + json.dumps(_chunk({"content": "Hi"})).encode() + b"\n\n" + \
        b'data: {"error": {"message": "upstream timed out", "type": "timeout_error", "code": "gateway_timeout"}}\n\n'
    events = _events(OpenAIToAnthropicStream("m").feed(raw))
    assert events[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "upstream timed out"}})


@pytest.mark.parametrize("err,kind", [
    (BadRequest("bad"), "invalid_request_error"),
    (UpstreamError("x", code="upstream_auth_error", status=401), "authentication_error"),
    (RateLimited("slow"), "rate_limit_error"),
    (UpstreamError("boom"), "api_error"),
    (Unavailable("busy"), "overloaded_error"),
    (UpstreamTimeout("late"), "api_error"),
    (GatewayError("nope", status=404), "not_found_error"),
])
def test_error_envelope_types_by_status(err: GatewayError, kind: str) -> None:
    body = json.loads(anthropic_error_body(err, request_id="req_1"))
    assert body == {"type": "error", "error": {"type": kind, "message": err.message}, "request_id": "req_1"}
    assert anthropic_error_event(err).startswith(b"event: error\ndata: {")


def test_count_tokens_estimate() -> None:
    # o200k_base: "The quick brown fox jumps over the lazy dog." is 10 tokens; 3 frame the message.
    base = {"model": "m", "messages": [{"role": "user", "content": "The quick brown fox jumps over the lazy dog."}]}
    assert estimate_input_tokens(base) == 10 + 3
    with_image = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "The quick brown fox jumps over the lazy dog."},
        {"type": "image", "source": {"type": "url", "url": "u"}}]}]}
    assert estimate_input_tokens(with_image) == 10 + 3 + 1600
    assert estimate_input_tokens(REQUEST) > estimate_input_tokens({**REQUEST, "tools": []})
    assert estimate_input_tokens(base) == 13
