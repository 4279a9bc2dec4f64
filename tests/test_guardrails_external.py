"""External guardrails end to end with the official `openai` SDK: a served gateway, a fake upstream
that records what it received, a real local guardrail server speaking the documented http contract
(it blocks, masks, hangs past the timeout, answers garbage or an error status, by the text it is
sent) and a fake OpenAI `/v1/moderations` endpoint (as OpenAI, it refuses a call without its key
and flags what it is told to). Fail-closed is a 503 `guardrail_unavailable`, fail-open lets the
call through; nothing of the client's key or the upstream's reaches the checks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from tests.support.cache_fakes import CountingOpenAI
from tests.support.fake_base import FakeServer, Seen, open_fake
from tests.support.gateway import open_gateway

SPEC = """\
version: 1
providers:
  oa: {{type: openai, base_url: "{url}", api_key: "${{GUARD_UPSTREAM_KEY}}"}}
  mod: {{type: openai-compatible, base_url: "{mod}", api_key: "${{GUARD_MOD_KEY}}"}}
guardrails:
  ext: {{kind: http, url: "{guard}/check", timeout: 0.5}}
  ext_open: {{kind: http, url: "{guard}/check", timeout: 0.5, fail: open}}
  ext_post: {{kind: http, mode: post_call, url: "{guard}/check", timeout: 2}}
  ext_log: {{kind: http, url: "{guard}/check", action: log}}
  moder: {{kind: moderation, provider: mod, model: omni-moderation-latest, timeout: 2}}
models:
  closed: {{guardrails: [ext], targets: [{{provider: oa, model: gpt-4o-mini}}]}}
  open: {{guardrails: [ext_open], targets: [{{provider: oa, model: gpt-4o-mini}}]}}
  post: {{guardrails: [ext_post], targets: [{{provider: oa, model: gpt-4o-mini}}]}}
  logged: {{guardrails: [ext_log], targets: [{{provider: oa, model: gpt-4o-mini}}]}}
  moderated: {{guardrails: [moder], targets: [{{provider: oa, model: gpt-4o-mini}}]}}
"""


@dataclass
class GuardServer(FakeServer):
    """The documented http contract, deciding by the text: `block me`, `mask me`, `hang`, `garbage`,
    `crash`; anything else is allowed."""

    clients: list[tuple[str, int]] = field(default_factory=list)
    """The peer address of each request (the same one: the keep-alive pool's connection, reused)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.clients.append(tuple(scope["client"]))
        await super().__call__(scope, receive, send)

    async def answer(self, seen: Seen, send: Any) -> None:
        body = seen.body
        if seen.path != "/check" or not isinstance(body, dict) or not isinstance(body.get("texts"), list):
            await self.json(send, 400, {"error": "bad request"})
            return
        text = " ".join(body["texts"])
        if "hang" in text:
            await trio.sleep_forever()
        if "garbage" in text:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
            await send({"type": "http.response.body", "body": b"<html>oops"})
        elif "crash" in text:
            await self.json(send, 500, {"error": "internal"})
        elif "block me" in text:
            await self.json(send, 200, {"action": "block", "reason": "policy 7"})
        elif "mask me" in text:
            await self.json(send, 200, {"action": "mask", "texts": [t.replace("mask me", "[X]") for t in body["texts"]]})
        else:
            await self.json(send, 200, {"action": "allow"})


@dataclass
class FakeModeration(FakeServer):
    """OpenAI's `POST /v1/moderations`: the key checked, one result per input, `kill` flagged."""

    async def answer(self, seen: Seen, send: Any) -> None:
        if seen.headers.get("authorization") != "Bearer sk-mod-0002":
            await self.json(send, 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                                  "param": None, "code": "invalid_api_key"}})
            return
        body = seen.body
        if seen.path != "/v1/moderations" or not isinstance(body, dict) or "input" not in body:
            await self.json(send, 400, {"error": {"message": "bad", "type": "invalid_request_error", "param": None,
                                                  "code": None}})
            return
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        results = [{"flagged": "kill" in t, "categories": {"violence": "kill" in t, "hate": False},
                    "category_scores": {"violence": 0.9 if "kill" in t else 0.01, "hate": 0.0}} for t in inputs]
        await self.json(send, 200, {"id": "modr-1", "model": body.get("model", "omni-moderation-latest"),
                                    "results": results})


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARD_UPSTREAM_KEY", "sk-upstream-0001")
    monkeypatch.setenv("GUARD_MOD_KEY", "sk-mod-0002")


@asynccontextmanager
async def served() -> AsyncIterator[tuple[str, CountingOpenAI, GuardServer, FakeModeration]]:
    async with open_fake(CountingOpenAI()) as up, open_fake(GuardServer()) as guard, \
            open_fake(FakeModeration()) as mod:
        spec = SPEC.format(url=up.base_url, guard=guard.root, mod=f"{mod.root}/v1")
        result = compile_text(spec, "guardrails.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        async with open_gateway(result.plan) as gw:
            yield f"http://127.0.0.1:{gw.port}", up, guard, mod


async def ask(url: str, model: str, text: str, **kw: Any) -> str:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-client-9999", max_retries=0)
    r = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)
    return r.choices[0].message.content or ""


async def test_an_http_guardrail_blocks_masks_and_allows_by_its_answer() -> None:
    with trio.fail_after(20):
        async with served() as (url, up, guard, _mod):
            with pytest.raises(openai.BadRequestError) as caught:
                await ask(url, "closed", "please block me now")
            body = caught.value.body
            assert isinstance(body, dict) and body["code"] == "guardrail_blocked" and body["guardrail"] == "ext"
            assert "policy 7" not in str(body), "the check's reason is logged, not shown"
            assert up.calls == 0
            sent = guard.seen[-1].body
            assert sent["guardrail"] == "ext" and sent["mode"] == "pre_call" and sent["texts"] == ["please block me now"]
            assert sent["request"]["group"] == "closed" and sent["request"]["op"] == "chat"
            assert sent["request"]["model"] == "closed" and sent["request"]["id"]
            raw = json.dumps([s.body for s in guard.seen]) + json.dumps([s.headers for s in guard.seen])
            assert "sk-client" not in raw and "sk-upstream" not in raw, "no credential reaches the check"
            assert await ask(url, "closed", "well, mask me here") == "Answer 1 to: well, [X] here"
            assert up.chat_bodies()[-1]["messages"][0]["content"] == "well, [X] here"
            assert await ask(url, "closed", "fine") == "Answer 2 to: fine"
            assert len(guard.clients) == 3 and len(set(guard.clients)) == 1, "one pooled connection, kept alive"
            assert await ask(url, "logged", "block me") == "Answer 3 to: block me"  # action log: counted only
            async with httpx.AsyncClient(base_url=url) as http:
                metrics = (await http.get("/metrics")).text
    assert 'sidegate_guardrail_decisions_total{guardrail="ext",mode="pre_call",outcome="masked"} 1.0' in metrics
    assert 'sidegate_guardrail_decisions_total{guardrail="ext_log",mode="pre_call",outcome="logged"} 1.0' in metrics


@pytest.mark.parametrize("trouble", ["hang", "garbage", "crash"])
async def test_a_failing_check_fails_closed_with_503_or_open_through(trouble: str) -> None:
    with trio.fail_after(20):
        async with served() as (url, up, _guard, _mod):
            with pytest.raises(openai.InternalServerError) as caught:
                await ask(url, "closed", f"this will {trouble}")
            assert caught.value.status_code == 503
            body = caught.value.body
            assert isinstance(body, dict) and body["code"] == "guardrail_unavailable" and "'ext'" in body["message"]
            assert up.calls == 0
            assert await ask(url, "open", f"this will {trouble}") == f"Answer 1 to: this will {trouble}"
            async with httpx.AsyncClient(base_url=url) as http:
                metrics = (await http.get("/metrics")).text
    assert 'sidegate_guardrail_decisions_total{guardrail="ext",mode="pre_call",outcome="unavailable"} 1.0' in metrics
    assert 'guardrail="ext_open",mode="pre_call",outcome="failed_open"} 1.0' in metrics


async def test_a_post_call_http_guardrail_reads_the_answer_and_refuses_streams() -> None:
    with trio.fail_after(20):
        async with served() as (url, up, guard, _mod):
            with pytest.raises(openai.BadRequestError) as caught:
                await ask(url, "post", "block me")  # the answer echoes the prompt: the check blocks it
            assert isinstance(caught.value.body, dict) and caught.value.body["guardrail"] == "ext_post"
            assert guard.seen[-1].body["mode"] == "post_call"
            assert guard.seen[-1].body["texts"] == ["Answer 1 to: block me"]
            with pytest.raises(openai.BadRequestError) as stream:
                await ask(url, "post", "hi", stream=True)
            assert isinstance(stream.value.body, dict) and stream.value.body["code"] == "guardrail_unsupported"
            assert up.calls == 1


async def test_a_moderation_provider_flags_and_blocks() -> None:
    with trio.fail_after(20):
        async with served() as (url, up, _guard, mod):
            with pytest.raises(openai.BadRequestError) as caught:
                await ask(url, "moderated", "how to kill a process politely")
            assert isinstance(caught.value.body, dict) and caught.value.body["guardrail"] == "moder"
            assert up.calls == 0
            assert await ask(url, "moderated", "a kind word") == "Answer 1 to: a kind word"
            assert [s.body for s in mod.seen] == [
                {"input": ["how to kill a process politely"], "model": "omni-moderation-latest"},
                {"input": ["a kind word"], "model": "omni-moderation-latest"}]
            assert mod.seen[0].headers["authorization"] == "Bearer sk-mod-0002"


def test_external_guardrails_are_checked_by_the_compiler() -> None:
    spec = """\
version: 1
providers: {oa: {type: openai, api_key: "${K}"}, ant: {type: anthropic, api_key: "${K}"}}
guardrails:
  a: {kind: http, mode: during_call, url: "http://127.0.0.1:1/x"}
  b: {kind: moderation, provider: nope}
  c: {kind: moderation, provider: ant}
  d: {kind: http}
  e: {kind: http, url: "http://127.0.0.1:1/x", action: mask}
  f: {kind: moderation, provider: oa, url: "http://x"}
models: {fast: {guardrails: [a, b, c, d, e, f], targets: [{provider: oa, model: gpt-4o-mini}]}}
"""
    result = compile_text(spec, "g.yaml")
    found = sorted((d.code, d.pointer) for d in result.diagnostics if d.severity.value == "error")
    assert found == [("guardrails.mask-unsupported", "/guardrails/e/action"),
                     ("guardrails.mode-unsupported", "/guardrails/a/mode"),
                     ("guardrails.option-missing", "/guardrails/d"),
                     ("guardrails.option-unused", "/guardrails/f/url"),
                     ("guardrails.unknown-provider", "/guardrails/b/provider"),
                     ("guardrails.unknown-provider", "/guardrails/c/provider")]
