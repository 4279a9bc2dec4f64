"""The strict fake upstreams refuse what the real APIs refuse (the Messages translation tests are only
as good as these refusals): checked with the official openai SDK and raw Gemini requests."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
import trio

from tests.support.fake_base import open_fake
from tests.support.strict_gemini import StrictGemini
from tests.support.strict_openai import StrictOpenAI

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("model,extra,needle", [
    ("gpt-4o", {"extra_body": {"top_k": 5}}, "Unrecognized request argument supplied: top_k"),
    ("gpt-4o", {"reasoning_effort": "low"}, "'reasoning_effort' is not supported"),
    ("gpt-4o", {"max_tokens": 64000}, "max_tokens is too large: 64000"),
    ("gpt-5", {"max_tokens": 100}, "Use 'max_completion_tokens' instead"),
    ("gpt-5", {"max_completion_tokens": 100, "temperature": 0.5}, "Only the default (1) value is supported"),
    ("o3", {"max_completion_tokens": 100, "stop": ["x"]}, "'stop' is not supported"),
    ("gpt-4o", {"messages": [{"role": "tool", "tool_call_id": "c1", "content": "x"}]}, "role 'tool' must be"),
    ("gpt-4o", {"messages": [{"role": "user", "content": [{"type": "text", "text": "x",
                                                            "cache_control": {"type": "ephemeral"}}]}]},
     "Additional properties"),
    ("gpt-3.5-turbo", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64,iVBOR"}}]}]}, "image_url is only supported"),
])
async def test_strict_openai_refuses_as_openai_does(model: str, extra: dict[str, Any], needle: str) -> None:
    with trio.fail_after(15):
        async with open_fake(StrictOpenAI()) as fake:
            client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-upstream", max_retries=0)
            kwargs: dict[str, Any] = {"messages": HI, **extra}
            with pytest.raises(openai.BadRequestError) as info:
                await client.chat.completions.create(model=model, **kwargs)
            assert needle in info.value.message
            ok = await client.chat.completions.create(model=model, messages=HI)  # and answers a clean request
            assert ok.choices[0].message.content == "Hello from the fake."


@pytest.mark.parametrize("body,needle", [
    ({"generationConfig": {"top_k": 3}}, 'Unknown name "top_k"'),
    ({"generationConfig": {"maxOutputTokens": 9000}}, "maxOutputTokens value of 9000"),
    ({"generationConfig": {"thinkingConfig": {"thinkingBudget": 1024}}}, "Thinking is not supported"),
    ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "valid role"),
    ({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
     "number of function response parts"),
])
async def test_strict_gemini_refuses_as_google_does(body: dict[str, Any], needle: str) -> None:
    with trio.fail_after(15):
        async with open_fake(StrictGemini()) as fake, httpx.AsyncClient() as http:
            url = f"{fake.base_url}/models/gemini-exp-1114:generateContent"
            payload = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], **body}
            refused = await http.post(url, json=payload, headers={"x-goog-api-key": "AIza-upstream"})
            assert refused.status_code == 400 and needle in refused.json()["error"]["message"]
            fine = await http.post(url, json={"contents": payload["contents"] if "contents" not in body else
                                              [{"role": "user", "parts": [{"text": "hi"}]}]},
                                   headers={"x-goog-api-key": "AIza-upstream"})
            assert fine.status_code == 200
