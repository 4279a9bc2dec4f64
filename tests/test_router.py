"""The router end to end under Trio's MockClock (autojump): retries, cooldown and half-open probes,
all-down 503s, Retry-After, fallbacks (ordinary, context-window, content-policy), stream failover
before the first byte, hedging. Upstreams are scripted behind the transport seam; requests go
straight into the ASGI app, so the clock can jump over backoffs and cooldowns."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import trio
import trio.testing

from sidegate.runtime.plan import CooldownPolicy, RetryOn, RetryPolicy, Strategy
from sidegate.runtime.routing.breaker import Circuit
from tests.support.plans import group, openai_provider, plan, target
from tests.support.scripted import Reply, ScriptedTransport, asgi_call, error, make_app, sse

CHAT = {"model": "main", "messages": [{"role": "user", "content": "hi"}]}
RETRY = RetryPolicy(attempts=2, backoff=0.2, max_backoff=5.0, on=tuple(RetryOn))
COOL = CooldownPolicy(failures=3, window=60.0, duration=30.0, error_rate=None, min_requests=10)


def two(**kw):  # type: ignore[no-untyped-def]
    providers = [openai_provider("a", "http://a.test/v1"), openai_provider("b", "http://b.test/v1")]
    groups = kw.pop("groups", None) or [
        group("main", target("a", "m"), target("b", "m"), retry=kw.pop("retry", RETRY), cooldown=COOL, **kw)
    ]
    return plan(providers, groups)


def ok() -> Reply:
    return Reply()


async def test_one_failing_upstream_all_requests_succeed_cooled_then_probed_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    healthy = {"a": False}
    t = ScriptedTransport({"a.test": lambda r: ok() if healthy["a"] else Reply(error(500)), "b.test": lambda r: ok()})
    app = make_app(two(), t)
    statuses = [(await asgi_call(app, CHAT))[0] for _ in range(100)]
    assert statuses == [200] * 100
    assert t.count("a.test") == COOL.failures, "cooled down after N failures, then left alone"
    dep_a = app.runtime.deployments["main"][0]
    assert dep_a.state.breaker.circuit is Circuit.OPEN
    await trio.sleep(COOL.duration + 1)
    healthy["a"] = True
    for _ in range(40):
        assert (await asgi_call(app, CHAT))[0] == 200
    assert dep_a.state.breaker.circuit is Circuit.CLOSED, "the half-open probe succeeded"
    assert t.count("a.test") > COOL.failures + 1


async def test_failed_half_open_probe_reopens(autojump_clock: trio.testing.MockClock) -> None:
    t = ScriptedTransport({"a.test": lambda r: Reply(error(500)), "b.test": lambda r: ok()})
    app = make_app(two(), t)
    for _ in range(20):
        await asgi_call(app, CHAT)
    before = t.count("a.test")
    await trio.sleep(COOL.duration + 1)
    for _ in range(20):
        assert (await asgi_call(app, CHAT))[0] == 200
    assert t.count("a.test") == before + 1, "exactly one probe request while half-open"
    assert app.runtime.deployments["main"][0].state.breaker.circuit is Circuit.OPEN


async def test_all_failing_gives_503_with_retry_after_and_cause_when_the_last_may_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t = ScriptedTransport({"a.test": lambda r: Reply(error(500)), "b.test": lambda r: Reply(error(503))})
    cool = replace(COOL, keep_last=False)
    app = make_app(two(groups=[group("main", target("a", "m"), target("b", "m"), retry=RETRY, cooldown=cool,
                                     timeout=10.0)]), t)
    results = []
    for _ in range(6):
        start = trio.current_time()
        status, headers, body = await asgi_call(app, CHAT)
        assert trio.current_time() - start < 10
        results.append((status, headers.get("retry-after"), json.loads(body)["error"]["message"]))
    assert results[0][0] == 502
    status, retry_after, message = results[-1]
    assert status == 503 and retry_after is not None and 1 <= int(retry_after) <= 30
    assert "circuit breaker open" in message and "scripted 50" in message, "the cause is named"


async def test_the_last_available_deployment_is_kept_in_and_its_errors_reach_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t = ScriptedTransport({"a.test": lambda r: Reply(error(500)), "b.test": lambda r: Reply(error(503))})
    app = make_app(two(timeout=10.0), t)
    statuses = [(await asgi_call(app, CHAT))[0] for _ in range(10)]
    assert statuses == [502] * 10, "never a 503: b is the last one in, and its own 503 is relayed as 502"
    circuits = [d.state.breaker.circuit for d in app.runtime.deployments["main"]]
    assert sorted(c.name for c in circuits) == ["CLOSED", "OPEN"]


async def test_429_retry_after_is_honoured(autojump_clock: trio.testing.MockClock) -> None:
    t = ScriptedTransport({
        "a.test": lambda r: Reply(error(429, headers={"retry-after": "2"})) if trio.current_time() < 1 else ok(),
        "b.test": lambda r: ok(),
    })
    p = two(groups=[group("main", target("a", "m", weight=1000.0), target("b", "m"), retry=RETRY, cooldown=COOL)])
    app = make_app(p, t)
    status, headers, _ = await asgi_call(app, CHAT)
    assert status == 200 and headers["x-sidegate-deployment"] == "b/m" and headers["x-sidegate-attempts"] == "2"
    assert t.count("a.test") == 1
    await trio.sleep(1.0)
    for _ in range(5):
        await asgi_call(app, CHAT)
    assert t.count("a.test") == 1, "not used again before its Retry-After passed"
    await trio.sleep(1.5)
    _, headers, _ = await asgi_call(app, CHAT)
    assert headers["x-sidegate-deployment"] == "a/m"


async def test_fallback_chain_in_order(autojump_clock: trio.testing.MockClock) -> None:
    providers = [openai_provider(n, f"http://{n}.test/v1") for n in ("a", "b", "c")]
    p = plan(providers, [
        group("main", target("a", "m"), retry=RETRY, cooldown=COOL, fallbacks=("second", "third")),
        group("second", target("b", "m"), retry=RETRY, cooldown=COOL),
        group("third", target("c", "m"), retry=RETRY, cooldown=COOL),
    ])
    t = ScriptedTransport({"a.test": lambda r: Reply(error(500)), "b.test": lambda r: Reply(error(502)),
                           "c.test": lambda r: ok()})
    status, headers, _ = await asgi_call(make_app(p, t), CHAT)
    assert status == 200 and headers["x-sidegate-deployment"] == "c/m"
    assert [h for h, _ in t.calls] == ["a.test", "a.test", "b.test", "b.test", "c.test"]


async def test_client_errors_are_not_retried_nor_fallen_back(autojump_clock: trio.testing.MockClock) -> None:
    t = ScriptedTransport({"a.test": lambda r: Reply(error(400)), "b.test": lambda r: ok()})
    p = two(groups=[group("main", target("a", "m"), retry=RETRY, cooldown=COOL, fallbacks=("other",)),
                    group("other", target("b", "m"), retry=RETRY, cooldown=COOL)])
    status, _, _ = await asgi_call(make_app(p, t), CHAT)
    assert status == 400 and t.count("b.test") == 0 and t.count("a.test") == 1


async def test_context_window_fallback_before_the_call_and_on_overflow_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t = ScriptedTransport({"a.test": lambda r: Reply(error(400, code="context_length_exceeded")),
                           "b.test": lambda r: ok()})
    p = two(groups=[
        group("main", target("a", "m", max_input_tokens=10), retry=RETRY, cooldown=COOL,
              context_window_fallbacks=("long",)),
        group("long", target("b", "m"), retry=RETRY, cooldown=COOL),
    ])
    app = make_app(p, t)
    big = {"model": "main", "messages": [{"role": "user", "content": "x " * 200}]}
    status, headers, _ = await asgi_call(app, big)
    assert status == 200 and headers["x-sidegate-deployment"] == "b/m" and t.count("a.test") == 0
    status, headers, _ = await asgi_call(app, CHAT)
    assert status == 200 and headers["x-sidegate-deployment"] == "b/m" and t.count("a.test") == 1


async def test_content_policy_fallback(autojump_clock: trio.testing.MockClock) -> None:
    t = ScriptedTransport({"a.test": lambda r: Reply(error(400, code="content_filter")), "b.test": lambda r: ok()})
    p = two(groups=[
        group("main", target("a", "m"), retry=RETRY, cooldown=COOL, content_policy_fallbacks=("lenient",)),
        group("lenient", target("b", "m"), retry=RETRY, cooldown=COOL),
    ])
    status, headers, _ = await asgi_call(make_app(p, t), CHAT)
    assert status == 200 and headers["x-sidegate-deployment"] == "b/m"


@pytest.mark.parametrize("break_after", [0, None])
async def test_stream_failing_before_first_byte_continues_on_fallback(
    autojump_clock: trio.testing.MockClock, break_after: int | None
) -> None:
    first = Reply(error(500)) if break_after is None else Reply(events=sse("never seen"), break_after=break_after)
    t = ScriptedTransport({"a.test": lambda r: first, "b.test": lambda r: Reply(events=sse("from backup"))})
    p = two(groups=[group("main", target("a", "m"), retry=RetryPolicy(attempts=1, backoff=0, max_backoff=0,
                                                                          on=tuple(RetryOn)),
                          cooldown=COOL, fallbacks=("backup",)),
                    group("backup", target("b", "m"), retry=RETRY, cooldown=COOL)])
    status, headers, body = await asgi_call(make_app(p, t), {**CHAT, "stream": True})
    events = [json.loads(e[6:]) for e in body.decode().split("\n\n") if e.startswith("data: {")]
    assert status == 200 and headers["x-sidegate-deployment"] == "b/m"
    assert "".join(c["delta"].get("content", "") for e in events for c in e["choices"]) == "frombackup"
    assert all("error" not in e for e in events) and body.endswith(b"data: [DONE]\n\n")


async def test_stream_failing_after_first_byte_ends_with_error_event(autojump_clock: trio.testing.MockClock) -> None:
    t = ScriptedTransport({"a.test": lambda r: Reply(events=sse("one two three"), break_after=2),
                           "b.test": lambda r: ok()})
    p = two(groups=[group("main", target("a", "m"), retry=RETRY, cooldown=COOL, fallbacks=("b",)),
                    group("b", target("b", "m"), retry=RETRY, cooldown=COOL)])
    status, _, body = await asgi_call(make_app(p, t), {**CHAT, "stream": True})
    last = json.loads(body.decode().strip().split("\n\n")[-1][6:])
    assert status == 200 and "error" in last and t.count("b.test") == 0


async def test_hedge_races_a_second_deployment_and_cancels_the_loser(autojump_clock: trio.testing.MockClock) -> None:
    t = ScriptedTransport({"a.test": lambda r: Reply(delay=10.0), "b.test": lambda r: Reply(delay=0.5)})
    p = two(groups=[group("main", target("a", "m", weight=1e9), target("b", "m"), retry=RETRY, cooldown=COOL,
                          hedge_after=1.0)])
    start = trio.current_time()
    status, headers, _ = await asgi_call(make_app(p, t), CHAT)
    assert status == 200 and headers["x-sidegate-deployment"] == "b/m"
    assert 1.4 <= trio.current_time() - start < 2 and t.cancelled == ["a.test"]
    assert headers["x-sidegate-attempts"] == "2"


async def test_deadline_bounds_retries_and_backoff(autojump_clock: trio.testing.MockClock) -> None:
    slow = RetryPolicy(attempts=10, backoff=3.0, max_backoff=30.0, on=tuple(RetryOn))
    t = ScriptedTransport({"a.test": lambda r: Reply(error(500)), "b.test": lambda r: Reply(error(500))})
    lenient = CooldownPolicy(failures=1000, window=60.0, duration=30.0, error_rate=None, min_requests=10)
    p = two(groups=[group("main", target("a", "m"), target("b", "m"), retry=slow, cooldown=lenient, timeout=5.0)])
    start = trio.current_time()
    status, _, body = await asgi_call(make_app(p, t), CHAT)
    assert status == 504 and trio.current_time() - start == pytest.approx(5.0)
    assert json.loads(body)["error"]["code"] == "gateway_timeout"


async def test_priority_uses_tier_zero_while_it_is_up(autojump_clock: trio.testing.MockClock) -> None:
    t = ScriptedTransport({"a.test": lambda r: ok(), "b.test": lambda r: ok()})
    p = two(groups=[group("main", target("a", "m", tier=1), target("b", "m", tier=0), retry=RETRY, cooldown=COOL,
                          strategy=Strategy.PRIORITY)])
    app = make_app(p, t)
    for _ in range(20):
        await asgi_call(app, CHAT)
    assert t.count("b.test") == 20 and t.count("a.test") == 0


async def test_health_report_and_metrics_show_breaker_state(autojump_clock: trio.testing.MockClock) -> None:
    t = ScriptedTransport({"a.test": lambda r: Reply(error(500)), "b.test": lambda r: ok()})
    app = make_app(two(), t)
    # The router picks at random: send until `a` has failed the 3 times that open its breaker.
    for _ in range(200):
        if t.count("a.test") >= 3:
            break
        await asgi_call(app, CHAT)
    await asgi_call(app, CHAT)
    _, _, body = await asgi_call(app, {}, path="/health/deployments", method="GET")
    report = {d["deployment"]: d for d in json.loads(body)["deployments"]}
    assert report["a/m"]["state"] == "open" and report["b/m"]["state"] == "closed"
    assert report["a/m"]["failures"] == 3 and report["b/m"]["ms_per_token"] is not None
    _, _, metrics = await asgi_call(app, {}, path="/metrics", method="GET")
    assert b'sidegate_deployment_state{deployment="a/m",model="main"} 2.0' in metrics


async def test_weights_3_to_1_split_75_25_over_4000_requests(autojump_clock: trio.testing.MockClock) -> None:
    t = ScriptedTransport({"a.test": lambda r: ok(), "b.test": lambda r: ok()})
    p = two(groups=[group("main", target("a", "m", weight=3.0), target("b", "m", weight=1.0), retry=RETRY,
                          cooldown=COOL)])
    app = make_app(p, t)
    for _ in range(4000):
        await asgi_call(app, CHAT)
    assert 0.72 <= t.count("a.test") / 4000 <= 0.78


async def test_active_health_probes_open_and_close_the_breaker(autojump_clock: trio.testing.MockClock) -> None:
    from dataclasses import replace

    from sidegate.runtime.plan import HealthProbe
    from sidegate.runtime.routing.prober import run_probes

    up = {"a": False}
    t = ScriptedTransport({"a.test": lambda r: ok() if up["a"] else Reply(error(503)), "b.test": lambda r: ok()})
    p = two()
    probed = replace(p.providers[0], health=HealthProbe(interval=15.0, timeout=5.0))
    app = make_app(replace(p, providers=(probed, p.providers[1])), t)
    breaker = app.runtime.deployments["main"][0].state.breaker
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_probes, lambda: app.runtime)
        await trio.sleep(15 * COOL.failures + 1)
        assert breaker.circuit is Circuit.OPEN and t.count("b.test") == 0, "probes alone opened it"
        assert all(method == "a.test" for method, _ in t.calls)
        up["a"] = True
        await trio.sleep(COOL.duration + 16)
        assert breaker.circuit is Circuit.CLOSED
        nursery.cancel_scope.cancel()
