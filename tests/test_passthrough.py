"""Provider pass-through routes end to end: the openai and anthropic SDKs (and raw HTTP) pointed at
`<sidegate>/openai` and `<sidegate>/anthropic`, relayed to fake OpenAI and Anthropic upstreams with
the gateway's keys (never the client's), rate-limited by the virtual key, metered into spend rows
from the provider's own usage, upstream errors relayed as they are, path escapes refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio
from google import genai
from google.genai import types

from sidegate.compiler.pipeline import compile_text
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_base import open_fake
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import open_gateway
from tests.support.spend_logs import spend_rows
from tests.support.upstream import FakeOpenAI, open_fake_openai

SPEC = """
version: 1
providers:
  oa: {{type: openai-compatible, base_url: "{oa}", api_key: "${{PT_OA_KEY}}"}}
  ant: {{type: anthropic, base_url: "{ant}", api_key: "${{PT_ANT_KEY}}"}}
  gem: {{type: gemini, base_url: "{gem}", api_key: "${{PT_GEM_KEY}}"}}
passthrough:
  oa: /openai
  ant: /anthropic
  gem: /gemini
auth:
  master_key: ${{PT_MASTER}}
  keys:
    - {{name: app, key: "${{PT_APP_KEY}}"}}
    - {{name: limited, key: "${{PT_LIMITED_KEY}}", limits: {{rpm: 2}}}}
    - {{name: scoped, key: "${{PT_SCOPED_KEY}}", models: [chat]}}
store: {{database: "sqlite:///{db}"}}
models:
  chat:
    targets: [{{provider: oa, model: gpt-4o-mini, price: {{input: 1.0, output: 2.0}}}}]
"""
MSG: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("PT_OA_KEY", "sk-oa-upstream"), ("PT_ANT_KEY", "sk-ant-upstream"), ("PT_GEM_KEY", "AIza-upstream"),
                        ("PT_MASTER", "sk-master"), ("PT_APP_KEY", "sk-app"), ("PT_LIMITED_KEY", "sk-limited"),
                        ("PT_SCOPED_KEY", "sk-scoped")):
        monkeypatch.setenv(name, value)


@asynccontextmanager
async def stack(tmp_path: Path) -> AsyncIterator[tuple[str, FakeOpenAI, FakeAnthropic]]:
    async with open_fake_openai() as oa, open_fake(FakeAnthropic()) as ant, open_fake(FakeGemini()) as gem:
        spec = SPEC.format(oa=oa.base_url, ant=ant.base_url, gem=gem.base_url, db=tmp_path / "spend.db")
        result = compile_text(spec, "spec.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        async with open_gateway(result.plan) as gw:
            GEMINI.append(gem)
            yield f"http://127.0.0.1:{gw.port}", oa, ant


GEMINI: list[FakeGemini] = []
"""The fake Gemini of the last stack (the tests of the other providers do not need it)."""


async def _spend(url: str, count: int) -> list[dict[str, Any]]:
    """The spend rows, oldest first, once `count` are written (the writer batches off the hot path)."""
    return await spend_rows(url, "sk-master", lambda rows: len(rows) >= count)


def _leaks(headers: dict[str, str], query: str = "") -> bool:
    return any(k in v for v in (*headers.values(), query) for k in ("sk-app", "sk-limited"))


async def test_openai_sdk_through_the_passthrough(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with stack(tmp_path) as (url, oa, _):
            client = openai.AsyncOpenAI(base_url=f"{url}/openai/v1", api_key="sk-app", max_retries=0)
            whole = await client.chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                                         extra_query={"user_tag": "a b"})
            stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True,
                                                          stream_options={"include_usage": True})
            usage = None
            async for chunk in stream:
                usage = chunk.usage or usage
            short = openai.AsyncOpenAI(base_url=f"{url}/openai", api_key="sk-app", max_retries=0)
            again = await short.chat.completions.create(model="unpriced", messages=MSG)
            rows = await _spend(url, 3)
    assert whole.choices[0].message.content == "Hi there!" and usage is not None and usage.prompt_tokens == 9
    assert again.choices[0].message.content == "Hi there!"
    assert [s.path for s in oa.seen] == ["/v1/chat/completions"] * 3, "the base path is not repeated"
    for seen in oa.seen:
        assert seen.headers["authorization"] == "Bearer sk-oa-upstream"
        assert not _leaks(seen.headers, seen.query)
    assert oa.seen[0].query == "user_tag=a+b" and oa.seen[1].body["stream_options"] == {"include_usage": True}
    assert [(r["model"], r["deployment"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == \
        [("passthrough/oa", "oa", 11, 2), ("passthrough/oa", "oa", 9, 3), ("passthrough/oa", "oa", 11, 2)]
    assert rows[0]["cost"] == pytest.approx(11e-6 + 4e-6), "priced as the plan's gpt-4o-mini at oa"
    assert rows[2]["cost"] == 0.0, "a model the plan does not price costs nothing"


async def test_anthropic_sdk_through_the_passthrough(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with stack(tmp_path) as (url, _, ant):
            client = anthropic.AsyncAnthropic(base_url=f"{url}/anthropic", api_key="sk-app", max_retries=0)
            message = await client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=MSG)
            tools: Any = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]
            async with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=MSG,
                                              tools=tools) as stream:
                final = await stream.get_final_message()
            rows = await _spend(url, 2)
    assert message.content[0].type == "text" and message.usage.output_tokens == 503
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert [s.path for s in ant.seen] == ["/v1/messages"] * 2
    for seen in ant.seen:
        assert seen.headers["x-api-key"] == "sk-ant-upstream" and "anthropic-version" in seen.headers
        assert "authorization" not in seen.headers and not _leaks(seen.headers)
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (2095 + 100 + 20, 503)
    assert rows[1]["model"] == "passthrough/ant" and rows[1]["completion_tokens"] == final.usage.output_tokens > 0
    assert rows[1]["prompt_tokens"] == final.usage.input_tokens > 0


async def test_google_genai_through_the_passthrough(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with stack(tmp_path) as (url, _, _):
            client = genai.Client(api_key="sk-app", http_options=types.HttpOptions(base_url=f"{url}/gemini"))

            def call() -> tuple[Any, list[Any]]:
                whole = client.models.generate_content(model="ok", contents="hi")
                return whole, list(client.models.generate_content_stream(model="ok", contents="hi"))

            whole, chunks = await trio.to_thread.run_sync(call)
            rows = await _spend(url, 2)
    gem = GEMINI[-1]
    assert whole.text and "".join(c.text or "" for c in chunks)
    assert [s.path for s in gem.seen] == ["/v1/models/ok:generateContent", "/v1/models/ok:streamGenerateContent"], \
        "the SDK's API version in place of the base URL's"
    assert gem.seen[1].query == "alt=sse"
    for seen in gem.seen:
        assert seen.headers["x-goog-api-key"] == "AIza-upstream" and not _leaks(seen.headers, seen.query)
    meta = whole.usage_metadata
    assert (rows[0]["model"], rows[0]["prompt_tokens"]) == ("passthrough/gem", meta.prompt_token_count)
    assert rows[0]["completion_tokens"] == meta.candidates_token_count + (meta.thoughts_token_count or 0)
    last = chunks[-1].usage_metadata
    assert rows[1]["prompt_tokens"] == last.prompt_token_count and rows[1]["completion_tokens"] > 0


async def test_limits_auth_and_upstream_errors(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with stack(tmp_path) as (url, oa, _), httpx.AsyncClient(base_url=url) as c:
            body = {"model": "gpt-4o-mini", "messages": MSG}
            limited = {"authorization": "Bearer sk-limited"}
            counted = [await c.post("/openai/v1/chat/completions", headers=limited, json=body) for _ in range(3)]
            missing = await c.post("/openai/v1/chat/completions", json=body)
            scoped = await c.post("/openai/v1/chat/completions", headers={"x-api-key": "sk-scoped"}, json=body)
            google = await c.post("/openai/v1/chat/completions?key=sk-app&alt=sse", json=body)
            failed = await c.post("/openai/v1/chat/completions", headers={"x-goog-api-key": "sk-app",
                                                                          "x-request-id": "req-7"},
                                  json={"model": "rate-429", "messages": MSG})
            method = await c.request("OPTIONS", "/openai/v1/models", headers=limited)
    assert [r.status_code for r in counted] == [200, 200, 429]
    refused = counted[2].json()["error"]
    assert refused["type"] == "rate_limit_error" or "rate limit" in refused["message"]
    assert counted[2].headers.get("retry-after") is not None
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert scoped.status_code == 403 and scoped.json()["error"]["code"] == "passthrough_not_allowed"
    assert google.status_code == 200 and oa.seen[-2].query == "alt=sse", "the key parameter never goes upstream"
    assert failed.status_code == 429 and failed.headers["retry-after"] == "7"
    assert failed.headers.get_list("x-request-id") == ["req-7"] and failed.headers["x-sidegate-deployment"] == "oa"
    assert failed.json() == {"error": {"message": "Rate limit reached for requests", "type": "requests",
                                       "param": None, "code": "rate_limit_exceeded"}}, "relayed as it is"
    assert method.status_code == 400 and method.json()["error"]["code"] == "method_not_allowed"
    assert len(oa.seen) == 4 and not any(_leaks(s.headers, s.query) for s in oa.seen)


async def _raw(url: str, target: str) -> tuple[int, bytes]:
    """One request with `target` sent byte for byte (HTTP clients normalise dot segments away)."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer sk-app\r\n"
                              "connection: close\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), rest


@pytest.mark.parametrize("target", [
    "/openai/../key/info", "/openai/v1/../../etc", "/openai/%2e%2e/x", "/openai/v1%2fchat", "/openai/v1%5cx",
    "/openai//evil.example/x", "/openai/http://evil.example/x", "/openai/./v1/models", "/openai/v1/%00", "/open%61i/v1/models",
])
async def test_path_escapes_are_refused(tmp_path: Path, target: str) -> None:
    with trio.fail_after(15):
        async with stack(tmp_path) as (url, oa, _):
            status, body = await _raw(url, target)
    assert status == 400 and b"invalid_path" in body, body
    assert oa.seen == []
