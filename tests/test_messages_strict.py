"""The anthropic SDK through `/v1/messages` to upstreams that refuse what the real APIs refuse (the
strict fake OpenAI and Gemini): `thinking`, `output_config.effort`, `top_k`, `context_management`,
64k `max_tokens`, mid-conversation system turns, images and tool use work, or fail only as the
rules table says (400 naming the field). Also the Anthropic surface: `request-id` (the SDK's
`_request_id`), models in Anthropic's shape, real input tokens in `message_start`, glob groups."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest
import trio
from anthropic.types import ModelInfo

from tests.support.strict_stack import Stack, open_strict_stack

BASH = {"name": "Bash", "description": "Run a shell command", "input_schema": {
    "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
    "properties": {"command": {"type": "string"}}, "required": ["command"]}}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

# Everything Claude Code and the SDK's extras put in a request that OpenAI and Gemini do not take.
HINTS: dict[str, Any] = dict(
    max_tokens=64000,
    thinking={"type": "enabled", "budget_tokens": 10000},
    output_config={"effort": "high"},
    speed="fast",
    extra_body={"context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
                "top_k": 40, "temperature": 1},
    metadata={"user_id": "user_" + "f" * 64 + "_account__session_1"},
    system=[{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}],
)


def _client(stack: Stack) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=stack.url, api_key="sk-client", max_retries=0, timeout=20)


def _conversation(tool_id: str) -> list[Any]:
    return [
        {"role": "user", "content": [{"type": "text", "text": "Run it: [[call Bash {\"command\": \"ls\"}]]",
                                      "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "I should run ls.", "signature": "c2ln"},
                                          {"type": "tool_use", "id": tool_id, "name": "Bash",
                                           "input": {"command": "ls"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "README.md"}]},
    ]


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-5", "o3", "gemini-2.5-flash", "gemini-exp-1114"])
async def test_a_claude_code_shaped_tool_turn_on_strict_backends(monkeypatch: pytest.MonkeyPatch, model: str) -> None:
    with trio.fail_after(30):
        async with open_strict_stack(monkeypatch) as stack:
            client = _client(stack)
            ask = [{"role": "user", "content": "Run it: [[call Bash {\"command\": \"ls\"}]]"},
                   {"role": "system", "content": "Plan mode is off."}]  # a mid-conversation system turn
            async with client.messages.stream(model=model, messages=ask, tools=[BASH], **HINTS) as stream:
                first = await stream.get_final_message()
                assert stream.response.headers["request-id"]
            call = next(b for b in first.content if b.type == "tool_use")
            assert (call.name, call.input, first.stop_reason) == ("Bash", {"command": "ls"}, "tool_use")
            answer = await client.messages.create(model=model, messages=_conversation(call.id), tools=[BASH],
                                                  **HINTS)
            assert [b.text for b in answer.content if b.type == "text"] == ["Tool said: README.md"]
            assert answer._request_id
    assert stack.openai.refused == [] and stack.gemini.refused == []
    sent = (stack.openai.seen or stack.gemini.seen)[-1].body
    if model.startswith("gpt") or model == "o3":
        assert "top_k" not in sent and "context_management" not in sent and "user" not in sent
        key = "max_completion_tokens" if model != "gpt-4o" else "max_tokens"
        assert sent[key] == (16384 if model == "gpt-4o" else 64000)
        assert ("reasoning_effort" in sent) is (model != "gpt-4o")
    else:
        config = sent["generationConfig"]
        assert config["topK"] == 40 and config["maxOutputTokens"] == (64000 if "2.5" in model else 8192)
        assert ("thinkingConfig" in config) is ("2.5" in model)


async def test_images_and_what_cannot_be_served(monkeypatch: pytest.MonkeyPatch) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    ask = [{"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]}]
    with trio.fail_after(30):
        async with open_strict_stack(monkeypatch) as stack:
            client = _client(stack)
            for model in ("gpt-4o", "gemini-2.5-flash"):
                answer = await client.messages.create(model=model, max_tokens=100, messages=ask)
                assert answer.content[0].type == "text"
            with pytest.raises(anthropic.BadRequestError) as info:
                await client.messages.create(model="gpt-3.5-turbo", max_tokens=100, messages=ask)
            assert "image" in info.value.message and "gpt-3.5-turbo" in info.value.message
            assert info.value.request_id
            with pytest.raises(anthropic.BadRequestError) as info:
                await client.messages.create(model="o3", max_tokens=100, stop_sequences=["END"],
                                             messages=[{"role": "user", "content": "hi"}])
            assert "stop_sequences" in info.value.message
            with pytest.raises(anthropic.BadRequestError) as info:
                await client.messages.create(model="gpt-4o", max_tokens=100, messages=ask,
                                             tools=[{"type": "web_search_20250305", "name": "web_search"}])
            assert "web_search" in info.value.message
    assert stack.openai.refused == [] and stack.gemini.refused == []
    assert stack.openai.seen[0].body["messages"][0]["content"][0]["type"] == "image_url"


async def test_request_id_dropped_fields_and_input_tokens_in_message_start(monkeypatch: pytest.MonkeyPatch) -> None:
    long_prompt = "Summarise the history of the printing press in three sentences. " * 40
    with trio.fail_after(30):
        async with open_strict_stack(monkeypatch) as stack, httpx.AsyncClient(base_url=stack.url) as http:
            raw = await _client(stack).messages.with_raw_response.create(
                model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
                extra_body={"context_management": {"edits": []}})
            assert raw.headers["request-id"] == raw.headers["x-request-id"]
            assert raw.headers["x-sidegate-dropped"] == "context_management"
            client = _client(stack)
            async with client.messages.stream(model="gpt-4o", max_tokens=50,
                                              messages=[{"role": "user", "content": long_prompt}]) as stream:
                events = [event async for event in stream]
            start = events[0]
            assert start.type == "message_start"
            assert 500 < start.message.usage.input_tokens < 800  # ~640 tokens of prompt, counted locally
            final = await stream.get_final_message()
            assert final.usage.input_tokens == 31  # corrected by the upstream's count in message_delta
            missing = await http.post("/v1/messages", json={"model": "nope", "max_tokens": 5, "messages": []},
                                      headers={"anthropic-version": "2023-06-01"})
            assert missing.status_code == 400 and missing.headers["request-id"]
            assert missing.json()["request_id"] == missing.headers["request-id"]


async def test_models_list_in_anthropic_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(30):
        async with open_strict_stack(monkeypatch) as stack, httpx.AsyncClient(base_url=stack.url) as http:
            page = await _client(stack).models.list()
            ids = [m.id for m in page.data]
            assert "gpt-4o" in ids and "claude-*" not in ids and all(isinstance(m, ModelInfo) for m in page.data)
            raw = (await http.get("/v1/models", headers={"anthropic-version": "2023-06-01"})).json()
            infos = [ModelInfo.model_validate(m) for m in raw["data"]]  # strict: every required field, right types
            assert raw["has_more"] is False and raw["first_id"] == infos[0].id and raw["last_id"] == infos[-1].id
            gpt4o = next(m for m in infos if m.id == "gpt-4o")
            assert (gpt4o.max_input_tokens, gpt4o.max_tokens) == (128000, 16384)
            one = await _client(stack).models.retrieve("claude-opus-4-1-20250805")  # a glob serves it
            assert one.id == "claude-opus-4-1-20250805" and one.type == "model"
            openai_shape = (await http.get("/v1/models")).json()
            assert openai_shape["object"] == "list" and openai_shape["data"][0]["object"] == "model"
            with pytest.raises(anthropic.NotFoundError):
                await _client(stack).models.retrieve("gpt-9")


async def test_a_glob_group_serves_every_claude_id(monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(30):
        async with open_strict_stack(monkeypatch, claude_target=("ant", "*")) as stack:
            client = _client(stack)
            for model in ("claude-sonnet-4-5-20250929", "claude-3-5-haiku-20241022"):
                answer = await client.messages.create(model=model, max_tokens=20,
                                                      messages=[{"role": "user", "content": "hi"}])
                assert answer.content[0].type == "text"
            assert [s.body["model"] for s in stack.anthropic.seen] == ["claude-sonnet-4-5-20250929",
                                                                       "claude-3-5-haiku-20241022"]
            with pytest.raises(anthropic.NotFoundError):
                await client.messages.create(model="gpt-9", max_tokens=20, messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("change", [
    {"messages": [{"role": "system", "content": 5}]},
    {"messages": [{"role": "tool", "content": "x"}]},
    {"messages": ["not an object"]},
    {"tools": ["Bash"]},
    {"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "file", "file_id": "f"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": {"a": 1}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image", "source": None}]}]},
    {"stop_sequences": "END"},
    {"thinking": "yes", "output_config": "high", "tool_choice": "any", "system": 7},
])
async def test_malformed_messages_get_anthropic_400s_never_500s(monkeypatch: pytest.MonkeyPatch,
                                                                  change: dict[str, Any]) -> None:
    body = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **change}
    with trio.fail_after(30):
        async with open_strict_stack(monkeypatch) as stack, httpx.AsyncClient(base_url=stack.url) as http:
            answer = await http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    error = answer.json()
    assert answer.status_code == 400 and error["type"] == "error", answer.text
    assert error["error"]["type"] == "invalid_request_error" and error["request_id"] == answer.headers["request-id"]
    assert stack.openai.refused == []


async def test_dropped_field_names_cannot_inject_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = {"x\r\nset-cookie: a=b": 1, "é": 2, **{f"hint_{i}": i for i in range(20)}}
    body = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **hostile}
    with trio.fail_after(30):
        async with open_strict_stack(monkeypatch) as stack, httpx.AsyncClient(base_url=stack.url) as http:
            answer = await http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert answer.status_code == 200 and "set-cookie" not in answer.headers
    assert answer.headers["x-sidegate-dropped"] == ",".join(f"hint_{i}" for i in range(16)) + ",+6 more"


async def test_count_tokens_on_a_glob_group_asks_anthropic_for_the_requested_id(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(30):
        async with open_strict_stack(monkeypatch, claude_target=("ant", "*")) as stack:
            raw = await _client(stack).messages.with_raw_response.count_tokens(
                model="claude-opus-4-8", messages=[{"role": "user", "content": "hi"}])
            counted = await raw.parse()
    assert counted.input_tokens == 42 and raw.headers["x-sidegate-token-count"] == "anthropic"
    assert raw.headers["request-id"] and stack.anthropic.seen[-1].body["model"] == "claude-opus-4-8"
    assert stack.anthropic.seen[-1].path == "/v1/messages/count_tokens"
