"""Gemini's native API served from an OpenAI-format backend: the official `google-genai` SDK pointed at
sidegate (`http_options={"base_url": ...}`, the virtual key in `x-goog-api-key`), whole answers and
`?alt=sse` streams, text and function calls, usageMetadata, spend rows, Google's error envelope."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from google import genai
from google.genai import errors, types

from sidegate.compiler.pipeline import compile_text
from tests.support.fake_anthropic import MESSAGE_TEXT, FakeAnthropic
from tests.support.fake_base import FakeServer, Seen, open_fake
from tests.support.fake_gemini import GENERATE_TEXT, USAGE, FakeGemini
from tests.support.gateway import open_gateway
from tests.support.spend_logs import spend_rows
from tests.test_provider_auth import FakeTokenEndpoint, _service_account

WEATHER = types.FunctionDeclaration(
    name="get_weather", description="The weather at a place",
    parameters=types.Schema(type=types.Type.OBJECT, properties={"location": types.Schema(type=types.Type.STRING)},
                            required=["location"]))


class OpenAIBackend(FakeServer):
    """An OpenAI-compatible chat upstream (OpenAI's documented shapes): a tool call when tools are
    offered and the last turn is the user's, text otherwise; streams end with the usage chunk."""

    async def answer(self, seen: Seen, send: Any) -> None:
        body = seen.body or {}
        if seen.path != "/v1/chat/completions" or seen.headers.get("authorization") != "Bearer sk-upstream":
            await self.json(send, 401, {"error": {"message": "Incorrect API key", "type": "invalid_request_error",
                                                  "code": "invalid_api_key", "param": None}})
            return
        if body.get("model") == "fail-400":
            await self.json(send, 400, {"error": {"message": "max_tokens is too large", "type": "invalid_request_error",
                                                  "param": "max_tokens", "code": None}})
            return
        messages = body["messages"]
        wants_tool = bool(body.get("tools")) and messages[-1]["role"] == "user"
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        base = {"id": "chatcmpl-1", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            asked = json.dumps(messages[-1])
            reply = "Write to ops@example.com." if "email" in asked else "Sunny in Paris."
            message: dict[str, Any] = {"role": "assistant", "content": reply}
            finish = "stop"
            if wants_tool:
                message = {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                           "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}]}
                finish = "tool_calls"
            await self.json(send, 200, {**base, "object": "chat.completion", "usage": usage,
                                        "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
            return

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        events = [chunk({"role": "assistant", "content": ""})]
        if wants_tool:
            events.append(chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                 "function": {"name": "get_weather", "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
                       for p in ('{"loca', 'tion": "Pa', 'ris"}')]
            events.append(chunk({}, "tool_calls"))
        else:
            events += [chunk({"content": "Sunny "}), chunk({"content": "in Paris."}), chunk({}, "stop")]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        await self.stream(send, raw)


SPEC = """
version: 1
providers:
  oa: {{type: openai-compatible, base_url: "{base}/v1", api_key: "${{PT_OA_KEY}}"}}
  gem: {{type: gemini, base_url: "{gem}", api_key: "${{PT_GEM_KEY}}"}}
  ant: {{type: anthropic, base_url: "{ant}", api_key: "${{PT_ANT_KEY}}"}}
auth:
  master_key: ${{PT_MASTER}}
  keys:
    - {{name: app, key: "${{PT_APP_KEY}}"}}
store: {{database: "sqlite:///{db}"}}
models:
  gemini-2.5-flash:
    targets: [{{provider: oa, model: gpt-4o-mini, price: {{input: 1.0, output: 2.0}}}}]
  broken:
    targets: [{{provider: oa, model: fail-400}}]
  claude:
    targets: [{{provider: ant, model: claude-sonnet-4-5}}]
  native:
    targets: [{{provider: gem, model: ok, price: {{input: 1.0, output: 2.0}}}}]
  gemini-breaks:
    targets: [{{provider: gem, model: stream-error}}]
  guarded:
    guardrails: [words, answers]
    targets: [{{provider: oa, model: gpt-4o-mini}}]
guardrails:
  words: {{kind: keywords, words: [project falcon]}}
  answers: {{kind: pii, mode: post_call, action: mask, entities: [email]}}
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PT_OA_KEY", "sk-upstream")
    monkeypatch.setenv("PT_GEM_KEY", "AIza-upstream")
    monkeypatch.setenv("PT_ANT_KEY", "sk-ant-upstream")
    monkeypatch.setenv("PT_MASTER", "sk-master")
    monkeypatch.setenv("PT_APP_KEY", "sk-app")


@asynccontextmanager
async def stack(tmp_path: Path) -> AsyncIterator[tuple[str, OpenAIBackend]]:
    async with open_fake(OpenAIBackend()) as backend, open_fake(FakeGemini()) as gem, \
            open_fake(FakeAnthropic()) as ant:
        spec = SPEC.format(base=backend.root, gem=gem.base_url, ant=ant.base_url, db=tmp_path / "spend.db")
        result = compile_text(spec, "spec.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        async with open_gateway(result.plan) as gw:
            GEMINI.append(gem)
            ANTHROPIC.append(ant)
            yield f"http://127.0.0.1:{gw.port}", backend


GEMINI: list[FakeGemini] = []
"""The fake Gemini backend of the last stack."""
ANTHROPIC: list[FakeAnthropic] = []


def _client(url: str, key: str = "sk-app") -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=url, timeout=10_000))


async def _spend(url: str, count: int) -> list[dict[str, Any]]:
    """The spend rows once `count` are written (the writer batches off the hot path)."""
    return await spend_rows(url, "sk-master", lambda rows: len(rows) >= count)


async def test_generate_content_text_and_function_call(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with stack(tmp_path) as (url, backend):
            client = _client(url)
            text = await trio.to_thread.run_sync(partial(
                client.models.generate_content, model="gemini-2.5-flash", contents="Weather in Paris?",
                config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=64,
                                                   temperature=0.2, stop_sequences=["END"])))
            tools = types.GenerateContentConfig(
                tools=[types.Tool(function_declarations=[WEATHER])],
                automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
            called = await trio.to_thread.run_sync(partial(
                client.models.generate_content, model="gemini-2.5-flash", contents="Weather in Paris?", config=tools))
            history = [
                types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
                types.Content(role="model", parts=[types.Part(function_call=called.function_calls[0])]),
                types.Content(role="user", parts=[types.Part.from_function_response(
                    name="get_weather", response={"forecast": "sunny"})]),
            ]
            answered = await trio.to_thread.run_sync(partial(
                client.models.generate_content, model="gemini-2.5-flash", contents=history, config=tools))
            rows = await _spend(url, 3)
    assert text.text == "Sunny in Paris."
    assert text.candidates[0].finish_reason == types.FinishReason.STOP
    assert (text.usage_metadata.prompt_token_count, text.usage_metadata.candidates_token_count,
            text.usage_metadata.total_token_count) == (11, 7, 18)
    first = backend.seen[0]
    assert first.headers["authorization"] == "Bearer sk-upstream", "the gateway's key, never the client's"
    assert "sk-app" not in json.dumps(first.headers)
    assert first.body["model"] == "gpt-4o-mini" and first.body["max_tokens"] == 64
    assert first.body["temperature"] == 0.2 and first.body["stop"] == ["END"]
    assert first.body["messages"] == [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}]
    call = called.function_calls[0]
    assert (call.name, call.args) == ("get_weather", {"location": "Paris"})
    offered = backend.seen[1].body["tools"][0]["function"]
    assert offered["name"] == "get_weather"
    assert offered["parameters"]["type"] == "object"
    assert offered["parameters"]["properties"]["location"]["type"] == "string"
    replay = backend.seen[2].body["messages"]
    assert replay[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"location":"Paris"}'}
    assert replay[2] == {"role": "tool", "tool_call_id": replay[1]["tool_calls"][0]["id"],
                         "content": '{"forecast":"sunny"}'}
    assert answered.text == "Sunny in Paris."
    assert all(r["model"] == "gemini-2.5-flash" and r["prompt_tokens"] == 11 and r["completion_tokens"] == 7
               for r in rows)
    assert rows[0]["cost"] == pytest.approx(11e-6 + 14e-6)


async def test_stream_generate_content_text_and_function_call(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with stack(tmp_path) as (url, backend):
            client = _client(url)

            def stream(**kw: Any) -> list[types.GenerateContentResponse]:
                return list(client.models.generate_content_stream(model="gemini-2.5-flash",
                                                                  contents="Weather in Paris?", **kw))

            chunks = await trio.to_thread.run_sync(stream)
            tools = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])])
            tool_chunks = await trio.to_thread.run_sync(partial(stream, config=tools))
            rows = await _spend(url, 2)
    assert "".join(c.text or "" for c in chunks) == "Sunny in Paris."
    assert len(chunks) >= 3, "text is relayed as it arrives"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count == 18
    assert backend.seen[0].query == "" and backend.seen[0].body["stream"] is True
    calls = [fc for c in tool_chunks for fc in (c.function_calls or [])]
    assert [(fc.name, fc.args) for fc in calls] == [("get_weather", {"location": "Paris"})]
    assert all(r["prompt_tokens"] == 11 and r["completion_tokens"] == 7 for r in rows)


async def test_errors_are_in_googles_envelope(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with stack(tmp_path) as (url, _):
            client, wrong = _client(url), _client(url, "sk-wrong")
            with pytest.raises(errors.ClientError) as bad_key:
                await trio.to_thread.run_sync(partial(
                    wrong.models.generate_content, model="gemini-2.5-flash", contents="hi"))
            with pytest.raises(errors.ClientError) as unknown:
                await trio.to_thread.run_sync(partial(client.models.generate_content, model="nope", contents="hi"))
            with pytest.raises(errors.ClientError) as upstream:
                await trio.to_thread.run_sync(partial(client.models.generate_content, model="broken", contents="hi"))
            async with httpx.AsyncClient(base_url=url, headers={"x-goog-api-key": "sk-app"}) as c:
                path = "/v1beta/models/gemini-2.5-flash"
                no_sse = await c.post(f"{path}:streamGenerateContent", json={"contents": [{"parts": [{"text": "x"}]}]})
                empty = await c.post(f"{path}:generateContent", json={"contents": []})
                builtin = await c.post(f"{path}:generateContent", json={
                    "contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]})
                cached = await c.post(f"{path}:generateContent", json={
                    "contents": [{"parts": [{"text": "x"}]}], "cachedContent": "cachedContents/1"})
                by_query = await c.post(f"{path}:generateContent?key=sk-app", headers={"x-goog-api-key": ""},
                                        json={"contents": [{"parts": [{"text": "x"}]}],
                                              "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT",
                                                                  "threshold": "BLOCK_NONE"}]})
                method = await c.post(f"{path}:countTokens", json={"contents": []})
    assert (bad_key.value.code, bad_key.value.status) == (401, "UNAUTHENTICATED")
    assert (unknown.value.code, unknown.value.status) == (404, "NOT_FOUND")
    assert upstream.value.code == 400 and "max_tokens" in (upstream.value.message or "")
    for response in (no_sse, empty, builtin, cached):
        assert response.status_code == 400 and response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "alt=sse" in no_sse.json()["error"]["message"]
    assert "googleSearch" in builtin.json()["error"]["message"]
    assert by_query.status_code == 200 and by_query.headers["x-sidegate-dropped"] == "safetySettings"
    assert method.status_code == 404 and method.json()["error"]["status"] == "NOT_FOUND"


async def test_guardrails_check_gemini_requests_and_answers(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with stack(tmp_path) as (url, backend):
            client = _client(url)
            masked = await trio.to_thread.run_sync(partial(
                client.models.generate_content, model="guarded", contents="Which email do I use?"))
            with pytest.raises(errors.ClientError) as blocked:
                await trio.to_thread.run_sync(partial(
                    client.models.generate_content, model="guarded", contents="Tell me about project falcon"))
    assert masked.text == "Write to [EMAIL]."
    assert (blocked.value.code, blocked.value.status) == (400, "INVALID_ARGUMENT")
    assert len(backend.seen) == 1, "a blocked request never reaches the backend"


async def test_a_gemini_target_gets_the_clients_own_body(tmp_path: Path) -> None:
    safety = [types.SafetySetting(category=types.HarmCategory.HARM_CATEGORY_HARASSMENT,
                                  threshold=types.HarmBlockThreshold.BLOCK_NONE)]
    config = types.GenerateContentConfig(safety_settings=safety, max_output_tokens=50)
    with trio.fail_after(15):
        async with stack(tmp_path) as (url, _):
            client = _client(url)
            whole = await trio.to_thread.run_sync(partial(
                client.models.generate_content, model="native", contents="hi", config=config))
            chunks = await trio.to_thread.run_sync(lambda: list(client.models.generate_content_stream(
                model="native", contents="hi", config=config)))
            with pytest.raises(errors.APIError) as broke:
                await trio.to_thread.run_sync(lambda: list(client.models.generate_content_stream(
                    model="gemini-breaks", contents="hi")))
            async with httpx.AsyncClient(base_url=url, headers={"x-goog-api-key": "sk-app"}) as c:
                only_gemini = {"contents": [{"parts": [{"text": "news?"}]}], "tools": [{"googleSearch": {}}],
                               "cachedContent": "cachedContents/abc"}
                grounded = await c.post("/v1beta/models/native:generateContent", json=only_gemini)
                translated = await c.post("/v1beta/models/gemini-2.5-flash:generateContent", json=only_gemini)
            rows = await _spend(url, 4)
    gem = GEMINI[-1]
    assert grounded.status_code == 200, "only Gemini serves `native`: what cannot be translated goes as it is"
    assert gem.seen[-1].body == only_gemini
    assert translated.status_code == 400 and "cachedContent" in translated.json()["error"]["message"]
    sent = gem.seen[0]
    assert sent.path == "/v1beta/models/ok:generateContent" and sent.headers["x-goog-api-key"] == "AIza-upstream"
    assert sent.body["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    assert sent.body["contents"] == [{"parts": [{"text": "hi"}], "role": "user"}]
    assert sent.body["generationConfig"] == {"maxOutputTokens": 50}
    assert gem.seen[1].path.endswith(":streamGenerateContent") and gem.seen[1].query == "alt=sse"
    assert whole.text == GENERATE_TEXT["candidates"][0]["content"]["parts"][0]["text"]
    assert whole.usage_metadata.thoughts_token_count == USAGE["thoughtsTokenCount"], "relayed as Gemini sent it"
    assert "".join(c.text or "" for c in chunks) == "Hi there!"
    assert "stream broke" in (broke.value.message or "")
    natives = [r for r in rows if r["model"] == "native" and r["status"] == 200]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in natives] == [(12, 5 + 4)] * 3


async def test_an_anthropic_backend_serves_gemini_clients(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with stack(tmp_path) as (url, _):
            client = _client(url)
            whole = await trio.to_thread.run_sync(partial(
                client.models.generate_content, model="claude", contents="hi",
                config=types.GenerateContentConfig(max_output_tokens=64)))
            tools = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])])
            chunks = await trio.to_thread.run_sync(lambda: list(client.models.generate_content_stream(
                model="claude", contents="Weather in Paris?", config=tools)))
    sent = ANTHROPIC[-1].seen[0]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == "sk-ant-upstream"
    assert sent.body["max_tokens"] == 64 and sent.body["messages"][0]["role"] == "user"
    assert whole.text == MESSAGE_TEXT["content"][0]["text"]
    assert whole.usage_metadata.candidates_token_count == MESSAGE_TEXT["usage"]["output_tokens"]
    calls = [fc for c in chunks for fc in (c.function_calls or [])]
    assert [(fc.name, fc.args) for fc in calls] == [("get_weather", {"location": "Paris"})]
    assert chunks[-1].usage_metadata.total_token_count > 0


async def test_a_vertex_target_gets_the_clients_own_body_with_its_token(tmp_path: Path) -> None:
    async with open_fake(FakeTokenEndpoint()) as tokens, open_fake(FakeGemini()) as vertex:
        key = tmp_path / "sa.json"
        key.write_text(json.dumps(_service_account(f"{tokens.root}/token")))
        spec = f"""
version: 1
providers:
  vx: {{type: vertex, project: proj, region: us-central1, credentials: {{file: "{key}"}},
        base_url: "{vertex.vertex_base_url()}"}}
models:
  gemini-pro: {{targets: [{{provider: vx, model: gemini-2.5-pro}}]}}
"""
        result = compile_text(spec, "spec.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        with trio.fail_after(15):
            async with open_gateway(result.plan) as gw:
                client = _client(f"http://127.0.0.1:{gw.port}", "unused")
                whole = await trio.to_thread.run_sync(partial(
                    client.models.generate_content, model="gemini-pro", contents="hi"))
                chunks = await trio.to_thread.run_sync(lambda: list(client.models.generate_content_stream(
                    model="gemini-pro", contents="hi")))
    first, second = vertex.seen
    assert first.path == "/v1/projects/proj/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent"
    assert second.path.endswith(":streamGenerateContent") and second.query == "alt=sse"
    assert first.headers["authorization"] == "Bearer ya29.fake" and "x-goog-api-key" not in first.headers
    assert first.body == {"contents": [{"parts": [{"text": "hi"}], "role": "user"}]}
    assert whole.text == "Hi there!" and "".join(c.text or "" for c in chunks) == "Hi there!"
