"""Pass-through and Gemini-ingress faults through a running sidegate: answers relayed without
buffering (the client reads the first event while the upstream still holds the rest), an upstream
that is down or silent, a body over `server.max_body`, a Gemini stream whose backend breaks
mid-way (Google's error as the last event), and the translation's refusals."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.errors import BadRequest
from sidegate.runtime.http.gemini.request import gemini_to_openai
from sidegate.runtime.http.passthrough import upstream_path
from sidegate.runtime.http.passthrough_usage import UsageTap
from tests.support.fake_base import FakeServer, Seen, open_fake
from tests.support.gateway import open_gateway

CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


class Gated(FakeServer):
    """An OpenAI-format upstream: `gated` streams one event, then waits for the test's go before the
    rest; `silent` never answers; `breaks` streams one event and drops the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.go = trio.Event()

    async def answer(self, seen: Seen, send: Any) -> None:
        model = (seen.body or {}).get("model")
        if model == "silent":
            await trio.sleep_forever()
        first = {**CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "one "},
                                       "finish_reason": None}]}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: " + json.dumps(first).encode() + b"\n\n",
                    "more_body": True})
        if model == "breaks":
            raise RuntimeError("connection dropped mid-stream")
        await self.go.wait()
        last = {**CHUNK, "choices": [{"index": 0, "delta": {"content": "two"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
        await send({"type": "http.response.body", "body": b"data: " + json.dumps(last).encode()
                    + b"\n\ndata: [DONE]\n\n", "more_body": False})


SPEC = """
version: 1
server: {{max_body: 4KiB}}
providers:
  up: {{type: openai-compatible, base_url: "{base}/v1", api_key: "${{PTF_KEY}}", timeouts: {{first_byte: 500ms}}}}
  down: {{type: openai-compatible, base_url: "http://127.0.0.1:9/v1", api_key: "${{PTF_KEY}}"}}
passthrough:
  up: /up
  down: /down
models:
  breaks: {{targets: [{{provider: up, model: breaks}}]}}
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTF_KEY", "sk-upstream")


@asynccontextmanager
async def stack() -> AsyncIterator[tuple[httpx.AsyncClient, Gated]]:
    async with open_fake(Gated()) as fake:
        result = compile_text(SPEC.format(base=fake.root), "spec.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        async with open_gateway(result.plan) as gw, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{gw.port}", timeout=10) as client:
            yield client, fake


async def test_streams_are_relayed_as_they_arrive() -> None:
    with trio.fail_after(10):
        async with stack() as (client, fake):
            body = {"model": "gated", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            async with client.stream("POST", "/up/v1/chat/completions", json=body) as response:
                pieces = response.aiter_bytes()
                first = await pieces.__anext__()
                assert b"one " in first and not fake.go.is_set(), "the first event came before the upstream's end"
                fake.go.set()
                rest = b"".join([chunk async for chunk in pieces])
    assert response.status_code == 200 and b"[DONE]" in rest


async def test_upstream_down_silent_and_oversize() -> None:
    with trio.fail_after(10):
        async with stack() as (client, fake):
            msg = [{"role": "user", "content": "hi"}]
            down = await client.post("/down/v1/chat/completions", json={"model": "x", "messages": msg})
            silent = await client.post("/up/v1/chat/completions", json={"model": "silent", "messages": msg})
            big = await client.post("/up/v1/chat/completions", json={"model": "x", "messages": msg, "pad": "x" * 8000})
            gemini_big = await client.post("/v1beta/models/breaks:generateContent",
                                           json={"contents": [{"parts": [{"text": "x" * 8000}]}]})
    assert down.status_code == 502 and down.json()["error"]["code"] == "upstream_connect_error"
    assert silent.status_code == 504 and "error" in silent.json()
    assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"
    assert gemini_big.status_code == 413 and gemini_big.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert [s.body["model"] for s in fake.seen] == ["silent"], "an oversize body never goes upstream"


async def test_a_gemini_stream_cut_by_its_backend_ends_with_googles_error() -> None:
    with trio.fail_after(10):
        async with stack() as (client, _):
            async with client.stream("POST", "/v1beta/models/breaks:streamGenerateContent?alt=sse",
                                     json={"contents": [{"parts": [{"text": "hi"}]}]}) as response:
                raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert response.status_code == 200
    assert events[0]["candidates"][0]["content"]["parts"] == [{"text": "one "}]
    assert events[-1]["error"]["code"] >= 500 and events[-1]["error"]["status"] in ("UNAVAILABLE", "INTERNAL")


@pytest.mark.parametrize(("body", "needle"), [
    ({"contents": [{"role": "model", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
     "answers no earlier functionCall"),
    ({"contents": [{"parts": [{"inlineData": {"mimeType": "audio/wav", "data": "AAAA"}}]}]}, "images only"),
    ({"contents": [{"parts": [{"fileData": {"fileUri": "files/abc"}}]}]}, "http(s) fileUri"),
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 2}}, "candidateCount"),
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseModalities": ["AUDIO"]}},
     "responseModalities"),
    ({"contents": [{"parts": [{"executableCode": {}}]}]}, "executableCode"),
    ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "role"),
])
def test_the_translation_refuses_what_it_cannot_carry(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(BadRequest) as info:
        gemini_to_openai(body, "m", False)
    assert needle in info.value.message


def test_the_translation_of_schemas_and_tool_turns() -> None:
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}]},
            {"role": "model", "parts": [{"text": "thinking", "thought": True},
                                        {"functionCall": {"name": "f", "args": {"a": 1}}},
                                        {"functionCall": {"name": "f", "args": {"a": 2}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"r": 1}}},
                                       {"functionResponse": {"name": "f", "response": {"r": 2}}}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
            "type": "OBJECT", "properties": {"a": {"type": "INTEGER", "nullable": True},
                                             "b": {"type": "ARRAY", "items": {"type": "STRING"}}}}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
        "generationConfig": {"responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": 4096}},
    }
    out, dropped = gemini_to_openai(body, "m", True)
    user, model, first, second = out["messages"]
    assert user["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
    ids = [c["id"] for c in model["tool_calls"]]
    assert model["content"] is None and len(set(ids)) == 2
    assert (first["tool_call_id"], second["tool_call_id"]) == tuple(ids), "paired in order by name"
    params = out["tools"][0]["function"]["parameters"]
    assert params == {"type": "object", "properties": {"a": {"type": ["integer", "null"]},
                                                       "b": {"type": "array", "items": {"type": "string"}}}}
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert out["response_format"] == {"type": "json_object"} and out["reasoning_effort"] == "medium"
    assert out["stream"] is True and dropped == ()


@pytest.mark.parametrize(("content_type", "events", "usage"), [
    ("text/event-stream", [{"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}},
                           {"type": "message_delta", "usage": {"output_tokens": 30}}], (9, 30)),
    ("text/event-stream", [{"type": "response.completed", "response": {"usage": {"input_tokens": 4,
                                                                                 "output_tokens": 6}}}], (4, 6)),
    ("text/event-stream", [{"candidates": [], "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1}},
                           {"candidates": [], "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 8,
                                                                "thoughtsTokenCount": 3}}], (2, 11)),
    ("application/json", [{"usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}], (5, 7)),
    ("application/json", [{"usage": {"prompt_tokens": -1, "completion_tokens": 7}}], None),
])
def test_usage_is_read_in_each_providers_shape(content_type: str, events: list[Any],
                                                usage: tuple[int, int] | None) -> None:
    tap = UsageTap(content_type)
    raw = (b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
           if content_type == "text/event-stream" else json.dumps(events[0]).encode())
    for i in range(0, len(raw), 7):
        tap.feed(raw[i:i + 7])
    found = tap.finish()
    assert (None if found is None else (found.prompt, found.completion)) == usage


@pytest.mark.parametrize(("raw", "prefix", "base", "expected"), [
    ("/openai/v1/chat/completions", "/openai", "/v1", "/v1/chat/completions"),
    ("/openai/chat/completions", "/openai", "/v1", "/v1/chat/completions"),
    ("/anthropic/v1/messages", "/anthropic", "/v1", "/v1/messages"),
    ("/gemini/v1/models/m:generateContent", "/gemini", "/v1beta", "/v1/models/m:generateContent"),
    ("/gemini/v1beta/files", "/gemini", "/v1beta", "/v1beta/files"),
    ("/azure/openai/deployments/d/chat/completions", "/azure", "/openai", "/openai/deployments/d/chat/completions"),
    ("/azure/deployments/d/chat/completions", "/azure", "/openai", "/openai/deployments/d/chat/completions"),
    ("/co/v1/chat/completions", "/co", "/compatibility/v1", "/compatibility/v1/chat/completions"),
    ("/co/models", "/co", "/compatibility/v1", "/compatibility/v1/models"),
    ("/local/v1/models/", "/local", "", "/v1/models/"),
])
def test_upstream_paths_stay_under_the_base_path(raw: str, prefix: str, base: str, expected: str) -> None:
    assert upstream_path(raw, prefix, base) == expected
