"""Counters shared across sidecars through a real Redis server: two gateways in one process, each
with its own ledger, share a key's rpm limit and budget; Redis killed mid-test leaves requests
served (counted locally, logged, `sidegate_redis_up` 0) and the sync recovers when it is back."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import replace

import httpx
import pytest
import trio

from sidegate.runtime.governance.limits import Budget, Ledger
from sidegate.runtime.governance.redis_sync import PREFIX, RedisSync
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.plan import Auth, BudgetRule, LimitRule, LogLevel, Price, StaticKey, Store
from tests.support.clock import away_from_a_minute_boundary
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import env, group, mock_provider, plan, target, text
from tests.support.redis import RedisServer, redis_server

SYNC = 0.1
MSG = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
PRICE = Price(input=1e-3, output=2e-3, cached_input=None)  # each answer: 4 x 0.001 + 3 x 0.002 = 0.010


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        yield s


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SHARED_KEY", "sk-shared-secret")


def _plan(url: str, limits: LimitRule | None = None, budget: BudgetRule | None = None):  # type: ignore[no-untyped-def]
    p = plan([mock_provider("fake", text="a b c")], [group("demo", target("fake", "demo", price=PRICE))],
             auth=Auth(master_key=None, keys=(StaticKey(name="app", key=env("TEST_SHARED_KEY"), team=None, user=None,
                                                        models=(), budget=budget, limits=limits),),
                       refresh=5.0, jwt=None))
    return replace(p, store=Store(database=text("sqlite://:memory:"), redis=text(url), redis_sync=SYNC))


async def _post(c: httpx.AsyncClient, gw) -> int:  # type: ignore[no-untyped-def]
    r = await c.post(f"{base_url(gw)}/chat/completions", headers={"authorization": "Bearer sk-shared-secret"}, json=MSG)
    return r.status_code


class _Log(Logger):
    def __init__(self) -> None:
        self.events: list[str] = []

    def log(self, level: LogLevel, event: str, fields: Mapping[str, object]) -> None:
        self.events.append(event)


async def test_two_ledgers_share_counts_and_spend(server: RedisServer) -> None:
    await away_from_a_minute_boundary(5)
    a, b = Ledger(), Ledger()
    syncs = [RedisSync(a, _Log()), RedisSync(b, _Log())]
    for s in syncs:
        s.configure(text(server.url), SYNC)
    now = time.time()
    budget = Budget(1.0, "1d")
    for _ in range(3):
        a.start("key:k", now)
        a.finish("key:k", now, 100)
    b.start("key:k", now)
    a.add_spend("key:k", 0.4, budget, now)
    b.add_spend("key:k", 0.7, budget, now)
    assert not a.over_budget("key:k", budget, now) and not b.over_budget("key:k", budget, now)
    for s in (*syncs, *syncs):  # a pushes, b pushes and reads a's, a reads b's
        assert await s.sync_once()
    window = a._windows["key:k"]
    assert (window.requests, window.tokens) == (4, 300) == (b._windows["key:k"].requests, b._windows["key:k"].tokens)
    assert a.spent("key:k", budget, now) == pytest.approx(1.1) == b.spent("key:k", budget, now)
    assert a.over_budget("key:k", budget, now) and b.over_budget("key:k", budget, now)
    r = server.client()
    assert r.hget(f"{PREFIX}rl:{int(now // 60)}", "key:k:r") == b"4"
    assert 0 < r.ttl(f"{PREFIX}rl:{int(now // 60)}") <= 120
    r.close()


async def test_two_gateways_share_one_rpm_limit(server: RedisServer) -> None:
    await away_from_a_minute_boundary(8)
    p = _plan(server.url, limits=LimitRule(rpm=10, tpm=None, parallel=None))
    with trio.fail_after(30):
        async with open_gateway(p) as gw1, open_gateway(p) as gw2, httpx.AsyncClient() as c:
            paced = []
            for i in range(14):  # paced wider than a sync interval: each sees the other's count
                paced.append(await _post(c, (gw1, gw2)[i % 2]))
                await trio.sleep(SYNC * 2)
            # A burst on both at once, within one sync interval: the documented bound applies.
            burst: list[int] = []

            async def one(gw) -> None:  # type: ignore[no-untyped-def]
                burst.append(await _post(c, gw))

            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(one, (gw1, gw2)[i % 2])
    assert paced.count(200) == 10 and paced[10:] == [429] * 4, paced
    assert burst == [429] * 10, "after a sync both sidecars know the key's minute is spent"


async def test_a_burst_overshoots_at_most_one_sidecars_share(server: RedisServer) -> None:
    # Both sidecars start the minute at 0 and receive a burst inside one sync interval: each can
    # admit up to the limit before they sync, so N sidecars admit at most N x limit (the bound for
    # a burst shorter than a sync interval); the next sync stops both.
    await away_from_a_minute_boundary(5)
    p = _plan(server.url, limits=LimitRule(rpm=10, tpm=None, parallel=None))
    with trio.fail_after(30):
        async with open_gateway(p) as gw1, open_gateway(p) as gw2, httpx.AsyncClient() as c:
            first = [await _post(c, gw) for gw in (gw1, gw2) for _ in range(12)]
            await trio.sleep(SYNC * 3)
            after = [await _post(c, gw) for gw in (gw1, gw2)]
    assert 10 <= first.count(200) <= 2 * 10
    assert after == [429, 429]


async def test_a_budget_spent_through_one_gateway_stops_the_other(server: RedisServer) -> None:
    p = _plan(server.url, budget=BudgetRule(amount=0.025, period="1d", soft=None))
    with trio.fail_after(30):
        async with open_gateway(p) as gw1, open_gateway(p) as gw2, httpx.AsyncClient() as c:
            one = [await _post(c, gw1) for _ in range(3)]  # 0.030 spent: over the budget
            await trio.sleep(SYNC * 3)
            other = await _post(c, gw2)
    assert one == [200, 200, 200] and other == 429


async def test_redis_killed_mid_test_requests_keep_being_served_and_sync_recovers(server: RedisServer) -> None:
    await away_from_a_minute_boundary(8)
    p = _plan(server.url, limits=LimitRule(rpm=1000, tpm=None, parallel=None))
    with trio.fail_after(30):
        async with open_gateway(p) as gw, httpx.AsyncClient() as c:
            before = [await _post(c, gw) for _ in range(3)]
            await trio.sleep(SYNC * 3)
            server.stop()
            during = []
            for _ in range(10):
                during.append(await _post(c, gw))
                await trio.sleep(SYNC / 2)
            metrics_down = (await c.get(f"http://127.0.0.1:{gw.port}/metrics")).text
            server.start()
            await trio.sleep(SYNC * 5)
            metrics_up = (await c.get(f"http://127.0.0.1:{gw.port}/metrics")).text
            after = await _post(c, gw)
            await trio.sleep(SYNC * 3)
    assert before == [200] * 3 and during == [200] * 10 and after == 200
    assert "sidegate_redis_up 0.0" in metrics_down and "sidegate_redis_up 1.0" in metrics_up
    failures = [line for line in metrics_down.splitlines() if line.startswith("sidegate_redis_sync_failures_total")]
    assert failures and float(failures[0].split()[-1]) >= 1
    r = server.client()
    counted = sum(int(v) for k, v in r.hgetall(f"{PREFIX}rl:{int(time.time() // 60)}").items() if k.endswith(b":r"))
    r.close()
    # The restarted Redis lost the first 3; the 10 counted while it was down were kept and pushed.
    assert counted >= 11


async def test_an_outage_is_logged_once_deltas_are_kept_and_pushed_on_recovery(server: RedisServer) -> None:
    await away_from_a_minute_boundary(5)
    ledger, log = Ledger(), _Log()
    sync = RedisSync(ledger, log)
    sync.configure(text(server.url), SYNC)
    now = time.time()
    ledger.start("user:u", now)
    assert await sync.sync_once() and log.events == ["redis_sync_up"]
    server.stop()
    ledger.start("user:u", now)
    ledger.start("user:u", now)
    assert not await sync.sync_once() and not await sync.sync_once()
    assert log.events == ["redis_sync_up", "redis_sync_failed"] and sync.up is False
    assert ledger._windows["user:u"].requests == 3, "counting went on locally"
    server.start()  # a fresh, empty Redis on the same port
    assert await sync.sync_once() and log.events[-1] == "redis_sync_up"
    r = server.client()
    assert r.hget(f"{PREFIX}rl:{int(now // 60)}", "user:u:r") == b"2", "the deltas counted while it was down"
    r.close()
    assert ledger._windows["user:u"].requests == 3, "never less than counted here"


async def test_an_unset_redis_url_variable_is_an_outage_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_UNSET_REDIS_URL", raising=False)
    ledger, log = Ledger(), _Log()
    sync = RedisSync(ledger, log)
    sync.configure(env("TEST_UNSET_REDIS_URL"), SYNC)
    ledger.start("key:k", time.time())
    assert not await sync.sync_once() and log.events == ["redis_sync_failed"]
    assert ledger._windows["key:k"].requests == 1
