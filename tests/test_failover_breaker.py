"""The breaker as specified: outcomes over a sliding window (successes do not reset the count), an
error rate with a minimum volume, 429s counted apart, a group's last available deployment kept in
(a lone deployment never cools down unless `keep_last: false`), state and last error in
`/health/deployments` and the metrics. Scripted upstreams under MockClock, plus the issue's lone
deployment case end to end with the openai SDK."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import openai
import pytest
import trio
import trio.testing

from sidegate.runtime.plan import CooldownPolicy, RetryOn, RetryPolicy, Strategy
from sidegate.runtime.routing.breaker import Breaker, Circuit, FailureKind
from tests.support.fault_upstream import Act, open_fault_upstream, openai_error
from tests.support.gateway import open_gateway
from tests.support.plans import group, openai_provider, plan, target
from tests.support.scripted import Reply, ScriptedTransport, asgi_call, error, make_app

CHAT = {"model": "main", "messages": [{"role": "user", "content": "hi"}]}
ONCE = RetryPolicy(attempts=1, backoff=0.0, max_backoff=0.0, on=tuple(RetryOn))
TWICE = RetryPolicy(attempts=2, backoff=0.2, max_backoff=5.0, on=tuple(RetryOn))
COOL = CooldownPolicy(failures=3, window=60.0, duration=30.0, error_rate=None, min_requests=10)


def pair(cooldown: CooldownPolicy, retry: RetryPolicy = ONCE):  # type: ignore[no-untyped-def]
    """`a` (tier 0, always chosen while it is in) and `b` (tier 1)."""
    providers = [openai_provider("a", "http://a.test/v1"), openai_provider("b", "http://b.test/v1")]
    return plan(providers, [group("main", target("a", "m", tier=0), target("b", "m", tier=1), retry=retry,
                                  cooldown=cooldown, strategy=Strategy.PRIORITY)])


def storm() -> ScriptedTransport:
    """`a` fails every other request (a 50% 5xx storm); `b` is healthy."""
    seen = {"a": 0}

    def a(_: Any) -> Reply:
        seen["a"] += 1
        return Reply(error(500)) if seen["a"] % 2 else Reply()

    return ScriptedTransport({"a.test": a, "b.test": lambda r: Reply()})


@pytest.mark.parametrize(("rate", "opens_at"), [(0.5, 11), (0.4, 11), (0.6, None)])
async def test_a_50_percent_storm_opens_the_breaker_per_the_configured_rate(
    autojump_clock: trio.testing.MockClock, rate: float, opens_at: int | None,
) -> None:
    policy = replace(COOL, failures=1000, error_rate=rate, min_requests=10)
    t = storm()
    app = make_app(pair(policy), t)
    breaker = app.runtime.deployments["main"][0].state.breaker
    for _ in range(40):
        await asgi_call(app, CHAT)
        await trio.sleep(0.1)
    if opens_at is None:
        assert breaker.circuit is Circuit.CLOSED and t.count("a.test") == 40, "50% < 60%: never opened"
    else:
        # odd requests fail; the 9th is under min_requests=10 and the 10th a success, so the 11th
        # (6 failed of 11, 55%) is the first failure judged with the minimum volume
        assert breaker.opened_total == 1 and t.count("a.test") == opens_at
        assert t.count("b.test") == 40 - opens_at


async def test_successes_do_not_reset_the_failure_count(autojump_clock: trio.testing.MockClock) -> None:
    t = storm()  # fail, ok, fail, ok, fail: the third failure within the window opens it
    app = make_app(pair(COOL), t)
    for _ in range(10):
        await asgi_call(app, CHAT)
    assert t.count("a.test") == 5 and app.runtime.deployments["main"][0].state.breaker.circuit is Circuit.OPEN


async def test_failures_spread_wider_than_the_window_do_not_open(autojump_clock: trio.testing.MockClock) -> None:
    t = ScriptedTransport({"a.test": lambda r: Reply(error(500)), "b.test": lambda r: Reply()})
    app = make_app(pair(COOL), t)
    for _ in range(6):
        await asgi_call(app, CHAT)
        await trio.sleep(31.0)  # two failures at most within any 60 s
    assert t.count("a.test") == 6 and app.runtime.deployments["main"][0].state.breaker.opened_total == 0


async def test_429s_are_counted_apart_from_5xx(autojump_clock: trio.testing.MockClock) -> None:
    b = Breaker()
    for kind in (FailureKind.RATE_LIMIT, FailureKind.SERVER_ERROR, FailureKind.RATE_LIMIT, FailureKind.TIMEOUT):
        b.failure(trio.current_time(), kind, COOL)
    assert b.circuit is Circuit.CLOSED, "2 429s and 2 other failures: neither kind reached 3"
    b.failure(trio.current_time(), FailureKind.RATE_LIMIT, COOL)
    assert b.circuit is Circuit.OPEN


async def test_a_lone_deployment_never_cools_down_unless_asked(autojump_clock: trio.testing.MockClock) -> None:
    for keep_last, expected in ((True, [502] * 8), (False, [502, 502, 502, 503, 503, 503, 503, 503])):
        t = ScriptedTransport({"a.test": lambda r: Reply(error(500))})
        p = plan([openai_provider("a", "http://a.test/v1")],
                 [group("main", target("a", "m"), retry=ONCE, cooldown=replace(COOL, keep_last=keep_last))])
        app = make_app(p, t)
        statuses = []
        for _ in range(8):
            status, _, body = await asgi_call(app, CHAT)
            statuses.append(status)
        assert statuses == expected
        if not keep_last:
            message = json.loads(body)["error"]["message"]
            assert "circuit breaker open" in message and "scripted 500" in message, "503 names the cause"


async def test_half_open_probe_closes_and_the_report_keeps_the_last_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    up = {"a": False}
    t = ScriptedTransport({"a.test": lambda r: Reply() if up["a"] else Reply(error(500)), "b.test": lambda r: Reply()})
    app = make_app(pair(COOL), t)
    for _ in range(5):
        await asgi_call(app, CHAT)
    _, _, body = await asgi_call(app, {}, path="/health/deployments", method="GET")
    a = {d["deployment"]: d for d in json.loads(body)["deployments"]}["a/m"]
    assert a["state"] == "open" and a["opened"] == 1 and a["failures"] == 3
    assert a["last_error"] == "upstream returned HTTP 500: scripted 500" and a["last_error_kind"] == "5xx"
    _, _, metrics = await asgi_call(app, {}, path="/metrics", method="GET")
    assert b'sidegate_deployment_failures{deployment="a/m",model="main"} 3.0' in metrics
    assert b'sidegate_deployment_last_error_timestamp_seconds{deployment="a/m",kind="5xx",model="main"}' in metrics
    await trio.sleep(COOL.duration)
    _, _, body = await asgi_call(app, {}, path="/health/deployments", method="GET")
    assert {d["deployment"]: d for d in json.loads(body)["deployments"]}["a/m"]["state"] == "half_open"
    up["a"] = True
    _, headers, _ = await asgi_call(app, CHAT)
    assert headers["x-sidegate-deployment"] == "a/m", "the probe went to a"
    assert app.runtime.deployments["main"][0].state.breaker.circuit is Circuit.CLOSED


async def test_two_failed_requests_do_not_take_a_lone_deployment_out() -> None:
    """The issue's case: two client requests whose upstream answered 500 on every attempt, then a
    healthy upstream: the next request is served (it used to get 503 for 30 s)."""
    def script(n: int, _: Any) -> Act:
        return Act(status=500, body=openai_error("The server had an error", "server_error", None)) if n <= 4 else Act()

    ask: Any = [{"role": "user", "content": "x"}]
    with trio.fail_after(30):
        async with open_fault_upstream(script) as up:
            p = plan([openai_provider("up", up.base_url, "UP_KEY")],
                     [group("m", target("up", "x"), retry=TWICE, cooldown=COOL)])
            async with open_gateway(p) as gw:
                client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="k", max_retries=0)
                failed = []
                for _ in range(2):
                    with pytest.raises(openai.APIStatusError) as info:
                        await client.chat.completions.create(model="m", messages=ask)
                    failed.append(info.value)
                served = await client.chat.completions.with_raw_response.create(model="m", messages=ask)
    assert [e.status_code for e in failed] == [502, 502]
    assert all("The server had an error" in e.message for e in failed), "the upstream's cause, not 'cooling down'"
    assert served.http_response.status_code == 200 and served.parse().choices[0].message.content == "Hi there!"
    assert served.headers["x-sidegate-attempts"] == "1" and len(up.hits) == 5


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "sk-up")
