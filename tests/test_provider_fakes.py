"""Each native adapter against its fake upstream over real local HTTP (httpx, no gateway yet): text,
streamed text, parallel tool calls (whole and streamed), upstream errors and mid-stream errors.
These pin that the fakes in tests/support speak what the adapters expect, for the end-to-end tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio
from botocore.credentials import Credentials

from sidegate.runtime.errors import GatewayError, RateLimited, UpstreamError
from sidegate.runtime.upstream.providers import AnthropicAdapter, BedrockAdapter, CohereAdapter, GeminiAdapter
from sidegate.runtime.upstream.providers.bedrock_auth import BedrockSigner
from sidegate.runtime.upstream.providers.vertex_auth import VertexTokenSource
from sidegate.runtime.upstream.transport import UpstreamRequest
from tests.support.fake_anthropic import open_fake_anthropic
from tests.support.fake_base import FakeServer, assemble, native_provider
from tests.support.fake_bedrock import open_fake_bedrock
from tests.support.fake_cohere import open_fake_cohere
from tests.support.fake_gemini import FakeGemini, open_fake_gemini
from tests.support.plans import target


class StaticToken:
    token: str | None = None
    expiry: datetime | None = None

    def refresh(self, request: Any) -> None:
        self.token, self.expiry = "ya29.test", datetime.now(UTC) + timedelta(hours=1)


@dataclass
class Case:
    name: str
    open: Callable[[], AbstractAsyncContextManager[Any]]
    adapter: Any
    base: Callable[[Any], str]
    headers: tuple[tuple[str, str], ...]
    errors: dict[str, type[GatewayError] | str]
    """mode -> expected error class, or the expected `code`."""
    authorize: Any = None


CASES = [
    Case("anthropic", open_fake_anthropic, AnthropicAdapter(), lambda f: f.base_url, (("x-api-key", "sk-ant"),),
         {"rate-429": RateLimited, "overloaded-529": UpstreamError, "context": "context_length_exceeded",
          "auth-401": "upstream_auth_error"}),
    Case("gemini", open_fake_gemini, GeminiAdapter(), lambda f: f.base_url, (("x-goog-api-key", "AIza"),),
         {"rate-429": RateLimited, "fail-500": UpstreamError, "context": "context_length_exceeded",
          "bad-key": "upstream_auth_error", "blocked": "content_policy_violation"}),
    Case("vertex", open_fake_gemini, GeminiAdapter(vertex=True), lambda f: FakeGemini.vertex_base_url(f), (),
         {"rate-429": RateLimited}, VertexTokenSource(StaticToken())),
    Case("bedrock", open_fake_bedrock, BedrockAdapter(), lambda f: f.base_url, (("content-type", "application/json"),),
         {"throttled": RateLimited, "context": "context_length_exceeded", "fail-500": UpstreamError},
         BedrockSigner("us-east-1", Credentials("AKID", "secret"))),
    Case("cohere", open_fake_cohere, CohereAdapter(), lambda f: f.base_url, (("authorization", "Bearer co"),),
         {"rate-429": RateLimited, "context": "context_length_exceeded", "bad-token": "upstream_auth_error"}),
]
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("get_weather", "get_time")]


async def call(case: Case, fake: FakeServer, model: str, body: dict[str, Any]) -> tuple[bytes, Any]:
    """Send the adapter's request; the OpenAI-shaped bytes and the usage (or raise the mapped error)."""
    url = case.adapter.url(case.base(fake), model, "chat")
    request: UpstreamRequest = case.adapter.request(native_provider(), target("p", model), url, case.headers, "chat",
                                                    model, {"model": "public", **body})
    if case.authorize is not None:
        request = await case.authorize.authorize(request)
    async with httpx.AsyncClient() as client:
        async with client.stream("POST", request.url, headers=list(request.headers), content=request.body) as r:
            if r.status_code >= 400:
                raise case.adapter.error(r.status_code, r.headers, await r.aread())
            if not body.get("stream"):
                return case.adapter.response("chat", await r.aread(), model=model)
            assert r.headers["content-type"].startswith(case.adapter.stream_content_type)
            translator = case.adapter.stream("chat", True, model=model)
            out = b"".join([translator.feed(chunk) async for chunk in r.aiter_raw()])
            assert translator.done
            return out, translator.usage


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_text_stream_tools_and_errors(case: Case) -> None:
    with trio.fail_after(10):
        async with case.open() as fake:
            whole, usage = await call(case, fake, "ok", {"messages": MESSAGES})
            streamed, stream_usage = await call(case, fake, "ok", {"messages": MESSAGES, "stream": True})
            tools, _ = await call(case, fake, "ok", {"messages": MESSAGES, "tools": TOOLS})
            tool_stream, _ = await call(case, fake, "ok", {"messages": MESSAGES, "tools": TOOLS, "stream": True})
            errors = {}
            for mode in case.errors:
                with pytest.raises(GatewayError) as info:
                    await call(case, fake, mode, {"messages": MESSAGES})
                errors[mode] = info.value
            with pytest.raises(GatewayError):
                await call(case, fake, "stream-error", {"messages": MESSAGES, "stream": True})
    answer = json.loads(whole)["choices"][0]
    assert answer["message"]["content"] and answer["finish_reason"] == "stop" and usage.prompt > 0
    got = assemble(streamed)
    assert got.text and got.finish == "stop" and got.usage is not None and stream_usage.completion > 0
    calls = json.loads(tools)["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert all(json.loads(c["function"]["arguments"]) == {"location": "Paris"} for c in calls)
    streamed_calls = assemble(tool_stream).calls
    assert [streamed_calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert all(json.loads(c["arguments"]) == {"location": "Paris"} and c["id"] for c in streamed_calls.values())
    for mode, want in case.errors.items():
        if isinstance(want, str):
            assert errors[mode].code == want, mode
        else:
            assert isinstance(errors[mode], want), mode
    sent = fake.seen[0]
    if case.name == "vertex":
        assert sent.headers["authorization"] == "Bearer ya29.test"
    if case.name == "bedrock":
        assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID/")
