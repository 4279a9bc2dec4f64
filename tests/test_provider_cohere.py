"""Cohere adapter: OpenAI chat and embeddings -> v2 chat and embed; documented answers, SSE events and
errors -> OpenAI's shape. Wire examples: see tests/support/fake_cohere.py for the doc URLs."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from sidegate.runtime.errors import BadRequest, RateLimited, UpstreamError
from sidegate.runtime.upstream.providers.cohere import CohereAdapter
from tests.support.fake_base import assemble, feed_split, native_provider, sse
from tests.support.fake_cohere import CHAT_TEXT, CHAT_TOOL, EMBED, stream_events
from tests.support.plans import target

BASE = "https://api.cohere.com/v2"
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather", "strict": True,
                                         "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                                                        "required": ["location"]}}}


def translate(body: dict[str, Any], op: str = "chat", adapter: CohereAdapter | None = None,
              **target_kw: Any) -> tuple[Any, Any]:
    req = (adapter or CohereAdapter()).request(
        native_provider(), target("cohere", "c", **target_kw), CohereAdapter.url(BASE, "command-a-03-2025", op),
        (("authorization", "Bearer co-key"),), op, "command-a-03-2025", {"model": "public", **body})
    return req, json.loads(req.body)


def test_chat_body() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                         {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]},
            {"role": "assistant", "content": "I will check.", "tool_calls": [
                {"id": "get_weather_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Toronto"}'}}]},
            {"role": "tool", "tool_call_id": "get_weather_1", "content": "18C"},
            {"role": "assistant", "content": "It is 18C."},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [TOOL], "tool_choice": "required", "max_tokens": 300, "temperature": 0.3, "top_p": 0.8,
        "top_k": 10, "stop": ["END"], "seed": 7, "frequency_penalty": 0.1, "presence_penalty": 0.2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
    }
    req, payload = translate(body)
    assert req.url == f"{BASE}/chat" and ("authorization", "Bearer co-key") in req.headers
    assert payload["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                     {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]},
        {"role": "assistant", "tool_plan": "I will check.", "tool_calls": [
            {"id": "get_weather_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Toronto"}'}}]},
        {"role": "tool", "tool_call_id": "get_weather_1", "content": "18C"},
        {"role": "assistant", "content": "It is 18C."},
        {"role": "user", "content": "Thanks"},
    ]
    assert payload["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                                  "parameters": TOOL["function"]["parameters"]}}]
    assert payload["strict_tools"] is True and payload["tool_choice"] == "REQUIRED"
    assert {k: payload[k] for k in ("max_tokens", "temperature", "p", "k", "seed", "frequency_penalty",
                                    "presence_penalty", "stop_sequences")} == {
        "max_tokens": 300, "temperature": 0.3, "p": 0.8, "k": 10, "seed": 7, "frequency_penalty": 0.1,
        "presence_penalty": 0.2, "stop_sequences": ["END"]}
    assert payload["response_format"] == {"type": "json_object", "schema": {"type": "object"}}


def test_named_tool_is_400_unless_dropped_and_context_max_tokens() -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    with pytest.raises(BadRequest) as info:
        translate(body)
    assert info.value.param == "tool_choice"
    _, payload = translate(body, adapter=CohereAdapter(drop_unsupported=True), max_output_tokens=99)
    assert payload["tool_choice"] == "REQUIRED" and payload["max_tokens"] == 99


def test_documented_answers() -> None:
    body, usage = CohereAdapter().response("chat", json.dumps(CHAT_TEXT).encode(), model="command-a-03-2025")
    obj = json.loads(body)
    assert obj["choices"][0]["message"]["content"] == "LLMs stand for Large Language Models."
    assert obj["choices"][0]["finish_reason"] == "stop" and obj["model"] == "command-a-03-2025"
    assert usage is not None and (usage.prompt, usage.completion, usage.cached) == (5, 418, 2)
    obj = json.loads(CohereAdapter().response("chat", json.dumps(CHAT_TOOL).encode())[0])
    message = obj["choices"][0]["message"]
    assert obj["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] == "I will search for the weather in Toronto."
    assert message["tool_calls"][0]["id"] == "get_weather_1byjy32y4hvq"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"location": "Toronto"}
    with pytest.raises(UpstreamError):
        CohereAdapter().response("chat", json.dumps({**CHAT_TEXT, "finish_reason": "ERROR"}).encode())


@pytest.mark.parametrize("step", [1, 9, 37, 10_000])
def test_text_stream(step: int) -> None:
    translator = CohereAdapter().stream("chat", keep_usage=False)
    got = assemble(feed_split(translator, sse(stream_events([])) + b"data: [DONE]\n\n", step))
    assert got.role_first and got.text == "Hi there!" and got.finish == "stop" and got.done
    assert translator.usage is not None and translator.usage.prompt == 5


def test_parallel_tool_call_stream() -> None:
    events = stream_events([("get_weather_a", "get_weather", ['{"location":', ' "Paris"}']),
                            ("get_weather_b", "get_weather", ['{"location": "Rome"}'])])
    got = assemble(feed_split(CohereAdapter().stream("chat", keep_usage=True), sse(events), 23))
    assert got.text == "I will check."
    assert [(c["id"], json.loads(c["arguments"])) for c in got.calls.values()] == [
        ("get_weather_a", {"location": "Paris"}), ("get_weather_b", {"location": "Rome"})]
    assert got.finish == "tool_calls" and got.usage is not None and got.usage["completion_tokens"] == 418


def test_stream_finish_error_raises() -> None:
    with pytest.raises(UpstreamError):
        CohereAdapter().stream("chat", keep_usage=False).feed(sse(stream_events([], finish="ERROR")))


def test_embed_request_and_documented_answer() -> None:
    req, payload = translate({"input": ["hello"], "dimensions": 256}, op="embeddings")
    assert req.url == f"{BASE}/embed"
    assert payload == {"input_type": "search_document", "model": "command-a-03-2025", "texts": ["hello"],
                       "embedding_types": ["float"], "output_dimension": 256}
    body, _ = CohereAdapter().response("embeddings", json.dumps(EMBED).encode(), model="embed-v4.0")
    obj = json.loads(body)
    assert obj["data"][0]["embedding"] == [0.5, -0.25, 0.125] and obj["usage"]["prompt_tokens"] == 3
    with pytest.raises(BadRequest):
        translate({"input": [[1, 2, 3]]}, op="embeddings")


def _err(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    return CohereAdapter().error(status, httpx.Headers(headers or {}), json.dumps({"message": message}).encode())


def test_error_mapping() -> None:
    rate = _err(429, "trial key limited", {"retry-after": "7"})
    assert isinstance(rate, RateLimited) and rate.retry_after == 7.0
    assert _err(498, "invalid api token").code == "upstream_auth_error"
    assert _err(400, "too many tokens: total number of tokens in the prompt cannot exceed 128000").code == \
        "context_length_exceeded"
    assert isinstance(_err(500, "internal"), UpstreamError)
    bad = _err(422, "invalid request: message must not be empty")
    assert isinstance(bad, BadRequest) and bad.status == 422
