"""Bedrock adapter: OpenAI chat -> Converse; documented answers, ConverseStream binary frames (built
with the encoder in tests/support/fake_bedrock.py and split at odd byte boundaries), exception frames
and error answers -> OpenAI's shape."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from sidegate.runtime.errors import BadRequest, RateLimited, UpstreamError
from sidegate.runtime.upstream.providers.bedrock import BedrockAdapter, bedrock_base_url
from tests.support.fake_base import assemble, feed_split, native_provider
from tests.support.fake_bedrock import CONVERSE_TEXT, CONVERSE_TOOL, event_frame, exception_frame, stream_events
from tests.support.plans import target

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TOOL = {"type": "function", "function": {"name": "top_song", "description": "Most popular song",
                                         "parameters": {"type": "object", "properties": {"sign": {"type": "string"}}}}}


def translate(body: dict[str, Any], adapter: BedrockAdapter | None = None, **target_kw: Any) -> tuple[Any, Any]:
    url = BedrockAdapter.url(bedrock_base_url("us-east-1"), MODEL, "chat")
    req = (adapter or BedrockAdapter()).request(native_provider(), target("bedrock", "b", **target_kw), url,
                                                (("content-type", "application/json"),), "chat", MODEL,
                                                {"model": "public", **body})
    return req, json.loads(req.body)


def test_url_encodes_model_id_and_stream_path() -> None:
    req, _ = translate({"messages": [{"role": "user", "content": "x"}]})
    assert req.url == "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    req, _ = translate({"messages": [{"role": "user", "content": "x"}], "stream": True})
    assert req.url.endswith("%3A0/converse-stream")


def test_converse_body() -> None:
    body = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [{"type": "text", "text": "Top song?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
            {"role": "assistant", "content": "Looking.", "tool_calls": [
                {"id": "tooluse_1", "type": "function", "function": {"name": "top_song", "arguments": '{"sign": "WZPZ"}'}}]},
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "Elemental Hotel"},
        ],
        "tools": [TOOL], "tool_choice": "required", "max_tokens": 512, "temperature": 0.5, "top_p": 0.9,
        "top_k": 40, "stop": ["END"],
        "response_format": {"type": "json_schema", "json_schema": {"name": "song", "schema": {"type": "object"}}},
    }
    _, payload = translate(body)
    assert payload["system"] == [{"text": "Be brief."}, {"cachePoint": {"type": "default"}}]
    assert payload["messages"] == [
        {"role": "user", "content": [{"text": "Top song?"},
                                     {"image": {"format": "png", "source": {"bytes": "iVBOR"}}}]},
        {"role": "assistant", "content": [{"text": "Looking."}, {"toolUse": {
            "toolUseId": "tooluse_1", "name": "top_song", "input": {"sign": "WZPZ"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1",
                                                     "content": [{"text": "Elemental Hotel"}]}}]},
    ]
    assert payload["inferenceConfig"] == {"maxTokens": 512, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]}
    assert payload["additionalModelRequestFields"] == {"top_k": 40}
    assert payload["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "top_song", "description": "Most popular song", "inputSchema": {"json": TOOL["function"]["parameters"]}}}],
        "toolChoice": {"any": {}}}
    assert payload["outputConfig"] == {"textFormat": {"type": "json_schema", "structure": {
        "jsonSchema": {"schema": '{"type":"object"}', "name": "song"}}}}


def test_named_tool_choice_context_max_tokens_and_s3_images() -> None:
    content = [{"type": "image_url", "image_url": {"url": "s3://bucket/cat.jpeg"}}]
    _, payload = translate({"messages": [{"role": "user", "content": content}], "tools": [TOOL],
                            "tool_choice": {"type": "function", "function": {"name": "top_song"}}},
                           max_output_tokens=1000)
    assert payload["toolConfig"]["toolChoice"] == {"tool": {"name": "top_song"}}
    assert payload["inferenceConfig"] == {"maxTokens": 1000}
    assert payload["messages"][0]["content"] == [{"image": {"format": "jpeg", "source": {"s3Location": {
        "uri": "s3://bucket/cat.jpeg"}}}}]


def test_what_converse_cannot_take_is_400() -> None:
    http_image = [{"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}]
    with pytest.raises(BadRequest, match="http"):
        translate({"messages": [{"role": "user", "content": http_image}]})
    with pytest.raises(BadRequest) as info:
        translate({"messages": [{"role": "user", "content": "x"}], "tools": [TOOL], "tool_choice": "none"})
    assert info.value.param == "tool_choice"
    _, payload = translate({"messages": [{"role": "user", "content": "x"}], "tools": [TOOL], "tool_choice": "none"},
                           adapter=BedrockAdapter(drop_unsupported=True))
    assert "toolChoice" not in payload["toolConfig"]
    with pytest.raises(BadRequest) as info:
        translate({"messages": [{"role": "user", "content": "x"}], "seed": 1})
    assert info.value.param == "seed"


def test_documented_answers() -> None:
    body, usage = BedrockAdapter().response("chat", json.dumps(CONVERSE_TEXT).encode(), model=MODEL)
    obj = json.loads(body)
    assert obj["choices"][0]["message"]["content"] == "Hi there!" and obj["model"] == MODEL
    assert usage is not None and (usage.prompt, usage.completion, usage.cached) == (40, 4, 10)
    obj = json.loads(BedrockAdapter().response("chat", json.dumps(CONVERSE_TOOL).encode())[0])
    call = obj["choices"][0]["message"]["tool_calls"][0]
    assert obj["choices"][0]["finish_reason"] == "tool_calls"
    assert (call["id"], call["function"]["name"]) == ("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "top_song")
    assert json.loads(call["function"]["arguments"]) == {"sign": "WZPZ"}
    guarded = {**CONVERSE_TEXT, "stopReason": "guardrail_intervened"}
    assert json.loads(BedrockAdapter().response("chat", json.dumps(guarded).encode())[0])["choices"][0][
        "finish_reason"] == "content_filter"


@pytest.mark.parametrize("step", [1, 3, 13, 101, 100_000])
def test_binary_stream_at_odd_boundaries(step: int) -> None:
    frames = b"".join(stream_events([("tooluse_a", "top_song", ['{"sign":', ' "WZPZ"}']),
                                     ("tooluse_b", "top_song", ['{"sign": "ABCD"}'])]))
    translator = BedrockAdapter().stream("chat", keep_usage=True, model=MODEL)
    got = assemble(feed_split(translator, frames, step))
    assert got.role_first and got.text == "Hi there!" and got.done and translator.done
    assert [(c["id"], json.loads(c["arguments"])) for c in got.calls.values()] == [
        ("tooluse_a", {"sign": "WZPZ"}), ("tooluse_b", {"sign": "ABCD"})]
    assert got.finish == "tool_calls" and got.usage is not None and got.usage["prompt_tokens"] == 30


def test_exception_frame_mid_stream_raises_mapped_error() -> None:
    frames = b"".join([*stream_events([])[:2], exception_frame("throttlingException", "Too many tokens")])
    translator = BedrockAdapter().stream("chat", keep_usage=False)
    with pytest.raises(RateLimited) as info:
        feed_split(translator, frames, 7)
    assert "Too many tokens" in info.value.message and not translator.done
    broken = b"".join([*stream_events([])[:1], exception_frame("modelStreamErrorException", "model failed")])
    with pytest.raises(UpstreamError):
        BedrockAdapter().stream("chat", keep_usage=False).feed(broken)


def test_corrupt_frame_is_upstream_error() -> None:
    frame = bytearray(event_frame("messageStart", {"role": "assistant"}))
    frame[-1] ^= 0xFF
    with pytest.raises(UpstreamError, match="unreadable"):
        BedrockAdapter().stream("chat", keep_usage=False).feed(bytes(frame))


def _err(status: int, kind: str, message: str) -> Any:
    headers = httpx.Headers({"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"})
    return BedrockAdapter().error(status, headers, json.dumps({"message": message}).encode())


def test_error_mapping() -> None:
    assert isinstance(_err(429, "ThrottlingException", "Too many requests"), RateLimited)
    context = _err(400, "ValidationException", "Input is too long for requested model.")
    assert isinstance(context, BadRequest) and context.code == "context_length_exceeded"
    assert _err(403, "AccessDeniedException", "no access").code == "upstream_auth_error"
    assert isinstance(_err(500, "InternalServerException", "boom"), UpstreamError)
    assert "ThrottlingException" in _err(429, "ThrottlingException", "x").message


def _embed(model: str, body: dict[str, Any]) -> Any:
    url = BedrockAdapter.url(bedrock_base_url("us-east-1"), model, "embeddings")
    return BedrockAdapter().request(native_provider(), target("bedrock", "e"), url, (), "embeddings", model,
                                    {"model": "public", **body})


def test_embeddings_titan_one_input_and_cohere_batches() -> None:
    titan = _embed("amazon.titan-embed-text-v2:0", {"input": "hello world", "dimensions": 256})
    assert titan.url.endswith("/model/amazon.titan-embed-text-v2%3A0/invoke")
    assert json.loads(titan.body) == {"inputText": "hello world", "dimensions": 256}
    cohere = _embed("cohere.embed-english-v3", {"input": ["a", "b"]})
    assert json.loads(cohere.body) == {"texts": ["a", "b"], "input_type": "search_document"}
    with pytest.raises(BadRequest) as many:
        _embed("amazon.titan-embed-text-v2:0", {"input": ["a", "b"]})
    assert many.value.param == "input"
    with pytest.raises(BadRequest) as chat_model:
        _embed(MODEL, {"input": "x"})
    assert chat_model.value.param == "model"
    body, usage = BedrockAdapter().response("embeddings", json.dumps(
        {"embedding": [0.1, 0.2], "inputTextTokenCount": 2, "embeddingsByType": {"float": [0.1, 0.2]}}).encode(),
        model="titan", request={})
    assert json.loads(body)["data"][0]["embedding"] == [0.1, 0.2] and usage is not None and usage.prompt == 2
    body, _ = BedrockAdapter().response("embeddings", json.dumps(
        {"embeddings": {"float": [[1.0], [2.0]]}, "id": "x", "response_type": "embeddings_by_type"}).encode(),
        model="cohere", request={})
    assert [d["embedding"] for d in json.loads(body)["data"]] == [[1.0], [2.0]]
