"""Gemini / Vertex adapter: OpenAI chat and embeddings -> generateContent, batchEmbedContents and
predict; documented answers, `?alt=sse` chunks and error envelopes -> OpenAI's shape. Wire examples:
see tests/support/fake_gemini.py for the doc URLs."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import pytest

from sidegate.runtime.errors import BadRequest, RateLimited, UpstreamError
from sidegate.runtime.upstream.providers.gemini import THOUGHT_SEPARATOR, GeminiAdapter, vertex_base_url
from tests.support.fake_base import assemble, feed_split, native_provider, sse
from tests.support.fake_gemini import GENERATE_TEXT, GENERATE_TOOLS, STREAM_TEXT, error_body
from tests.support.plans import target

BASE = "https://generativelanguage.googleapis.com/v1beta"
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "additionalProperties": False}}}


def translate(body: dict[str, Any], op: str = "chat", adapter: GeminiAdapter | None = None,
              **target_kw: Any) -> tuple[Any, Any]:
    adapter = adapter or GeminiAdapter()
    url = adapter.url(BASE, "gemini-2.5-flash", op)
    req = adapter.request(native_provider(), target("gemini", "g", **target_kw), url,
                          (("x-goog-api-key", "AIza"),), op, "gemini-2.5-flash", {"model": "public", **body})
    return req, json.loads(req.body)


def test_urls_for_ai_studio_vertex_and_streams() -> None:
    assert GeminiAdapter().url(BASE, "gemini-2.5-flash", "chat") == f"{BASE}/models/gemini-2.5-flash:generateContent"
    assert GeminiAdapter().url(BASE, "text-embedding-004", "embeddings").endswith(":batchEmbedContents")
    vertex = vertex_base_url("my-proj", "europe-west4")
    assert vertex == "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-proj/locations/europe-west4/publishers/google"
    assert vertex_base_url("p", "global").startswith("https://aiplatform.googleapis.com/v1/projects/p/locations/global/")
    assert GeminiAdapter(vertex=True).url(vertex, "gemini-embedding-001", "embeddings").endswith(":predict")
    req, _ = translate({"messages": [{"role": "user", "content": "x"}], "stream": True})
    assert req.url == f"{BASE}/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert ("x-goog-api-key", "AIza") in req.headers


def test_request_contents_system_tools_config_and_generation() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Look"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                                         {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_1{THOUGHT_SEPARATOR}c2ln", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": f"call_1{THOUGHT_SEPARATOR}c2ln", "content": '{"temp": 18}'},
            {"role": "tool", "tool_call_id": "unknown", "name": "other", "content": "plain text"},
        ],
        "tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "stop": ["X"], "seed": 3,
        "presence_penalty": 0.1, "frequency_penalty": 0.2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}},
    }
    _, payload = translate(body)
    assert payload["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    contents = payload["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[0]["parts"] == [{"text": "Look"}, {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
                                    {"fileData": {"fileUri": "https://x.test/a.jpg", "mimeType": "image/jpeg"}}]
    assert contents[1]["parts"] == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                     "thoughtSignature": "c2ln"}]
    assert contents[2]["parts"] == [{"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
                                    {"functionResponse": {"name": "other", "response": {"result": "plain text"}}}]
    assert payload["tools"] == [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                                                           "parametersJsonSchema": TOOL["function"]["parameters"]}]}]
    assert payload["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    assert payload["generationConfig"] == {
        "maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9, "seed": 3, "presencePenalty": 0.1,
        "frequencyPenalty": 0.2, "stopSequences": ["X"], "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"}}


def test_json_object_and_max_output_tokens_from_context_table() -> None:
    _, payload = translate({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"},
                            "tool_choice": "none", "tools": [TOOL]}, max_output_tokens=2048)
    assert payload["generationConfig"] == {"responseMimeType": "application/json", "maxOutputTokens": 2048}
    assert payload["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}


def test_unsupported_parameter_names_it() -> None:
    with pytest.raises(BadRequest) as info:
        translate({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 2}})
    assert info.value.param == "logit_bias"
    _, payload = translate({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 2}},
                           adapter=GeminiAdapter(drop_unsupported=True))
    assert "logit_bias" not in json.dumps(payload)


def test_documented_text_answer_with_cached_and_thought_tokens() -> None:
    body, usage = GeminiAdapter(clock=lambda: 5).response("chat", json.dumps(GENERATE_TEXT).encode())
    obj = json.loads(body)
    assert obj["choices"][0]["message"]["content"] == "Hi there!" and obj["choices"][0]["finish_reason"] == "stop"
    assert obj["model"] == "gemini-2.5-flash" and obj["id"] == "mAitaLmkHPPlz7IPvtfUqQ4"
    assert usage is not None and (usage.prompt, usage.completion, usage.cached, usage.reasoning) == (12, 9, 4, 4)


def test_documented_parallel_function_calls_keep_thought_signature_in_id() -> None:
    obj = json.loads(GeminiAdapter().response("chat", json.dumps(GENERATE_TOOLS).encode())[0])
    choice = obj["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["power_disco_ball", "start_music"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"power": True}, {"energetic": True, "loud": True}]
    assert calls[0]["id"].endswith(f"{THOUGHT_SEPARATOR}c2lnLTE=") and THOUGHT_SEPARATOR not in calls[1]["id"]
    assert calls[0]["id"] != calls[1]["id"]


def test_blocked_prompt_is_content_policy_violation_and_safety_finish_is_content_filter() -> None:
    with pytest.raises(BadRequest) as info:
        GeminiAdapter().response("chat", json.dumps({"promptFeedback": {"blockReason": "SAFETY"}}).encode())
    assert info.value.code == "content_policy_violation"
    safety = {**GENERATE_TEXT, "candidates": [{**GENERATE_TEXT["candidates"][0], "finishReason": "SAFETY"}]}
    obj = json.loads(GeminiAdapter().response("chat", json.dumps(safety).encode())[0])
    assert obj["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize("step", [1, 5, 64])
def test_sse_text_stream_with_crlf_separators(step: int) -> None:
    translator = GeminiAdapter().stream("chat", keep_usage=True)
    got = assemble(feed_split(translator, sse([(None, c) for c in STREAM_TEXT], sep="\r\n\r\n"), step))
    assert got.role_first and got.text == "Hi there!" and got.finish == "stop" and got.done and translator.done
    assert got.usage is not None and got.usage["prompt_tokens"] == 12 and got.usage["completion_tokens"] == 9


def test_stream_function_calls_become_tool_call_deltas() -> None:
    translator = GeminiAdapter().stream("chat", keep_usage=False)
    got = assemble(feed_split(translator, sse([(None, GENERATE_TOOLS)], sep="\r\n\r\n"), 17))
    assert [got.calls[i]["name"] for i in (0, 1)] == ["power_disco_ball", "start_music"]
    assert json.loads(got.calls[1]["arguments"]) == {"energetic": True, "loud": True}
    assert got.finish == "tool_calls" and got.usage is None and translator.usage is not None


def test_stream_error_object_raises() -> None:
    raw = sse([(None, STREAM_TEXT[0]), (None, error_body(500, "INTERNAL", "stream broke", []))], sep="\r\n\r\n")
    with pytest.raises(UpstreamError):
        feed_split(GeminiAdapter().stream("chat", keep_usage=False), raw, 3)


def test_embeddings_ai_studio_and_vertex_base64_when_asked() -> None:
    _, payload = translate({"input": ["a", "b"], "dimensions": 8}, op="embeddings")
    assert payload == {"requests": [
        {"model": "models/gemini-2.5-flash", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
        {"model": "models/gemini-2.5-flash", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8}]}
    answer = json.dumps({"embeddings": [{"values": [0.5, -0.25]}, {"values": [1.0, 2.0]}]}).encode()
    obj = json.loads(GeminiAdapter().response("embeddings", answer, model="m")[0])
    assert [d["embedding"] for d in obj["data"]] == [[0.5, -0.25], [1.0, 2.0]]
    vertex = GeminiAdapter(vertex=True)
    _, payload = translate({"input": "a"}, op="embeddings", adapter=vertex)
    assert payload == {"instances": [{"content": "a"}]}
    answer = json.dumps({"predictions": [{"embeddings": {"values": [0.5, -0.25], "statistics": {"token_count": 3}}}]})
    body, usage = vertex.response("embeddings", answer.encode(), model="m", request={"encoding_format": "base64"})
    encoded = json.loads(body)["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (0.5, -0.25) and usage is not None and usage.prompt == 3


def _err(status: int, kind: str, message: str, details: list[dict[str, Any]] | None = None) -> Any:
    return GeminiAdapter().error(status, httpx.Headers({}), json.dumps(error_body(status, kind, message, details or [])).encode())


def test_error_mapping() -> None:
    rate = _err(429, "RESOURCE_EXHAUSTED", "quota", [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                                      "retryDelay": "37s"}])
    assert isinstance(rate, RateLimited) and rate.retry_after == 37.0
    bad_key = _err(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                   [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}])
    assert bad_key.code == "upstream_auth_error"
    assert _err(403, "PERMISSION_DENIED", "denied").code == "upstream_auth_error"
    context = _err(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).")
    assert isinstance(context, BadRequest) and context.code == "context_length_exceeded"
    assert isinstance(_err(500, "INTERNAL", "oops"), UpstreamError)
    assert _err(503, "UNAVAILABLE", "The model is overloaded.").status == 502


def test_vertex_claude_urls_body_and_both_error_envelopes() -> None:
    from sidegate.runtime.errors import RateLimited, UpstreamError
    from sidegate.runtime.upstream.providers.vertex import VertexAdapter

    adapter = VertexAdapter()
    base = "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/google"
    url = adapter.url(base, "claude-sonnet-4-5@20250929", "chat")
    assert url == ("https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/anthropic"
                   "/models/claude-sonnet-4-5@20250929:rawPredict")
    assert adapter.url(base, "gemini-2.5-pro", "chat").endswith("/publishers/google/models/gemini-2.5-pro:generateContent")
    req = adapter.request(native_provider(), target("vertex", "v"), url, (), "chat", "claude-sonnet-4-5@20250929",
                          {"model": "public", "stream": True, "messages": [{"role": "user", "content": "Hi"}]})
    body = json.loads(req.body)
    assert req.url.endswith(":streamRawPredict") and body["anthropic_version"] == "vertex-2023-10-16"
    assert "model" not in body and body["stream"] is True
    anthropic_err = adapter.error(429, httpx.Headers({"retry-after": "3"}), json.dumps(
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}).encode())
    assert isinstance(anthropic_err, RateLimited) and anthropic_err.retry_after == 3
    google_err = adapter.error(403, httpx.Headers(), json.dumps(
        {"error": {"code": 403, "message": "Permission denied on resource project p.", "status": "PERMISSION_DENIED"}}
    ).encode())
    assert isinstance(google_err, UpstreamError) and "Permission denied" in google_err.message
