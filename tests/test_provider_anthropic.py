"""Anthropic adapter: OpenAI chat -> Messages API request; documented answers, SSE events and error
envelopes -> OpenAI's shape. Wire examples: see tests/support/fake_anthropic.py for the doc URLs."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from sidegate.runtime.errors import BadRequest, RateLimited, UpstreamError
from sidegate.runtime.upstream.providers.anthropic import AnthropicAdapter, AnthropicRelay, passthrough_request
from tests.support.fake_anthropic import MESSAGE_TEXT, MESSAGE_TOOL, STREAM_TOOL, tool_stream
from tests.support.fake_base import assemble, feed_split, native_provider, sse
from tests.support.plans import target

URL = "https://api.anthropic.com/v1/messages"
HEADERS = (("content-type", "application/json"), ("x-api-key", "sk-ant"))
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a place",
                                            "parameters": {"type": "object",
                                                           "properties": {"location": {"type": "string"}}}}}


def translate(body: dict[str, Any], adapter: AnthropicAdapter | None = None, **target_kw: Any) -> tuple[Any, Any]:
    req = (adapter or AnthropicAdapter()).request(
        native_provider(), target("anthropic", "claude", **target_kw), URL, HEADERS, "chat", "claude-sonnet-4-5",
        {"model": "public", **body})
    return req, json.loads(req.body)


def test_url_and_headers_version_added_key_kept() -> None:
    assert AnthropicAdapter.url("https://api.anthropic.com/v1/", "m", "chat") == URL
    req, payload = translate({"messages": [{"role": "user", "content": "Hello"}]})
    assert req.url == URL and req.method == "POST"
    assert ("anthropic-version", "2023-06-01") in req.headers and ("x-api-key", "sk-ant") in req.headers
    assert payload["model"] == "claude-sonnet-4-5"
    assert payload["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]


def test_max_tokens_from_request_else_context_table_else_4096() -> None:
    msgs = [{"role": "user", "content": "x"}]
    assert translate({"messages": msgs, "max_completion_tokens": 77})[1]["max_tokens"] == 77
    assert translate({"messages": msgs, "max_tokens": 55})[1]["max_tokens"] == 55
    assert translate({"messages": msgs}, max_output_tokens=8192)[1]["max_tokens"] == 8192
    assert translate({"messages": msgs})[1]["max_tokens"] == 4096


def test_system_history_tool_calls_and_parallel_results_in_one_user_turn() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools.", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Rome"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "24C"}]},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [WEATHER], "tool_choice": "required", "stop": "END", "temperature": 0.2, "top_p": 0.9,
    }
    _, payload = translate(body)
    assert payload["system"] == [{"type": "text", "text": "Be brief."},
                                 {"type": "text", "text": "Use tools.", "cache_control": {"type": "ephemeral"}}]
    assert [m["role"] for m in payload["messages"]] == ["user", "assistant", "user"]
    assistant = payload["messages"][1]["content"]
    assert assistant[0] == {"type": "text", "text": "Checking."}
    assert assistant[1:] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"location": "Rome"}}]
    assert payload["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
        {"type": "text", "text": "Thanks"}]
    assert payload["tools"] == [{"name": "get_weather", "description": "Weather of a place",
                                 "input_schema": WEATHER["function"]["parameters"]}]
    assert payload["tool_choice"] == {"type": "any"}
    assert payload["stop_sequences"] == ["END"]
    assert (payload["temperature"], payload["top_p"]) == (0.2, 0.9)


@pytest.mark.parametrize("choice,parallel,expected", [
    ("auto", None, {"type": "auto"}),
    ("none", None, {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
])
def test_tool_choice_mapping(choice: Any, parallel: Any, expected: dict[str, Any]) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert translate(body)[1]["tool_choice"] == expected


def test_images_by_url_and_base64_data_url() -> None:
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
               {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]
    blocks = translate({"messages": [{"role": "user", "content": content}]})[1]["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    assert blocks[2] == {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}}


def test_json_schema_becomes_output_config_and_user_metadata() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    _, payload = translate({"messages": [{"role": "user", "content": "x"}], "user": "u-1",
                            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert payload["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert payload["metadata"] == {"user_id": "u-1"}


def test_unsupported_parameter_is_400_naming_it_unless_dropped() -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "presence_penalty": 0.5, "n": 1, "logprobs": False}
    with pytest.raises(BadRequest) as info:
        translate(body)
    assert info.value.param == "presence_penalty" and "presence_penalty" in info.value.message
    _, payload = translate(body, AnthropicAdapter(drop_unsupported=True))
    assert "presence_penalty" not in payload


def test_extra_body_is_native_and_translation_wins() -> None:
    import types
    extra = types.MappingProxyType({"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 1})
    _, payload = translate({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10}, extra_body=extra)
    assert payload["thinking"] == {"type": "enabled", "budget_tokens": 1024} and payload["max_tokens"] == 10


def test_documented_text_answer() -> None:
    body, usage = AnthropicAdapter(clock=lambda: 1700000000).response("chat", json.dumps(MESSAGE_TEXT).encode())
    obj = json.loads(body)
    assert obj["object"] == "chat.completion" and obj["created"] == 1700000000
    assert obj["choices"][0]["message"]["content"] == "Hi! My name is Claude."
    assert obj["choices"][0]["finish_reason"] == "stop"
    assert usage is not None and (usage.prompt, usage.completion, usage.cached) == (2095 + 100 + 20, 503, 100)
    assert obj["usage"]["prompt_tokens_details"]["cached_tokens"] == 100
    assert obj["usage"]["total_tokens"] == 2215 + 503


def test_documented_tool_use_answer() -> None:
    obj = json.loads(AnthropicAdapter().response("chat", json.dumps(MESSAGE_TOOL).encode())[0])
    choice = obj["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"location": "San Francisco, CA", "unit": "celsius"}


@pytest.mark.parametrize("step", [1, 7, 37, 10_000])
def test_documented_tool_stream_at_odd_boundaries(step: int) -> None:
    translator = AnthropicAdapter().stream("chat", keep_usage=False)
    got = assemble(feed_split(translator, sse(STREAM_TOOL), step))
    assert got.role_first and got.done and translator.done
    assert got.text == "Okay, let's check."
    assert got.calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6" and got.calls[0]["name"] == "get_weather"
    assert json.loads(got.calls[0]["arguments"]) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert got.finish == "tool_calls" and got.usage is None
    assert translator.usage is not None and (translator.usage.prompt, translator.usage.completion) == (472, 89)


def test_parallel_streamed_calls_get_indexes_0_and_1_and_usage_chunk_when_kept() -> None:
    events = tool_stream([("t1", "a", ['{"x":', "1}"]), ("t2", "b", ['{"y":', "2}"])])
    got = assemble(feed_split(AnthropicAdapter().stream("chat", keep_usage=True), sse(events), 11))
    assert {i: (c["id"], json.loads(c["arguments"])) for i, c in got.calls.items()} == {0: ("t1", {"x": 1}),
                                                                                         1: ("t2", {"y": 2})}
    assert got.usage == {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561,
                         "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}


def test_stream_error_event_raises_mapped_error() -> None:
    events = [*STREAM_TOOL[:4], ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})]
    translator = AnthropicAdapter().stream("chat", keep_usage=False)
    with pytest.raises(UpstreamError) as info:
        feed_split(translator, sse(events), 9)
    assert "Overloaded" in info.value.message and not translator.done


def _err(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Any:
    body = json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    return AnthropicAdapter().error(status, httpx.Headers(headers or {}), body)


def test_error_mapping_by_status() -> None:
    rate = _err(429, "rate_limit_error", "slow down", {"retry-after": "7"})
    assert isinstance(rate, RateLimited) and rate.retry_after == 7.0
    overloaded = _err(529, "overloaded_error", "Overloaded")
    assert isinstance(overloaded, UpstreamError) and overloaded.status == 503, "503 for OpenAI clients"
    assert overloaded.anthropic_status == 529 and overloaded.type == "overloaded_error"
    auth = _err(401, "authentication_error", "invalid x-api-key")
    assert auth.code == "upstream_auth_error"
    bad = _err(400, "invalid_request_error", "messages: roles must alternate")
    assert isinstance(bad, BadRequest) and bad.message == "messages: roles must alternate"
    assert _err(400, "invalid_request_error", "prompt is too long: 208000 tokens > 200000 maximum").code == \
        "context_length_exceeded"
    assert _err(400, "invalid_request_error", "Output blocked by content filtering policy").code == \
        "content_policy_violation"


def test_passthrough_keeps_body_and_client_version_headers() -> None:
    body = {"model": "public", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
            "thinking": {"type": "enabled", "budget_tokens": 2048}}
    req = passthrough_request(native_provider(), target("anthropic", "claude"), URL, HEADERS, "claude-opus",
                              body, {"anthropic-beta": "beta-1", "anthropic-version": "2023-06-01"})
    assert json.loads(req.body) == {**body, "model": "claude-opus"}
    assert ("anthropic-beta", "beta-1") in req.headers


def test_relay_passes_events_and_records_usage() -> None:
    relay = AnthropicRelay()
    raw = sse(STREAM_TOOL)
    out = feed_split(relay, raw, 5)
    assert out.count(b"event: ") == len(STREAM_TOOL) and relay.done
    assert relay.usage is not None and relay.usage.completion == 89


def test_relay_error_event_raises_before_anything_was_relayed_and_is_kept_after() -> None:
    overloaded = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    first = AnthropicRelay()
    with pytest.raises(UpstreamError) as raised:
        first.feed(sse([overloaded]))
    assert raised.value.status == 503 and "Overloaded" in raised.value.message
    later = AnthropicRelay()
    out = later.feed(sse([*STREAM_TOOL[:3], overloaded]))
    assert out.endswith(b'"Overloaded"}}\n\n') and later.done
    assert later.failure is not None and later.failure.status == 503
