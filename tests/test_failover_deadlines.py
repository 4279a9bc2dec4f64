"""Per-attempt deadlines: a hung upstream costs `first_byte` (by default the group's deadline shared
among its attempts), a stream gone quiet costs `idle`, and the next attempt starts at once, so
failover works inside the request's deadline. Scripted under MockClock for exact times, and with
the openai SDK against socket-level upstreams that hang or stall."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import openai
import pytest
import trio
import trio.testing

from sidegate.runtime.plan import Provider, RetryOn, RetryPolicy, Strategy
from tests.support.fault_upstream import Act, open_fault_upstream, openai_events
from tests.support.gateway import open_gateway
from tests.support.plans import group, openai_provider, plan, target
from tests.support.scripted import Reply, ScriptedTransport, asgi_call, make_app

CHAT = {"model": "main", "messages": [{"role": "user", "content": "hi"}]}
ASK: Any = [{"role": "user", "content": "hi"}]
RETRY = RetryPolicy(attempts=2, backoff=1.0, max_backoff=5.0, on=tuple(RetryOn))


def tiers(a: Provider, b: Provider, timeout: float = 10.0, retry: RetryPolicy = RETRY):  # type: ignore[no-untyped-def]
    return plan([a, b], [group("main", target(a.name, "m", tier=0), target(b.name, "m", tier=1), timeout=timeout,
                               retry=retry, strategy=Strategy.PRIORITY)])


@pytest.mark.parametrize(("first_byte", "served_at"), [(None, 5.0 + 0.3), (1.0, 1.0 + 0.3)])
async def test_hung_tier_0_is_left_after_first_byte_and_tier_1_serves(
    autojump_clock: trio.testing.MockClock, first_byte: float | None, served_at: float,
) -> None:
    a = replace(openai_provider("a", "http://a.test/v1"), first_byte_timeout=first_byte)
    t = ScriptedTransport({"a.test": lambda r: Reply(delay=1e6), "b.test": lambda r: Reply(delay=0.3)})
    app = make_app(tiers(a, openai_provider("b", "http://b.test/v1")), t)
    start = trio.current_time()
    status, headers, _ = await asgi_call(app, CHAT)
    assert status == 200 and headers["x-sidegate-deployment"] == "b/m" and headers["x-sidegate-attempts"] == "2"
    assert trio.current_time() - start == pytest.approx(served_at), "no backoff after a timed-out attempt"
    assert t.cancelled == ["a.test"]
    breaker = app.runtime.deployments["main"][0].state.breaker
    assert breaker.last_error_kind is not None and breaker.last_error_kind.value == "timeout"
    assert breaker.last_error is not None and "first_byte" in breaker.last_error


async def test_every_attempt_hanging_is_504_at_the_request_deadline(autojump_clock: trio.testing.MockClock) -> None:
    t = ScriptedTransport({"a.test": lambda r: Reply(delay=1e6), "b.test": lambda r: Reply(delay=1e6)})
    app = make_app(tiers(openai_provider("a", "http://a.test/v1"), openai_provider("b", "http://b.test/v1"),
                         retry=replace(RETRY, attempts=3)), t)
    start = trio.current_time()
    status, _, body = await asgi_call(app, CHAT)
    assert status == 504 and trio.current_time() - start == pytest.approx(10.0)
    assert t.count("a.test") + t.count("b.test") == 3, "three attempts of 10/3 s each"
    assert json.loads(body)["error"]["code"] == "gateway_timeout"


async def test_the_deadline_is_shared_with_the_fallback_groups(autojump_clock: trio.testing.MockClock) -> None:
    once = replace(RETRY, attempts=1)
    p = plan([openai_provider("a", "http://a.test/v1"), openai_provider("b", "http://b.test/v1")],
             [group("main", target("a", "m"), timeout=10.0, retry=once, fallbacks=("backup",)),
              group("backup", target("b", "m"), retry=once)])
    t = ScriptedTransport({"a.test": lambda r: Reply(delay=1e6), "b.test": lambda r: Reply(delay=0.3)})
    start = trio.current_time()
    status, headers, _ = await asgi_call(make_app(p, t), CHAT)
    assert status == 200 and headers["x-sidegate-deployment"] == "b/m"
    assert trio.current_time() - start == pytest.approx(5.0 + 0.3), "half the deadline each, not all on a"


async def test_the_last_planned_attempt_gets_all_that_is_left(autojump_clock: trio.testing.MockClock) -> None:
    from tests.support.scripted import error

    hits = {"a": 0}

    def a(_: Any) -> Reply:
        hits["a"] += 1
        return Reply(error(500)) if hits["a"] == 1 else Reply(delay=8.0)  # a slow but good answer

    p = plan([openai_provider("a", "http://a.test/v1")], [group("main", target("a", "m"), timeout=10.0,
                                                                retry=replace(RETRY, backoff=0.5, max_backoff=0.5))])
    status, headers, _ = await asgi_call(make_app(p, ScriptedTransport({"a.test": a})), CHAT)
    assert status == 200 and headers["x-sidegate-attempts"] == "2", "not cut at 10/2 s: nothing is left to try"


async def test_a_started_stream_is_not_cut_by_the_default_deadlines(autojump_clock: trio.testing.MockClock) -> None:
    from tests.support.scripted import sse

    # 10 s deadline, 2 attempts: the default first_byte is 5 s, yet a 6 s pause is fine once the
    # client has bytes (nothing could fail over any more; the request deadline still rules).
    events = [sse("a")[0], sse("a")[-1]]
    t = ScriptedTransport({"a.test": lambda r: Reply(events=events, gap=6.0), "b.test": lambda r: Reply()})
    app = make_app(tiers(openai_provider("a", "http://a.test/v1"), openai_provider("b", "http://b.test/v1")), t)
    status, headers, body = await asgi_call(app, {**CHAT, "stream": True})
    assert status == 200 and headers["x-sidegate-deployment"] == "a/m" and body.endswith(b"data: [DONE]\n\n")
    assert b'"error"' not in body and t.count("b.test") == 0


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "sk-up")


def sdk(gw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="k", max_retries=0)


async def test_hanging_tier_0_is_served_by_tier_1_within_first_byte_plus_its_latency() -> None:
    with trio.fail_after(30):
        async with open_fault_upstream(lambda n, _: Act(hang=True)) as hung, \
                open_fault_upstream(lambda n, _: Act(delay=0.2)) as healthy:
            a = replace(openai_provider("a", hung.base_url, "UP_KEY"), first_byte_timeout=0.5)
            async with open_gateway(tiers(a, openai_provider("b", healthy.base_url, "UP_KEY"))) as gw:
                t0 = trio.current_time()
                r = await sdk(gw).chat.completions.with_raw_response.create(model="main", messages=ASK)
                elapsed = trio.current_time() - t0
                await hung.wait_for(lambda: hung.closed == 1)  # the abandoned connection is closed, not leaked
    assert r.parse().choices[0].message.content == "Hi there!" and r.headers["x-sidegate-deployment"] == "b/m"
    assert len(hung.hits) == 1 and len(healthy.hits) == 1
    assert 0.5 + 0.2 <= elapsed < 0.5 + 0.2 + 2.0, "first_byte + tier 1's latency (old: 504 at the deadline)"


async def test_stream_idle_before_its_first_event_fails_over() -> None:
    partial = [b'data: {"id": "chatcmpl-1", "obj']  # the upstream started an event and went quiet
    with trio.fail_after(30):
        async with open_fault_upstream(lambda n, _: Act(events=partial, stall_after=1)) as quiet, \
                open_fault_upstream(lambda n, _: Act(events=openai_events(["from", " tier", " one"]))) as healthy:
            a = replace(openai_provider("a", quiet.base_url, "UP_KEY"), first_byte_timeout=8.0, idle_timeout=0.4)
            async with open_gateway(tiers(a, openai_provider("b", healthy.base_url, "UP_KEY"))) as gw:
                t0 = trio.current_time()
                stream = await sdk(gw).chat.completions.create(model="main", messages=ASK, stream=True)
                text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
                elapsed = trio.current_time() - t0
    assert text == "from tier one" and len(quiet.hits) == 1
    assert elapsed < 8.0, "left after idle, not first_byte"


async def test_stream_idle_after_it_started_ends_with_a_timeout_error_event() -> None:
    events = openai_events(["one", " two", " three"])
    with trio.fail_after(30):
        async with open_fault_upstream(lambda n, _: Act(events=events, stall_after=2)) as quiet, \
                open_fault_upstream(lambda n, _: Act()) as other:
            a = replace(openai_provider("a", quiet.base_url, "UP_KEY"), idle_timeout=0.4)
            async with open_gateway(tiers(a, openai_provider("b", other.base_url, "UP_KEY"))) as gw:
                stream = await sdk(gw).chat.completions.create(model="main", messages=ASK, stream=True)
                got = ""
                with pytest.raises(openai.APIError) as info:
                    async for chunk in stream:
                        got += "".join(c.delta.content or "" for c in chunk.choices)
    assert got == "one" and "idle" in info.value.message
    assert len(other.hits) == 0, "nothing fails over once the client has bytes"
