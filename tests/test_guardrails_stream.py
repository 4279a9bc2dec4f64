"""during_call guardrails end to end with the official `openai` and `anthropic` SDKs: a served
gateway in front of a fake upstream that streams its answer (`Answer N to: <prompt>`) in 6-character
deltas written in 37-byte pieces, so a blocked phrase arrives split across events and reads. The
stream ends at the phrase with an error event in the client's dialect (chat, Messages, Responses),
and nothing of the phrase or after it reaches the client; a blocking post_call guardrail runs as
during_call on a stream; `log` lets the stream through and counts; a blocked Responses stream is
not stored."""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.errors import GuardrailBlocked
from sidegate.runtime.guardrails.detect import Detector
from sidegate.runtime.guardrails.stream import Decision, StreamGuard
from sidegate.runtime.plan.guardrails import GuardAction, GuardKind, GuardMode, Guardrail
from tests.support.cache_fakes import CountingOpenAI
from tests.support.fake_base import open_fake
from tests.support.gateway import open_gateway
from tests.test_guardrails import oai
from tests.test_guardrails import served as serve_spec

SPEC = """\
version: 1
providers:
  oa: {{type: openai, base_url: "{url}", api_key: "${{GUARD_UPSTREAM_KEY}}"}}
  compat: {{type: openai-compatible, base_url: "{url}", api_key: "${{GUARD_UPSTREAM_KEY}}"}}
guardrails:
  nope: {{kind: keywords, mode: during_call, words: [forbidden word]}}
  late: {{kind: keywords, mode: post_call, words: [secret plan]}}
  watch: {{kind: keywords, mode: during_call, words: [falcon], action: log}}
  long: {{kind: max_prompt, mode: during_call, max_chars: 400}}
  masked: {{kind: pii, mode: post_call, action: mask, default_on: false}}
models:
  chat: {{guardrails: [nope, late, watch, long, masked], targets: [{{provider: oa, model: gpt-4o-mini}}]}}
  resp: {{guardrails: [nope], targets: [{{provider: compat, model: gpt-4o-mini}}]}}
  "claude-*": {{guardrails: [nope], targets: [{{provider: oa, model: gpt-4o-mini}}]}}
"""
BEFORE = "a long enough opening sentence to stream several events before the "
AFTER = " and this tail must never reach the client"


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARD_UPSTREAM_KEY", "sk-upstream-0001")


def served() -> AbstractAsyncContextManager[tuple[str, CountingOpenAI]]:
    return serve_spec(SPEC)


async def chat_stream(url: str, text: str, **kw: object) -> str:
    got = ""
    stream = await oai(url).chat.completions.create(model="chat", stream=True, messages=[
        {"role": "user", "content": text}], **kw)  # type: ignore[call-overload]
    async for chunk in stream:
        for choice in chunk.choices:
            got += choice.delta.content or ""
    return got


async def metrics(url: str) -> str:
    async with httpx.AsyncClient(base_url=url) as http:
        return (await http.get("/metrics")).text


async def test_a_chat_stream_is_cut_at_a_phrase_split_across_events() -> None:
    with trio.fail_after(20):
        async with served() as (url, up):
            got = ""
            with pytest.raises(openai.APIError) as caught:
                stream = await oai(url).chat.completions.create(model="chat", stream=True, messages=[
                    {"role": "user", "content": BEFORE + "forbidden word" + AFTER}])
                async for chunk in stream:
                    got += chunk.choices[0].delta.content or "" if chunk.choices else ""
            body = caught.value.body
            assert isinstance(body, dict) and body["code"] == "guardrail_blocked" and body["guardrail"] == "nope"
            assert "during_call" in body["message"] and "forbidden" not in body["message"]
            assert got and "Answer 1 to: a long".startswith(got[:19]), got
            assert "forbidden" not in got and "tail" not in got
            assert len(got) >= len("Answer 1 to: " + BEFORE) - len("forbidden word") - 6  # held back: the window
            assert up.calls == 1
            # the gateway keeps serving, and a clean stream passes whole
            assert await chat_stream(url, "all clear") == "Answer 2 to: all clear"
            text = await metrics(url)
    assert 'sidegate_guardrail_decisions_total{guardrail="nope",mode="during_call",outcome="blocked"} 1.0' in text
    assert 'sidegate_guardrail_decisions_total{guardrail="nope",mode="during_call",outcome="passed"} 1.0' in text


async def test_a_blocking_post_call_guardrail_runs_during_a_stream_and_log_passes() -> None:
    with trio.fail_after(20):
        async with served() as (url, _up):
            with pytest.raises(openai.APIError) as caught:
                await chat_stream(url, "the secret plan" + AFTER)
            assert isinstance(caught.value.body, dict) and caught.value.body["guardrail"] == "late"
            got = await chat_stream(url, "a falcon, and a falcon again")
            assert got == "Answer 2 to: a falcon, and a falcon again"  # action log: whole, unchanged
            with pytest.raises(openai.APIError) as over:  # max_prompt during_call: the answer's length
                await chat_stream(url, "x " * 300)
            assert isinstance(over.value.body, dict) and over.value.body["guardrail"] == "long"
            with pytest.raises(openai.BadRequestError) as refused:  # masking needs the whole answer
                await chat_stream(url, "hi", extra_body={"guardrails": ["masked"]})
            assert isinstance(refused.value.body, dict) and refused.value.body["code"] == "guardrail_unsupported"
            text = await metrics(url)
    assert 'sidegate_guardrail_decisions_total{guardrail="watch",mode="during_call",outcome="logged"} 1.0' in text


async def test_a_whole_answer_is_checked_by_during_call_guardrails_at_its_end() -> None:
    with trio.fail_after(20):
        async with served() as (url, _up):
            with pytest.raises(openai.BadRequestError) as caught:
                await oai(url).chat.completions.create(model="chat", messages=[
                    {"role": "user", "content": "a forbidden word"}])
            assert isinstance(caught.value.body, dict) and caught.value.body["guardrail"] == "nope"
            whole = await oai(url).chat.completions.create(model="chat", messages=[
                {"role": "user", "content": "a falcon"}])
            assert whole.choices[0].message.content == "Answer 2 to: a falcon"
            text = await metrics(url)
    assert 'sidegate_guardrail_decisions_total{guardrail="watch",mode="during_call",outcome="logged"} 1.0' in text


async def test_a_messages_stream_ends_with_anthropics_error_event() -> None:
    with trio.fail_after(20):
        async with served() as (url, _up):
            client = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)
            got = ""
            with pytest.raises(anthropic.APIStatusError) as caught:
                async with client.messages.stream(model="claude-x", max_tokens=100, messages=[
                        {"role": "user", "content": BEFORE + "forbidden word" + AFTER}]) as s:
                    async for delta in s.text_stream:
                        got += delta
            body = caught.value.body
            assert isinstance(body, dict) and body["type"] == "error"
            assert body["error"]["type"] == "invalid_request_error"
            assert body["error"]["code"] == "guardrail_blocked" and body["error"]["guardrail"] == "nope"
            assert got.startswith("Answer 1") and "forbidden" not in got and "tail" not in got
            async with client.messages.stream(model="claude-x", max_tokens=100, messages=[
                    {"role": "user", "content": "fine"}]) as s:
                assert await s.get_final_text() == "Answer 2 to: fine"


async def test_a_responses_stream_ends_with_an_error_event_and_is_not_stored() -> None:
    with trio.fail_after(20):
        async with served() as (url, _up):
            client = oai(url)
            events = []
            stream = await client.responses.create(model="resp", input=BEFORE + "forbidden word" + AFTER, stream=True)
            async for event in stream:
                events.append(event)
            kinds = [e.type for e in events]
            assert kinds[0] == "response.created" and kinds[-1] == "error", kinds
            assert "response.completed" not in kinds and "response.output_text.done" not in kinds
            last = events[-1]
            assert last.type == "error" and last.code == "guardrail_blocked"
            assert last.sequence_number == events[-2].sequence_number + 1
            text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
            assert text.startswith("Answer 1") and "forbidden" not in text
            rid = events[0].response.id  # type: ignore[union-attr]
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(rid)
            ok = await client.responses.create(model="resp", input="fine", stream=True)
            done = [e async for e in ok]
            assert done[-1].type == "response.completed"
            kept = await client.responses.retrieve(done[-1].response.id)
            assert kept.output_text == "Answer 2 to: fine"


async def test_a_phrase_at_the_very_end_is_caught_before_the_stream_completes() -> None:
    with trio.fail_after(20):
        async with served() as (url, _up):
            with pytest.raises(openai.APIError) as caught:
                await chat_stream(url, BEFORE + "forbidden word")
            assert isinstance(caught.value.body, dict) and caught.value.body["guardrail"] == "nope"
            client = oai(url)
            events = [e async for e in await client.responses.create(model="resp", input="a forbidden word",
                                                                       stream=True)]
            assert events[-1].type == "error" and "response.completed" not in [e.type for e in events]
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(events[0].response.id)  # type: ignore[union-attr]


def _guard(op: str, *rules: Guardrail) -> tuple[StreamGuard, list[bytes], list[list[Decision]]]:
    sent: list[bytes] = []
    recorded: list[list[Decision]] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    return StreamGuard(op, [Detector(r) for r in rules], send, recorded.append), sent, recorded


def _chunk(text: str) -> bytes:
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}) \
        + b"\n\n"


async def _play(guard: StreamGuard, raw: bytes, step: int) -> None:
    await guard({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for i in range(0, len(raw), step):
        await guard({"type": "http.response.body", "body": raw[i:i + step], "more_body": True})
    await guard({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _delivered(sent: list[bytes]) -> str:
    out = ""
    for block in b"".join(sent).split(b"\n\n"):
        if block.startswith(b"data: {\"choices"):
            out += orjson.loads(block[6:])["choices"][0]["delta"]["content"]
    return out


WORDS = Guardrail(name="w", kind=GuardKind.KEYWORDS, mode=GuardMode.DURING_CALL, action=GuardAction.BLOCK,
                  default_on=True, words=("project falcon",))


@pytest.mark.parametrize("step", [1, 7, 64, 10_000])
async def test_unit_every_split_is_caught_and_nothing_after_it_leaves(step: int) -> None:
    text = "x" * 50 + " the project falcon is here and after"
    raw = b"".join(_chunk(text[i:i + 3]) for i in range(0, len(text), 3))
    guard, sent, recorded = _guard("chat", WORDS)
    with pytest.raises(GuardrailBlocked):
        await _play(guard, raw, step)
    got = _delivered(sent)
    assert "falcon" not in got and text.startswith(got)
    assert len(got) >= len(text.split("project")[0]) - len("project falcon") - 3, "held back: one window at most"
    last = b"".join(sent).split(b"\n\n")[-2]
    assert orjson.loads(last[6:])["error"]["code"] == "guardrail_blocked", "one whole error event, last"
    assert recorded == [[("w", "during_call", "blocked", {"detail": "match"})]]


async def test_unit_a_word_that_goes_on_is_not_a_match_and_a_clean_stream_passes_whole() -> None:
    text = "the project falcons are fine, project falconry too"
    raw = b"".join(_chunk(text[i:i + len("the project falcon")]) for i in range(0, len(text), len("the project falcon")))
    guard, sent, recorded = _guard("chat", WORDS)
    await _play(guard, raw, 5)
    assert _delivered(sent) == text and b"".join(sent).endswith(b"data: [DONE]\n\n")
    assert recorded == [[("w", "during_call", "passed", {})]]


async def test_unit_a_long_stream_is_checked_in_linear_time() -> None:
    pii = Guardrail(name="p", kind=GuardKind.PII, mode=GuardMode.DURING_CALL, action=GuardAction.BLOCK,
                    default_on=True, entities=("email", "phone", "credit_card", "iban"))
    near = "1234 5678 a@b " * 3
    raw = b"".join(_chunk(near[i % len(near):] + "x" * 4) for i in range(20_000))
    for step in (4096, len(raw)):  # network-sized reads, and the whole stream in one (a cache replay)
        guard, sent, _ = _guard("chat", WORDS, pii)
        t0 = time.perf_counter()
        await _play(guard, raw, step)
        assert time.perf_counter() - t0 < 10
        assert len(_delivered(sent)) > 20_000 * 4


def test_a_during_call_guardrail_that_needs_the_whole_answer_is_refused_by_the_compiler() -> None:
    spec = """\
version: 1
providers: {oa: {type: openai, api_key: "${K}"}}
guardrails:
  m: {kind: pii, mode: during_call, action: mask}
  t: {kind: topics, mode: during_call, allowed: [billing]}
  ok: {kind: topics, mode: during_call, blocked: {w: [bomb]}}
models: {fast: {guardrails: [m, t, ok], targets: [{provider: oa, model: gpt-4o-mini}]}}
"""
    result = compile_text(spec, "g.yaml")
    found = sorted((d.code, d.pointer) for d in result.diagnostics if d.severity.value == "error")
    assert found == [("guardrails.mode-unsupported", "/guardrails/m/mode"),
                     ("guardrails.mode-unsupported", "/guardrails/t/mode")]


async def test_a_legacy_completions_stream_is_cut_too() -> None:
    with trio.fail_after(20):
        async with served() as (url, _up):
            got = ""
            with pytest.raises(openai.APIError) as caught:
                stream = await oai(url).completions.create(model="chat", prompt=BEFORE + "forbidden word" + AFTER,
                                                           stream=True)
                async for chunk in stream:
                    got += chunk.choices[0].text if chunk.choices else ""
            assert isinstance(caught.value.body, dict) and caught.value.body["guardrail"] == "nope"
            assert got.startswith("Answer 1") and "forbidden" not in got


async def test_a_relayed_openai_responses_stream_is_cut_with_the_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.fake_responses import FakeOpenAIResponses

    monkeypatch.setenv("GUARD_UPSTREAM_KEY", "sk-upstream")  # the key this fake takes
    spec = """\
version: 1
providers:
  oai: {{type: openai, base_url: "{url}", api_key: "${{GUARD_UPSTREAM_KEY}}"}}
guardrails:
  nope: {{kind: keywords, mode: during_call, words: [forbidden word]}}
models:
  relayed: {{guardrails: [nope], targets: [{{provider: oai, model: gpt-4o-2024-08-06}}]}}
"""
    with trio.fail_after(20):
        async with open_fake(FakeOpenAIResponses()) as up:
            plan = compile_text(spec.format(url=up.base_url), "g.yaml").plan
            assert plan is not None
            async with open_gateway(plan) as gw:
                client = oai(f"http://127.0.0.1:{gw.port}")
                events = [e async for e in await client.responses.create(
                    model="relayed", input="a forbidden word", stream=True)]
                fine = [e async for e in await client.responses.create(model="relayed", input="fine", stream=True)]
    kinds = [e.type for e in events]
    assert kinds[-1] == "error" and "response.completed" not in kinds and "response.output_text.done" not in kinds
    assert events[-1].code == "guardrail_blocked"  # type: ignore[union-attr]
    assert events[-1].sequence_number == events[-2].sequence_number + 1
    assert not any("forbidden" in str(e) for e in events[:-1])
    assert up.seen[-2].path == "/v1/responses"
    assert fine[-1].type == "response.completed"


async def test_a_native_anthropic_stream_relayed_whole_is_cut_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from sidegate.runtime.plan import Family
    from sidegate.runtime.plan.guardrails import GuardrailAttachment, Guardrails
    from tests.support.fake_anthropic import FakeAnthropic
    from tests.support.plans import group, native_provider, plan, target

    monkeypatch.setenv("ANT_KEY", "sk-ant-test")
    rule = replace(WORDS, words=("okay, let",))  # the fake's text "Okay, let's check." comes in two deltas
    with trio.fail_after(20):
        async with open_fake(FakeAnthropic()) as up:
            p = replace(plan([native_provider("ant", Family.ANTHROPIC, up.base_url, "ANT_KEY")],
                             [group("claude", target("ant", "ok"))]),
                        guardrails=Guardrails(rules=(rule,), groups=(GuardrailAttachment(owner="claude",
                                                                                        guardrails=("w",)),),
                                              keys=(), teams=()))
            async with open_gateway(p) as gw:
                client = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="x", max_retries=0)
                got = ""
                with pytest.raises(anthropic.APIStatusError) as caught:
                    async with client.messages.stream(model="claude", max_tokens=50, messages=[
                            {"role": "user", "content": "go"}]) as s:
                        async for delta in s.text_stream:
                            got += delta
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["guardrail"] == "w" and body["error"]["code"] == "guardrail_blocked"
    assert "Okay" not in got and "check" not in got
    assert up.seen and up.seen[-1].path == "/v1/messages"
