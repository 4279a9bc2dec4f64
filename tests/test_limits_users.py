"""Per-user limits: the `users` section compiled into the plan, the gate counting a user across all
of its keys (spec keys, JWT user claims), `default` applied to each user on its own, and concurrent
requests through a served gateway never exceeding a user's rpm or parallel limit."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.errors import RateLimited
from sidegate.runtime.governance.gate import Gatekeeper
from sidegate.runtime.governance.keys import Grant, KeyCache
from sidegate.runtime.governance.limits import Limits
from sidegate.runtime.plan import Auth, JwtRule, LimitRule, StaticKey, UserRule
from sidegate.runtime.plan.canonical import dumps, loads
from tests.support.clock import away_from_a_minute_boundary
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import env, group, mock_provider, plan, target

SPEC = """\
version: 1
providers:
  fake: {type: mock}
models:
  demo:
    targets: [{provider: fake, model: demo}]
users:
  default: {limits: {rpm: 30, parallel: 2}}
  alice: {limits: {rpm: 120, tpm: 50000}}
  root: {}
"""


def test_users_section_compiles_into_the_plan() -> None:
    result = compile_text(SPEC, "spec.yaml")
    assert result.plan is not None, [d.message for d in result.diagnostics]
    assert result.plan.users == (
        UserRule(name="alice", limits=LimitRule(rpm=120, tpm=50000, parallel=None)),
        UserRule(name="default", limits=LimitRule(rpm=30, tpm=None, parallel=2)),
        UserRule(name="root", limits=None),
    )
    assert loads(dumps(result.plan)) == result.plan
    assert any(d.code == "schema.range" for d in compile_text(SPEC + "  bob: {limits: {rpm: 0}}\n", "s").diagnostics)
    assert compile_text(SPEC + "  carol: {limit: {rpm: 5}}\n", "s").plan is None


def _gate() -> Gatekeeper:
    g = Gatekeeper(KeyCache(), {}, required=True)
    g.set_users({"alice": Limits(rpm=3), "root": None}, Limits(parallel=1))
    return g


def test_a_user_is_counted_across_its_keys() -> None:
    g = _gate()
    k1, k2 = Grant(hash="1", name="a", user="alice"), Grant(hash="2", name="b", user="alice")
    for grant in (k1, k2, k1):
        g.admit(grant, "demo", now=0.0)
    with pytest.raises(RateLimited) as info:
        g.admit(k2, "demo", now=1.0)
    assert info.value.retry_after == pytest.approx(59.0) and "user" in info.value.message
    g.admit(k2, "demo", now=61.0)  # the next minute


def test_default_applies_to_each_user_on_its_own_and_an_entry_replaces_it() -> None:
    g = _gate()
    bob, carol, root = (Grant(hash=n, name=n, user=n) for n in ("bob", "carol", "root"))
    held = g.admit(bob, "demo", now=0.0)
    with pytest.raises(RateLimited):
        g.admit(bob, "demo", now=0.0)  # parallel 1 for bob
    g.admit(carol, "demo", now=0.0)  # carol has her own parallel 1
    for _ in range(5):
        g.admit(root, "demo", now=0.0)  # an entry without limits: unlimited, the default does not apply
    g.settle(held, 0.5, None, 0.0)
    g.admit(bob, "demo", now=0.5)
    g.admit(Grant(hash="x", name="x"), "demo", now=0.0)  # no user: no user limits


MSG = {"messages": [{"role": "user", "content": "hi"}]}
SECRET = "a-long-enough-shared-secret-for-hs256!"


def _plan(latency: float = 0.0):  # type: ignore[no-untyped-def]
    keys = tuple(StaticKey(name=n, key=env(f"TEST_USER_{n.upper()}"), team=None, user=u, models=(), budget=None,
                           limits=None) for n, u in (("k1", "ann"), ("k2", "ann"), ("k3", "ben")))
    rule = JwtRule(secret=env("TEST_USER_JWT"), jwks_url=None, algorithms=("HS256",), audience="sidegate",
                   issuer=None, team_claim=None, user_claim="sub", models_claim=None, jwks_refresh=600.0)
    p = plan([mock_provider("fake", latency=latency)], [group("demo", target("fake", "demo"))],
             auth=Auth(master_key=None, keys=keys, refresh=5.0, jwt=rule))
    from dataclasses import replace
    return replace(p, users=(UserRule(name="ann", limits=LimitRule(rpm=5, tpm=None, parallel=None)),
                             UserRule(name="default", limits=LimitRule(rpm=None, tpm=None, parallel=2))))


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for n in ("k1", "k2", "k3"):
        monkeypatch.setenv(f"TEST_USER_{n.upper()}", f"sk-{n}-secret")
    monkeypatch.setenv("TEST_USER_JWT", SECRET)


async def _burst(gw, tokens: list[str]) -> list[int]:  # type: ignore[no-untyped-def]
    codes: list[int] = []
    async with httpx.AsyncClient(timeout=10) as c:

        async def one(token: str) -> None:
            r = await c.post(f"{base_url(gw)}/chat/completions", headers={"authorization": f"Bearer {token}"},
                             json={"model": "demo", **MSG})
            codes.append(r.status_code)

        async with trio.open_nursery() as nursery:
            for t in tokens:
                nursery.start_soon(one, t)
    return codes


async def test_concurrent_requests_never_exceed_a_users_rpm_across_keys() -> None:
    await away_from_a_minute_boundary()
    with trio.fail_after(20):
        async with open_gateway(_plan()) as gw:
            codes = await _burst(gw, ["sk-k1-secret", "sk-k2-secret"] * 10)
            other = await _burst(gw, ["sk-k3-secret"] * 2)  # within the default parallel 2
    assert sorted(codes) == [200] * 5 + [429] * 15, "ann: 5 rpm over both of her keys"
    assert other == [200] * 2, "ben is not limited by ann's count"


async def test_concurrent_requests_never_exceed_a_users_parallel_limit_jwt_users_included() -> None:
    now = int(time.time())
    tokens = [jwt.encode({"sub": sub, "aud": "sidegate", "exp": now + 60}, SECRET) for sub in ("zoe", "yan")]
    with trio.fail_after(20):
        async with open_gateway(_plan(latency=0.5)) as gw:
            zoe = await _burst(gw, [tokens[0]] * 6)
            both = await _burst(gw, [tokens[0], tokens[1]] * 3)
    assert sorted(zoe) == [200] * 2 + [429] * 4, "the default's parallel 2 for a JWT user"
    assert sorted(both) == [200] * 4 + [429] * 2, "each user has the default's 2 on their own"


BASE = """\
version: 1
providers:
  fake: {type: mock}
models:
  demo:
    targets: [{provider: fake, model: demo}]
"""


@pytest.mark.parametrize(("store", "code"), [
    ("{redis: '${REDIS_URL}', redis_sync: 250ms}", None),
    ("{redis: 'redis://cache:6379/0'}", None),
    ("{redis: {file: /run/secrets/redis}}", None),
    ("{redis: 'redis://:hunter2@cache:6379/0'}", "secret.url-credentials"),
    ("{redis: 'http://cache:6379'}", "store.redis-url"),
    ("{redis: '${REDIS_URL}', redis_sync: 20ms}", "store.redis-sync-range"),
    ("{redis: '${REDIS_URL}', redis_sync: 1m}", "store.redis-sync-range"),
])
def test_store_redis_compiles_or_is_diagnosed(store: str, code: str | None) -> None:
    result = compile_text(BASE + f"store: {store}\n", "spec.yaml")
    codes = [d.code for d in result.diagnostics if d.is_error]
    if code is None:
        assert codes == [] and result.plan is not None and result.plan.store.redis is not None
        assert loads(dumps(result.plan)) == result.plan
        assert "hunter2" not in dumps(result.plan)
    else:
        assert codes == [code]
