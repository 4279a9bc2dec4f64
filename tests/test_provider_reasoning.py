"""OpenAI's `reasoning_effort` lowered to each native provider's thinking control: Anthropic's
`thinking.budget_tokens` (below max_tokens, which counts it), Gemini's `thinkingConfig`, Claude on
Bedrock through additionalModelRequestFields, Cohere's `thinking`; bad values and impossible caps
are 400s naming the parameter."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
import trio

from sidegate.runtime.errors import BadRequest
from sidegate.runtime.plan import Family
from sidegate.runtime.upstream.providers.anthropic import AnthropicAdapter
from sidegate.runtime.upstream.providers.bedrock import BedrockAdapter, bedrock_base_url
from sidegate.runtime.upstream.providers.chat import EFFORT_BUDGET
from sidegate.runtime.upstream.providers.cohere import CohereAdapter
from sidegate.runtime.upstream.providers.gemini import GeminiAdapter
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_base import native_provider, open_fake
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import group, plan, target
from tests.support.plans import native_provider as provider

MSGS = [{"role": "user", "content": "Is 2^61-1 prime?"}]


def anthropic(body: dict[str, Any], **kw: Any) -> Any:
    req = AnthropicAdapter().request(native_provider(), target("anthropic", "c", **kw),
                                     "https://api.anthropic.com/v1/messages", (), "chat", "claude-sonnet-4-5",
                                     {"model": "m", "messages": MSGS, **body})
    return json.loads(req.body)


def gemini(body: dict[str, Any]) -> Any:
    url = GeminiAdapter().url("https://generativelanguage.googleapis.com/v1beta", "gemini-2.5-flash", "chat")
    req = GeminiAdapter().request(native_provider(), target("gemini", "g"), url, (), "chat", "gemini-2.5-flash",
                                  {"model": "m", "messages": MSGS, **body})
    return json.loads(req.body)


def bedrock(body: dict[str, Any], model: str = "anthropic.claude-sonnet-4-20250514-v1:0",
            adapter: BedrockAdapter | None = None) -> Any:
    url = BedrockAdapter.url(bedrock_base_url("us-east-1"), model, "chat")
    req = (adapter or BedrockAdapter()).request(native_provider(), target("bedrock", "b"), url, (), "chat", model,
                                                {"model": "m", "messages": MSGS, **body})
    return json.loads(req.body)


def cohere(body: dict[str, Any]) -> Any:
    req = CohereAdapter().request(native_provider(), target("cohere", "c"), "https://api.cohere.com/v2/chat", (),
                                  "chat", "command-a-reasoning-08-2025", {"model": "m", "messages": MSGS, **body})
    return json.loads(req.body)


def test_anthropic_budget_fits_under_max_tokens() -> None:
    assert anthropic({"reasoning_effort": "medium"}, max_output_tokens=64000)["thinking"] == {
        "type": "enabled", "budget_tokens": EFFORT_BUDGET["medium"]}
    capped = anthropic({"reasoning_effort": "high", "max_completion_tokens": 5000})
    assert capped["max_tokens"] == 5000 and capped["thinking"]["budget_tokens"] == 4999
    assert "thinking" not in anthropic({"reasoning_effort": "none"})
    with pytest.raises(BadRequest) as small:
        anthropic({"reasoning_effort": "low", "max_tokens": 800})
    assert small.value.param == "reasoning_effort" and "1024" in small.value.message


def test_gemini_thinking_config_and_none_turns_it_off() -> None:
    assert gemini({"reasoning_effort": "low"})["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 2048}
    assert gemini({"reasoning_effort": "none"})["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
    assert "generationConfig" not in gemini({})


def test_bedrock_claude_gets_thinking_other_models_a_400_unless_dropped() -> None:
    body = bedrock({"reasoning_effort": "high"})
    assert body["additionalModelRequestFields"]["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert body["inferenceConfig"]["maxTokens"] > 16384
    with_cap = bedrock({"reasoning_effort": "medium", "max_tokens": 3000, "top_k": 5})
    assert with_cap["additionalModelRequestFields"] == {"top_k": 5, "thinking": {"type": "enabled",
                                                                                "budget_tokens": 2999}}
    with pytest.raises(BadRequest) as nova:
        bedrock({"reasoning_effort": "low"}, model="amazon.nova-pro-v1:0")
    assert nova.value.param == "reasoning_effort"
    dropped = bedrock({"reasoning_effort": "low"}, model="amazon.nova-pro-v1:0",
                      adapter=BedrockAdapter(drop_unsupported=True))
    assert "additionalModelRequestFields" not in dropped and "inferenceConfig" not in dropped


def test_cohere_thinking() -> None:
    assert cohere({"reasoning_effort": "minimal"})["thinking"] == {"type": "enabled", "token_budget": 1024}
    assert cohere({"reasoning_effort": "none"})["thinking"] == {"type": "disabled"}


def test_unknown_effort_is_a_400() -> None:
    with pytest.raises(BadRequest) as bad:
        gemini({"reasoning_effort": "extreme"})
    assert bad.value.param == "reasoning_effort"


async def test_openai_sdk_reasoning_effort_reaches_claude_and_its_thinking_comes_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANT_KEY", "sk-ant-test")
    with trio.fail_after(15):
        async with open_fake(FakeAnthropic()) as fake:
            spec = plan([provider("ant", Family.ANTHROPIC, fake.base_url, "ANT_KEY")], [group("claude", target("ant", "ok"))])
            async with open_gateway(spec) as gw:
                client = openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0)
                answer = await client.chat.completions.create(
                    model="claude", messages=MSGS, reasoning_effort="low", max_completion_tokens=3000)
    assert fake.seen[-1].body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    message = answer.choices[0].message
    assert message.content == "Hi! My name is Claude."
    assert (message.model_extra or {})["reasoning_content"] == "Mersenne: 2^61-1 is a known prime."
