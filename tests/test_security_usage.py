"""Hostile usage numbers from upstreams (issue 15, case 5).

A fake OpenAI upstream reports `prompt_tokens` as a string, negative, fractional, boolean, huge, a
raw `NaN` token, or a digit string, in whole answers and in the final usage chunk of streams. The
client always gets its answer (no 500, no stream cut without an error event); the usage is treated
as absent, so the request is metered locally (`usage_estimated`) at a non-negative cost. Native
adapters (Anthropic, Gemini, Bedrock, Cohere) validate their counts the same way."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
import trio

from sidegate.runtime.plan import Price
from sidegate.runtime.upstream.providers.anthropic import AnthropicAdapter, AnthropicRelay, message_usage
from sidegate.runtime.upstream.providers.cohere import CohereAdapter
from sidegate.runtime.upstream.providers.gemini import GeminiAdapter
from sidegate.runtime.upstream.usage_check import InvalidUsage, token_count
from tests.support.fake_base import FakeServer, Seen, open_fake
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import group, openai_provider, plan, target

BAD = {"string": '"abc"', "negative": "-5", "fraction": "1.5", "boolean": "true", "huge": "1e300",
       "nan": "NaN", "digits": '"12"', "big-int": str(1 << 40), "object": "{}"}
PRICE = Price(input=1e-3, output=2e-3, cached_input=None)


def _usage(raw: str) -> str:
    return f'{{"prompt_tokens": {raw}, "completion_tokens": 3, "total_tokens": 7}}'


class BadUsage(FakeServer):
    """OpenAI's chat wire; the upstream model name `<kind>` picks the bad prompt_tokens (raw JSON
    text, so `NaN` goes out as the token it is)."""

    async def answer(self, seen: Seen, send: Any) -> None:
        body = seen.body or {}
        raw = BAD[body["model"]]
        if body.get("stream"):
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello there"},
                                  "finish_reason": None}]}
            stop = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            usage = ('data: {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", '
                     f'"choices": [], "usage": {_usage(raw)}}}\n\n')
            out = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(stop)}\n\n{usage}data: [DONE]\n\n"
            await self.stream(send, out.encode())
            return
        text = ('{"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [{"index": 0, '
                '"message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}], '
                f'"usage": {_usage(raw)}}}')
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": text.encode()})


async def test_bad_usage_never_fails_the_answer_and_is_metered_locally(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(60):
        async with open_fake(BadUsage()) as fake:
            up = openai_provider("up", f"{fake.root}/v1")
            p = plan([up], [group(kind, target("up", kind, price=PRICE)) for kind in BAD])
            async with open_gateway(p) as gw:
                client = openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0)
                for kind in BAD:
                    if kind != "nan":  # NaN is not JSON: the whole answer is unreadable (502, below)
                        whole = await client.chat.completions.create(
                            model=kind, messages=[{"role": "user", "content": "hi"}])
                        assert whole.choices[0].message.content == "Hello there"
                    stream = await client.chat.completions.create(
                        model=kind, stream=True, stream_options={"include_usage": True},
                        messages=[{"role": "user", "content": "hi"}])
                    chunks = [c async for c in stream]
                    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                    assert text == "Hello there", kind
                with pytest.raises(openai.APIStatusError) as nan:
                    await client.chat.completions.create(model="nan", messages=[{"role": "user", "content": "hi"}])
    assert nan.value.status_code == 502 and "invalid JSON" in str(nan.value)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("event") == "request" and line["status"] == 200]
    assert len(calls) == 2 * len(BAD) - 1
    for line in calls:
        assert line.get("usage_estimated") is True, line
        assert line["prompt_tokens"] >= 1 and line["completion_tokens"] >= 1 and line["cost"] > 0, line
    assert not [line for line in lines if line.get("event") == "internal_error"]


def test_token_count_accepts_only_counts() -> None:
    assert token_count(None) == 0 and token_count(12) == 12 and token_count(12.0) == 12
    for bad in ("abc", "12", -1, 1.5, True, float("nan"), float("inf"), 1e300, 1 << 40, {}, []):
        with pytest.raises(InvalidUsage):
            token_count(bad)


@pytest.mark.parametrize("value", [-5, "abc", 1.5, True])
def test_native_adapters_treat_bad_counts_as_absent(value: Any) -> None:
    # Anthropic, whole and streamed (a bad count at message_start poisons the stream's usage).
    with pytest.raises(InvalidUsage):
        message_usage({"input_tokens": value, "output_tokens": 1})
    body = {"id": "m", "type": "message", "role": "assistant", "model": "claude", "content": [{"type": "text",
            "text": "hi"}], "stop_reason": "end_turn", "usage": {"input_tokens": value, "output_tokens": 2}}
    out, usage = AnthropicAdapter().response("chat", json.dumps(body).encode())
    assert usage is None and json.loads(out)["choices"][0]["message"]["content"] == "hi"
    relay = AnthropicRelay()
    start = {"type": "message_start", "message": {**body, "content": [], "usage": {"input_tokens": value}}}
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}
    raw = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in (start, delta, {"type": "message_stop"}))
    relay.feed(raw.encode())
    assert relay.usage is None and relay.done
    # Gemini: usageMetadata
    gem = {"candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"}, "finishReason": "STOP"}],
           "usageMetadata": {"promptTokenCount": value, "candidatesTokenCount": 1}}
    _, usage = GeminiAdapter().response("chat", json.dumps(gem).encode())
    assert usage is None
    # Cohere: usage.billed_units
    co = {"id": "c", "finish_reason": "COMPLETE", "message": {"role": "assistant", "content": [
        {"type": "text", "text": "hi"}]}, "usage": {"billed_units": {"input_tokens": value, "output_tokens": 1}}}
    _, usage = CohereAdapter().response("chat", json.dumps(co).encode())
    assert usage is None
