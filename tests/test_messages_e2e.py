"""`POST /v1/messages` end to end: the official `anthropic` SDK against sidegate served in-process,
in front of an OpenAI-format backend (translated both ways), a native Gemini backend (translated
twice) and an Anthropic backend (passed through untouched). Streaming with tools, Anthropic's error
envelope and in-stream error events, and `/v1/messages/count_tokens`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import pytest
import trio

from sidegate.runtime.plan import Family
from tests.support.fake_anthropic import MESSAGE_TEXT, FakeAnthropic
from tests.support.fake_base import FakeServer, Seen, open_fake
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import open_gateway
from tests.support.plans import group, native_provider, openai_provider, plan, target
from tests.support.upstream import open_fake_openai

TOOLS: list[Any] = [
    {"name": name, "description": f"The {name.split('_')[1]} at a place",
     "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}
    for name in ("get_weather", "get_time")
]
ASK: list[Any] = [{"role": "user", "content": "Weather and time in Paris?"}]


class TextThenTools(FakeServer):
    """An OpenAI-format upstream that streams some text, then two parallel tool calls whose
    arguments arrive in pieces, then the usage chunk (OpenAI's documented chunk shapes)."""

    async def answer(self, seen: Seen, send: Any) -> None:
        base = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": seen.body["model"]}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        events = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Let me "}), chunk({"content": "check."})]
        for index, (call_id, name) in enumerate((("call_w", "get_weather"), ("call_t", "get_time"))):
            events.append(chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                                 "function": {"name": name, "arguments": ""}}]}))
            for piece in ('{"loca', 'tion": "Pa', 'ris"}'):
                events.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        events.append(chunk({}, "tool_calls"))
        events.append({**base, "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 12,
                                                         "total_tokens": 32}})
        raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        await self.stream(send, raw)


@asynccontextmanager
async def open_stack() -> AsyncIterator[tuple[anthropic.AsyncAnthropic, dict[str, Any]]]:
    """sidegate with four backends: `scripted` and `openai` (OpenAI wire), `gemini`, `claude`."""
    async with (open_fake(TextThenTools()) as scripted, open_fake_openai() as oa, open_fake(FakeGemini()) as gem,
                open_fake(FakeAnthropic()) as ant):
        providers = [
            openai_provider("scripted", f"{scripted.root}/v1"),
            openai_provider("oa", oa.base_url),
            native_provider("gem", Family.GEMINI, gem.base_url, "GEMINI_KEY"),
            native_provider("ant", Family.ANTHROPIC, ant.base_url, "ANTHROPIC_KEY"),
        ]
        models = [group("scripted", target("scripted", "ok")), group("openai", target("oa", "ok")),
                  group("openai-broken", target("oa", "fail-500")), group("gemini", target("gem", "ok")),
                  group("gemini-breaks", target("gem", "stream-error")), group("claude", target("ant", "ok")),
                  group("claude-limited", target("ant", "rate-429")),
                  group("claude-breaks", target("ant", "stream-error"))]
        async with open_gateway(plan(providers, models)) as gw:
            client = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="sk-client",
                                              max_retries=0)
            yield client, {"scripted": scripted, "openai": oa, "gemini": gem, "claude": ant, "port": gw.port}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_KEY", "AIza-test")
    monkeypatch.setenv("ANTHROPIC_KEY", "sk-ant-upstream")


def _blocks(message: Any) -> list[tuple[str, Any]]:
    return [(b.type, b.text if b.type == "text" else (b.id, b.name, b.input)) for b in message.content]


async def _stream(client: anthropic.AsyncAnthropic, model: str, **kw: Any) -> tuple[Any, list[str]]:
    async with client.messages.stream(model=model, max_tokens=256, messages=ASK, **kw) as stream:
        kinds = [event.type async for event in stream]
        return await stream.get_final_message(), kinds


async def test_streaming_with_tools_from_an_openai_backend() -> None:
    with trio.fail_after(15):
        async with open_stack() as (client, fakes):
            message, kinds = await _stream(client, "scripted", tools=TOOLS, system="Be brief.")
    assert _blocks(message) == [
        ("text", "Let me check."),
        ("tool_use", ("call_w", "get_weather", {"location": "Paris"})),
        ("tool_use", ("call_t", "get_time", {"location": "Paris"})),
    ]
    assert message.stop_reason == "tool_use" and message.model == "scripted"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 12)
    assert kinds[0] == "message_start" and "input_json" in kinds and kinds[-1] == "message_stop"
    sent = fakes["scripted"].seen[-1].body
    assert sent["model"] == "ok" and sent["max_tokens"] == 256 and sent["stream"] is True
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, *ASK]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "get_time"]
    assert sent["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]


async def test_whole_answers_and_tool_results_through_openai_and_gemini_backends() -> None:
    history: list[Any] = [
        *ASK,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"location": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]},
    ]
    with trio.fail_after(15):
        async with open_stack() as (client, fakes):
            text = await client.messages.create(model="openai", max_tokens=64, messages=ASK)
            tool = await client.messages.create(model="openai", max_tokens=64, messages=history, tools=TOOLS)
            gemini = await client.messages.create(model="gemini", max_tokens=64, messages=ASK, tools=TOOLS)
            gemini_stream, _ = await _stream(client, "gemini")
    assert _blocks(text) == [("text", "Hi there!")] and text.stop_reason == "end_turn"
    assert (text.usage.input_tokens, text.usage.output_tokens, text.usage.cache_read_input_tokens) == (7, 2, 4)
    assert _blocks(tool) == [("tool_use", ("call_abc123", "get_weather", {"location": "Paris"}))]
    sent = fakes["openai"].seen[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "toolu_1" and sent[2] == {
        "role": "tool", "tool_call_id": "toolu_1", "content": "18C"}
    assert [(k, v[1:]) for k, v in _blocks(gemini)] == [("tool_use", ("get_weather", {"location": "Paris"})),
                                                        ("tool_use", ("get_time", {"location": "Paris"}))]
    assert gemini.stop_reason == "tool_use"
    assert _blocks(gemini_stream) == [("text", "Hi there!")] and gemini_stream.usage.output_tokens == 9


async def test_anthropic_backend_gets_the_body_untouched_and_answers_verbatim() -> None:
    body: dict[str, Any] = {
        "model": "claude", "max_tokens": 300, "messages": ASK, "tools": TOOLS, "top_k": 5,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": "u-1"}, "tool_choice": {"type": "auto", "disable_parallel_tool_use": False},
    }
    with trio.fail_after(15):
        async with open_stack() as (client, fakes):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{fakes['port']}") as raw:
                whole = await raw.post("/v1/messages", json={**body, "tools": []},
                                       headers={"x-api-key": "sk-client", "anthropic-version": "2023-06-01"})
            message, _ = await _stream(client, "claude", tools=TOOLS, extra_headers={"anthropic-beta": "tools-x"})
    seen = fakes["claude"].seen
    assert seen[0].body == {**body, "tools": [], "model": "ok"}, "only model is rewritten"
    assert whole.status_code == 200 and whole.json() == {**MESSAGE_TEXT, "model": "ok"}, "answered verbatim"
    assert seen[0].headers["x-api-key"] == "sk-ant-upstream", "the upstream key, never the client's"
    assert seen[1].headers["anthropic-beta"] == "tools-x" and seen[1].body["stream"] is True
    assert _blocks(message) == [
        ("text", "Okay, let's check."),
        ("tool_use", ("toolu_00", "get_weather", {"location": "Paris"})),
        ("tool_use", ("toolu_01", "get_time", {"location": "Paris"})),
    ]
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 89


async def test_errors_use_anthropics_envelope_and_stream_error_event() -> None:
    with trio.fail_after(15):
        async with open_stack() as (client, fakes):
            with pytest.raises(anthropic.NotFoundError) as unknown:
                await client.messages.create(model="nope", max_tokens=10, messages=ASK)
            with pytest.raises(anthropic.RateLimitError) as limited:
                await client.messages.create(model="claude-limited", max_tokens=10, messages=ASK)
            with pytest.raises(anthropic.APIStatusError) as upstream:
                await client.messages.create(model="openai-broken", max_tokens=10, messages=ASK)
            with pytest.raises(anthropic.APIStatusError) as mid_stream:
                await _stream(client, "gemini-breaks")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{fakes['port']}") as raw:
                missing = await raw.post("/v1/messages", json={"model": "openai", "messages": ASK},
                                         headers={"authorization": "Bearer sk-client"})
                untranslatable = await raw.post("/v1/messages", json={
                    "model": "openai", "max_tokens": 5, "messages": ASK,
                    "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
    assert unknown.value.body == {"type": "error", "error": {"type": "not_found_error", "message": (
        "model 'nope' is not served by this gateway")}, "request_id": unknown.value.response.headers["x-request-id"]}
    assert limited.value.response.headers["retry-after"] == "7"
    assert upstream.value.status_code == 502 and upstream.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert mid_stream.value.body["type"] == "error"  # type: ignore[index]
    assert missing.status_code == 400 and missing.json()["error"] == {
        "type": "invalid_request_error", "message": "max_tokens: field required (a positive integer)"}
    assert untranslatable.status_code == 400 and "web_search" in untranslatable.json()["error"]["message"]


async def test_pass_through_stream_ending_in_an_error_event_counts_as_that_error() -> None:
    """Anthropic's own `error` event reaches the client verbatim, and the call is accounted as the
    failure it was (status and metrics), not as a success."""
    with trio.fail_after(15):
        async with open_stack() as (client, fakes):
            with pytest.raises(anthropic.APIStatusError) as broke:
                await _stream(client, "claude-breaks")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{fakes['port']}") as raw:
                metrics = (await raw.get("/metrics")).text
    assert broke.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert 'sidegate_requests_total{deployment="ant/stream-error",model="claude-breaks",status="503"} 1.0' in metrics
    assert 'status="200"} 1.0' not in metrics.split("claude-breaks")[0][-200:]


async def test_count_tokens_estimates_and_checks_the_model() -> None:
    long = "word " * 400
    with trio.fail_after(15):
        async with open_stack() as (client, _):
            short = await client.messages.count_tokens(model="openai", messages=ASK)
            big = await client.messages.count_tokens(model="claude", messages=[{"role": "user", "content": long}],
                                                     tools=TOOLS)
            with pytest.raises(anthropic.NotFoundError):
                await client.messages.count_tokens(model="nope", messages=ASK)
    assert 0 < short.input_tokens < 20, "an OpenAI-format group: counted locally"
    assert big.input_tokens > 400  # 400 words are ~400 o200k_base tokens, plus the tools


async def test_count_tokens_asks_anthropic_for_an_anthropic_group_and_falls_back() -> None:
    msgs = [{"role": "user", "content": "word " * 40}]
    with trio.fail_after(15):
        async with open_stack() as (client, fakes):
            exact = await client.messages.with_raw_response.count_tokens(model="claude", messages=msgs,  # type: ignore[arg-type]
                                                                         system="Be brief.")
            limited = await client.messages.with_raw_response.count_tokens(model="claude-limited", messages=msgs)  # type: ignore[arg-type]
            local = await client.messages.with_raw_response.count_tokens(model="openai", messages=msgs)  # type: ignore[arg-type]
    sent = [s for s in fakes["claude"].seen if s.path.endswith("/count_tokens")]
    assert sent[0].body == {"model": "ok", "messages": msgs, "system": "Be brief."}
    assert sent[0].headers["x-api-key"] == "sk-ant-upstream"
    assert exact.headers["x-sidegate-token-count"] == "anthropic"
    assert (await exact.parse()).input_tokens == len(json.dumps({"messages": msgs, "system": "Be brief."})) // 3
    assert limited.headers["x-sidegate-token-count"] == "local", "an upstream error falls back to the local count"
    assert local.headers["x-sidegate-token-count"] == "local"
    assert (await limited.parse()).input_tokens == (await local.parse()).input_tokens > 40
