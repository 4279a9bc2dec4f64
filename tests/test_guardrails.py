"""Guardrails end to end with the official `openai` and `anthropic` SDKs against a served gateway in
front of a fake upstream that records what it received (`tests.support.cache_fakes`, which also
refuses unknown fields, so a `guardrails` field forwarded upstream would fail the call): a blocked
request never reaches the upstream, a masked one arrives masked, post_call masks or blocks the
answer, requests select only the guardrails they are allowed, decisions are counted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from tests.support.cache_fakes import CountingOpenAI
from tests.support.fake_base import open_fake
from tests.support.gateway import open_gateway

SPEC = """\
version: 1
providers:
  oa: {{type: openai, base_url: "{url}", api_key: "${{GUARD_UPSTREAM_KEY}}"}}
guardrails:
  secrets: {{kind: regex, presets: [api_keys, aws_keys, private_keys]}}
  pii: {{kind: pii, action: mask, entities: [email, credit_card, iban]}}
  falcon: {{kind: keywords, words: [project falcon], action: log}}
  weapons: {{kind: topics, blocked: {{weapons: [detonator]}}, default_on: false}}
  size: {{kind: max_prompt, max_chars: 3000000}}
  answers: {{kind: pii, mode: post_call, action: mask, entities: [email]}}
  strict: {{kind: keywords, mode: post_call, words: [forbidden], default_on: false}}
models:
  fast: {{guardrails: [secrets, pii, falcon, weapons, size], targets: [{{provider: oa, model: gpt-4o-mini}}]}}
  echo: {{guardrails: [answers, strict], targets: [{{provider: oa, model: gpt-4o-mini}}]}}
  "claude-*": {{guardrails: [secrets, pii], targets: [{{provider: oa, model: gpt-4o-mini}}]}}
  bare: {{targets: [{{provider: oa, model: gpt-4o-mini}}]}}
"""
KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"
CARD = "4111 1111 1111 1111"


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARD_UPSTREAM_KEY", "sk-upstream-0001")


@asynccontextmanager
async def served(spec: str = SPEC) -> AsyncIterator[tuple[str, CountingOpenAI]]:
    """A gateway on `spec` (its `{url}` is the counting fake OpenAI's) and that fake."""
    async with open_fake(CountingOpenAI()) as up:
        result = compile_text(spec.format(url=up.base_url), "guardrails.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        async with open_gateway(result.plan) as gw:
            yield f"http://127.0.0.1:{gw.port}", up


def oai(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def claude(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)


async def ask(url: str, text: str, model: str = "fast", **kw: Any) -> str:
    r = await oai(url).chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)
    return r.choices[0].message.content or ""


def _sent(up: CountingOpenAI) -> str:
    return "\n".join(str(m.get("content")) for b in up.chat_bodies() for m in b.get("messages", []))


async def test_a_blocked_request_never_reaches_the_upstream_and_names_only_the_guardrail() -> None:
    with trio.fail_after(20):
        async with served() as (url, up):
            with pytest.raises(openai.BadRequestError) as caught:
                await ask(url, f"my key is {KEY}, keep it")
            error = caught.value.body
            assert isinstance(error, dict)
            assert error["code"] == "guardrail_blocked" and error["guardrail"] == "secrets"
            assert KEY not in str(error) and "sk-proj" not in str(error)
            with pytest.raises(anthropic.BadRequestError) as refused:
                await claude(url).messages.create(model="claude-x", max_tokens=50, messages=[
                    {"role": "user", "content": [{"type": "text", "text": "AKIAIOSFODNN7EXAMPLE is mine"}]}])
            body = refused.value.body
            assert isinstance(body, dict) and body["type"] == "error"
            assert body["error"]["type"] == "invalid_request_error"
            assert body["error"]["code"] == "guardrail_blocked" and body["error"]["guardrail"] == "secrets"
            assert "AKIA" not in str(body)
            assert up.calls == 0 and up.seen == []
            async with httpx.AsyncClient(base_url=url) as http:
                metrics = (await http.get("/metrics")).text
    assert 'sidegate_guardrail_decisions_total{guardrail="secrets",mode="pre_call",outcome="blocked"} 2.0' in metrics
    assert KEY not in metrics


async def test_a_masked_request_reaches_the_upstream_masked_in_both_dialects() -> None:
    with trio.fail_after(20):
        async with served() as (url, up):
            answer = await ask(url, f"mail bob@example.com, card {CARD}, or 4111 1111 1111 1112 and project falcon")
            assert "[EMAIL]" in answer and "[CARD ****1111]" in answer
            sent = _sent(up)
            assert "bob@example.com" not in sent and CARD not in sent
            assert "[EMAIL]" in sent and "[CARD ****1111]" in sent
            assert "4111 1111 1111 1112" in sent  # fails Luhn: not a card, left as it is
            assert "project falcon" in sent  # action log: logged, unchanged
            r = await claude(url).messages.create(model="claude-x", max_tokens=50, system="reply to carol@example.org",
                                                  messages=[{"role": "user", "content": "IBAN GB82 WEST 1234 5698 7654 32"}])
            text = "".join(b.text for b in r.content if b.type == "text")
            assert "[IBAN]" in text and "GB82" not in text
            last = up.chat_bodies()[-1]
            assert "carol@example.org" not in str(last) and "[EMAIL]" in str(last) and "GB82" not in str(last)


async def test_post_call_masks_the_answer_and_a_selected_guardrail_blocks_it() -> None:
    with trio.fail_after(20):
        async with served() as (url, up):
            answer = await ask(url, "write to dave@example.com", model="echo")
            assert "[EMAIL]" in answer and "dave@example.com" not in answer
            assert "dave@example.com" in _sent(up)  # post_call only: the upstream had the prompt as it was
            assert "forbidden" in await ask(url, "the forbidden word", model="echo")  # strict is not default_on
            with pytest.raises(openai.BadRequestError) as caught:
                await ask(url, "the forbidden word", model="echo", extra_body={"guardrails": ["strict"]})
            assert isinstance(caught.value.body, dict)
            assert caught.value.body["code"] == "guardrail_blocked" and caught.value.body["guardrail"] == "strict"
            assert up.calls == 3 and all("guardrails" not in b for b in up.chat_bodies())
            with pytest.raises(openai.BadRequestError) as stream:
                await oai(url).chat.completions.create(model="echo", stream=True,
                                                       messages=[{"role": "user", "content": "hi"}])
            assert isinstance(stream.value.body, dict) and stream.value.body["code"] == "guardrail_unsupported"


async def test_a_request_selects_only_guardrails_it_is_allowed() -> None:
    with trio.fail_after(20):
        async with served() as (url, up):
            assert "detonator" in await ask(url, "about the detonator")
            with pytest.raises(openai.BadRequestError) as blocked:
                await ask(url, "about the detonator", extra_body={"guardrails": ["weapons"]})
            assert isinstance(blocked.value.body, dict) and blocked.value.body["guardrail"] == "weapons"
            for names in (["strict"], ["nope"], "weapons"):
                with pytest.raises(openai.BadRequestError) as refused:
                    await ask(url, "hello", extra_body={"guardrails": names})
                assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "guardrails"
            with pytest.raises(openai.BadRequestError):
                await ask(url, "hello", model="bare", extra_body={"guardrails": ["pii"]})
            assert await ask(url, "mail bob@example.com", model="bare") == "Answer 2 to: mail bob@example.com"
            assert up.calls == 2 and all("guardrails" not in b for b in up.chat_bodies())


async def test_a_huge_hostile_prompt_is_checked_fast() -> None:
    hostile = ("1" * 50 + " a@" + "x." * 40 + " ") * 20_000 + "x" * 500_000  # ~3.2 MB of near-matches
    with trio.fail_after(30):
        async with served() as (url, up):
            t0 = time.perf_counter()
            with pytest.raises(openai.BadRequestError) as caught:  # masked (nothing found), then over max_prompt
                await ask(url, hostile)
            elapsed = time.perf_counter() - t0
            assert isinstance(caught.value.body, dict) and caught.value.body["guardrail"] == "size"
            assert "[EMAIL]" not in hostile and await ask(url, "still serving") == "Answer 1 to: still serving"
    assert elapsed < 10
    assert up.calls == 1
