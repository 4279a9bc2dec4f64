"""The response cache in exact mode, end to end with the official `openai` and `anthropic` SDKs
against a served gateway in front of a counting fake upstream (`tests.support.cache_fakes`): a
repeated request is a hit the upstream never sees, streams replay the same text in both dialects,
teams never share entries, entries expire, errors and cut streams are never kept, the client's
opt-outs are honoured, hits are accounted (spend row, metrics) and purged by group."""

from __future__ import annotations

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
  oa: {{type: openai, base_url: "{url}", api_key: "${{CACHE_UPSTREAM_KEY}}"}}
models:
  fast: {{aliases: [fast-alias], targets: [{{provider: oa, model: gpt-4o-mini}}]}}
  "claude-*": {{targets: [{{provider: oa, model: gpt-4o-mini}}], cache: {{sampled: true}}}}
  fail: {{targets: [{{provider: oa, model: fail}}], retry: {{attempts: 1}}}}
  cut: {{targets: [{{provider: oa, model: cut}}], retry: {{attempts: 1}}}}
  slow: {{targets: [{{provider: oa, model: slow}}]}}
  shared: {{targets: [{{provider: oa, model: gpt-4o-mini}}], cache: {{scope: global}}}}
  brief: {{targets: [{{provider: oa, model: gpt-4o-mini}}], cache: {{ttl: 300ms}}}}
  small: {{targets: [{{provider: oa, model: gpt-4o-mini}}], cache: {{max_entry: 200B}}}}
  loose: {{targets: [{{provider: oa, model: gpt-4o-mini}}], cache: {{sampled: true}}}}
  live: {{targets: [{{provider: oa, model: gpt-4o-mini}}], cache: false}}
cache: {{ttl: 1h}}
{auth}
"""
AUTH = """\
auth:
  master_key: "${CACHE_MASTER}"
  keys:
    - {name: a, key: "${CACHE_KEY_A}", team: alpha}
    - {name: a2, key: "${CACHE_KEY_A2}", team: alpha, limits: {rpm: 3}}
    - {name: b, key: "${CACHE_KEY_B}", team: beta}
    - {name: solo, key: "${CACHE_KEY_SOLO}"}
teams: {alpha: {}, beta: {}}
"""
KEYS = {"CACHE_MASTER": "sk-master-0001", "CACHE_KEY_A": "sk-team-alpha-01", "CACHE_KEY_A2": "sk-team-alpha-02",
        "CACHE_KEY_B": "sk-team-beta-001", "CACHE_KEY_SOLO": "sk-solo-0000001", "CACHE_UPSTREAM_KEY": "sk-up"}
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@asynccontextmanager
async def served(monkeypatch: pytest.MonkeyPatch, auth: bool = False) -> AsyncIterator[tuple[str, CountingOpenAI]]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    async with open_fake(CountingOpenAI()) as up:
        result = compile_text(SPEC.format(url=up.base_url, auth=AUTH if auth else ""), "cache.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        async with open_gateway(result.plan) as gw:
            yield f"http://127.0.0.1:{gw.port}", up


def oai(url: str, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


async def chat(url: str, key: str = "unused", model: str = "fast", **kw: Any) -> tuple[str, str]:
    """(x-sidegate-cache, the answer's text)."""
    kw.setdefault("temperature", 0)
    r = await oai(url, key).chat.completions.with_raw_response.create(model=model, messages=ASK, **kw)
    return r.headers.get("x-sidegate-cache", ""), r.parse().choices[0].message.content or ""


async def stream_text(url: str, **kw: Any) -> tuple[str, str, list[Any]]:
    kw.setdefault("temperature", 0)
    async with oai(url).chat.completions.with_streaming_response.create(model="fast", messages=ASK, stream=True,
                                                                         **kw) as r:
        chunks = [c async for c in await r.parse()]
        header = r.headers.get("x-sidegate-cache", "")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return header, text, chunks


async def test_a_repeated_chat_request_is_a_hit_the_upstream_never_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(20):
        async with served(monkeypatch) as (url, up):
            first = await chat(url)
            again = await chat(url, user="someone-else", metadata={"x": "y"}, store=False)  # not in the key
            alias = await chat(url, model="fast-alias")  # the group, not the name asked for
            other = await chat(url, max_tokens=50)  # a parameter that changes the answer
    assert first == ("miss", "Answer 1 to: What is the capital of France?")
    assert again == ("hit", first[1]) and alias == ("hit", first[1])
    assert other == ("miss", "Answer 2 to: What is the capital of France?")
    assert up.calls == 2


async def test_opt_outs_headers_body_field_and_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(20):
        async with served(monkeypatch) as (url, up):
            assert (await chat(url))[0] == "miss"
            fresh = await chat(url, extra_body={"cache": {"no_cache": True}})
            replaced = await chat(url)  # no_cache still keeps its fresh answer
            header_no_cache = await chat(url, extra_headers={"Cache-Control": "no-cache"})
            unkept = await chat(url, extra_body={"cache": {"no_cache": True, "no_store": True}})
            still = await chat(url)
            sampled = [await chat(url, temperature=None), await chat(url, temperature=0.7)]
            loose = [await chat(url, model="loose", temperature=0.7) for _ in range(2)]
            live = [await chat(url, model="live") for _ in range(2)]
            with pytest.raises(openai.BadRequestError) as bad:
                await chat(url, extra_body={"cache": {"no_cache": "yes"}})
    assert fresh == ("bypass", "Answer 2 to: What is the capital of France?")
    assert replaced == ("hit", fresh[1])
    assert header_no_cache[0] == "bypass" and unkept[0] == "bypass"
    assert still == ("hit", header_no_cache[1]), "no_store must not replace the entry"
    assert [h for h, _ in sampled] == ["bypass", "bypass"], "temperature > 0 (or unset) is not cached by default"
    assert [h for h, _ in loose] == ["miss", "hit"] and loose[0][1] == loose[1][1]
    assert [h for h, _ in live] == ["", ""] and live[0][1] != live[1][1]
    assert "cache" in bad.value.message and bad.value.status_code == 400
    assert all("cache" not in b for b in up.chat_bodies()), "the cache field is sidegate's, never sent upstream"


async def test_stream_hits_replay_the_same_text_and_fill_whole_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    with trio.fail_after(20):
        async with served(monkeypatch) as (url, up):
            miss = await stream_text(url)
            hit = await stream_text(url)
            usage_hit = await stream_text(url, stream_options={"include_usage": True})
            whole = await chat(url)
            r = await oai(url).chat.completions.create(model="fast", messages=ASK, temperature=0, tools=tools,
                                                       stream=True)
            live_calls = [c async for c in r]
            cached = await oai(url).chat.completions.with_raw_response.create(model="fast", messages=ASK,
                                                                                temperature=0, tools=tools)
    assert miss[0] == "miss" and miss[1] == "Answer 1 to: What is the capital of France?"
    assert hit[:2] == ("hit", miss[1])
    assert hit[2][-1].choices[0].finish_reason == "stop" and all(c.usage is None for c in hit[2])
    assert usage_hit[0] == "hit" and usage_hit[2][-1].usage is not None
    assert usage_hit[2][-1].usage.total_tokens == 1500, "the upstream's usage is kept for a stream that hid it"
    assert whole == ("hit", miss[1]), "a whole request hits the entry a stream filled"
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments or "" for c in live_calls
                   if c.choices and c.choices[0].delta.tool_calls)
    message = cached.parse().choices[0].message
    assert cached.headers["x-sidegate-cache"] == "hit" and message.tool_calls is not None
    assert message.tool_calls[0].function.name == "lookup" and message.tool_calls[0].function.arguments == args
    assert cached.parse().choices[0].finish_reason == "tool_calls"
    assert up.calls == 2


async def test_anthropic_messages_whole_and_streamed_hits(monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(20):
        async with served(monkeypatch) as (url, up):
            client = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)
            # anthropic 2.x sends no temperature (Claude's default is 1): the group caches `sampled` requests
            ask: Any = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": ASK}
            first = await client.messages.with_raw_response.create(**ask)
            second = await client.messages.with_raw_response.create(**ask)
            async with client.messages.stream(**ask) as s:
                streamed = "".join([t async for t in s.text_stream])
                final = await s.get_final_message()
            async with client.messages.stream(**{**ask, "max_tokens": 99}) as s:
                fresh = "".join([t async for t in s.text_stream])
            refilled = await client.messages.with_raw_response.create(**{**ask, "max_tokens": 99})
    text = (await first.parse()).content[0].text  # type: ignore[union-attr]
    assert first.headers["x-sidegate-cache"] == "miss" and second.headers["x-sidegate-cache"] == "hit"
    assert (await second.parse()).content[0].text == text  # type: ignore[union-attr]
    assert streamed == text and final.stop_reason == "end_turn" and final.usage.output_tokens == 500
    assert fresh == "Answer 2 to: What is the capital of France?"
    assert refilled.headers["x-sidegate-cache"] == "hit"
    assert (await refilled.parse()).content[0].text == fresh  # type: ignore[union-attr]
    assert up.calls == 2


async def test_two_teams_never_share_entries_even_racing(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = {k: KEYS[f"CACHE_KEY_{k.upper()}"] for k in ("a", "a2", "b", "solo")}
    with trio.fail_after(20):
        async with served(monkeypatch, auth=True) as (url, up):
            answers: dict[str, tuple[str, str]] = {}

            async def ask(who: str) -> None:
                answers[who] = await chat(url, keys[who], model="slow")

            async with trio.open_nursery() as nursery:  # alpha and beta race the same request
                nursery.start_soon(ask, "a")
                nursery.start_soon(ask, "b")
                while up.arrived < 2:
                    await trio.sleep(0.01)
                up.release.set()
            again = {who: await chat(url, keys[who], model="slow") for who in ("a", "a2", "b", "solo")}
            shared = [await chat(url, keys[who], model="shared") for who in ("a", "b")]
    assert answers["a"][0] == answers["b"][0] == "miss" and answers["a"][1] != answers["b"][1]
    assert again["a"] == ("hit", answers["a"][1]) and again["a2"] == ("hit", answers["a"][1]), "one team, one scope"
    assert again["b"] == ("hit", answers["b"][1])
    assert again["solo"][0] == "miss", "a key without a team has its own scope"
    assert [h for h, _ in shared] == ["miss", "hit"], "scope: global shares across teams"


async def test_entries_expire_after_their_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(20):
        async with served(monkeypatch) as (url, up):
            first = await chat(url, model="brief")
            results = [await chat(url, model="brief")]
            while results[-1][0] == "hit":  # until the 300 ms TTL is over (the deadline above bounds it)
                await trio.sleep(0.05)
                results.append(await chat(url, model="brief"))
    assert first[0] == "miss" and results[0] == ("hit", first[1])
    assert results[-1][0] == "miss" and results[-1][1] != first[1]
    assert up.calls == 2


async def test_errors_cut_streams_and_large_answers_are_never_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(20):
        async with served(monkeypatch) as (url, up):
            for _ in range(2):
                with pytest.raises(openai.InternalServerError):
                    await chat(url, model="fail")
            cut = []
            for _ in range(2):
                with pytest.raises(openai.APIError):
                    async for _chunk in await oai(url).chat.completions.create(model="cut", messages=ASK,
                                                                                temperature=0, stream=True):
                        pass
                cut.append(up.calls)
            small = [await chat(url, model="small") for _ in range(2)]
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"{url}/metrics")).text
    assert [b["model"] for b in up.chat_bodies()].count("fail") == 2, "an upstream error is not kept"
    assert cut == [1, 2], "a stream cut midway is not kept: the second one reaches the upstream"
    assert [h for h, _ in small] == ["miss", "miss"] and small[0][1] != small[1][1]
    assert 'sidegate_cache_store_skipped_total{reason="incomplete"} 2.0' in metrics
    assert 'sidegate_cache_store_skipped_total{reason="too_large"} 2.0' in metrics


async def test_hits_are_accounted_limits_count_them_and_purge_by_group(monkeypatch: pytest.MonkeyPatch) -> None:
    master = {"Authorization": f"Bearer {KEYS['CACHE_MASTER']}"}
    with trio.fail_after(20):
        async with served(monkeypatch, auth=True) as (url, _):
            key = KEYS["CACHE_KEY_A2"]  # rpm 3
            results = [await chat(url, key) for _ in range(3)]
            with pytest.raises(openai.RateLimitError):
                await chat(url, key)  # a hit is still a request
            await chat(url, KEYS["CACHE_KEY_A"], model="shared")
            async with httpx.AsyncClient(base_url=url) as http:
                refused = await http.post("/cache/purge", json={"model": "fast"},
                                          headers={"Authorization": f"Bearer {key}"})
                unknown = await http.post("/cache/purge", json={"model": "nope"}, headers=master)
                purged = await http.post("/cache/purge", json={"model": "fast-alias"}, headers=master)
                after = await chat(url, KEYS["CACHE_KEY_A"])
                other = await chat(url, KEYS["CACHE_KEY_A"], model="shared")
                rows: list[dict[str, Any]] = []
                with trio.fail_after(10):
                    while len(rows) < 6:
                        rows = (await http.get("/spend/logs", headers=master)).json()["data"]
                        await trio.sleep(0.05)
                metrics = (await http.get("/metrics")).text
    assert [h for h, _ in results] == ["miss", "hit", "hit"]
    assert refused.status_code == 403 and unknown.status_code == 400
    assert purged.json() == {"purged": 1, "model": "fast"}
    assert after[0] == "miss" and other[0] == "hit", "a purge by group leaves the other groups"
    hits = [r for r in rows if r["cache_hit"]]
    assert len(hits) == 3 and all(r["cost"] == 0 and r["prompt_tokens"] == 0 for r in hits)
    paid = next(r for r in rows if not r["cache_hit"] and r["model"] == "fast")
    assert paid["cost"] > 0 and all(r["saved_cost"] == pytest.approx(paid["cost"]) for r in hits)
    assert 'sidegate_cache_requests_total{model="fast",result="hit"} 2.0' in metrics
    assert 'sidegate_cache_requests_total{model="fast",result="miss"} 2.0' in metrics
    assert "sidegate_cache_memory_bytes" in metrics and 'sidegate_cache_evictions_total{reason="size"} 0.0' in metrics


async def test_embeddings_and_legacy_completions_are_cached_too(monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(20):
        async with served(monkeypatch) as (url, up):
            client = oai(url)
            vectors = []
            for _ in range(2):
                r = await client.embeddings.with_raw_response.create(model="fast", input="hello")
                vectors.append((r.headers["x-sidegate-cache"], r.parse().data[0].embedding))
            texts = []
            for stream in (False, True, False):
                if stream:
                    async with client.completions.with_streaming_response.create(
                            model="fast", prompt="Say hi", temperature=0, stream=True) as s:
                        chunks = [c async for c in await s.parse()]
                        texts.append((s.headers["x-sidegate-cache"], "".join(c.choices[0].text for c in chunks
                                                                             if c.choices)))
                else:
                    r2 = await client.completions.with_raw_response.create(model="fast", prompt="Say hi", temperature=0)
                    texts.append((r2.headers["x-sidegate-cache"], r2.parse().choices[0].text))
    assert [h for h, _ in vectors] == ["miss", "hit"] and vectors[0][1] == vectors[1][1]
    assert up.embedding_calls == 1
    assert [h for h, _ in texts] == ["miss", "hit", "hit"] and len({t for _, t in texts}) == 1
    assert up.calls == 1
