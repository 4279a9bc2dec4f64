"""Admission reserves each request's worst case against budgets and tpm until it settles, so
concurrency cannot overshoot: 200 concurrent requests on a budget worth 3.8 requests serve at most
4; 50 concurrent on a tpm limit stay within one request's reservation of it; reservations return
to exactly zero after upstream errors and client disconnects; a fail-closed budget refuses groups
without a price."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import trio

from sidegate.runtime.errors import RateLimited
from sidegate.runtime.governance.gate import Gatekeeper, PriceUnknown
from sidegate.runtime.governance.keys import Grant, KeyCache, hash_key
from sidegate.runtime.governance.limits import Budget
from sidegate.runtime.governance.reserve import Basis, estimate
from sidegate.runtime.plan import Auth, BudgetRule, LimitRule, Price, StaticKey, Team
from sidegate.runtime.upstream.openai_wire import Usage
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import env, group, mock_provider, plan, target

GPT4O = Price(input=2.5e-6, output=1e-5, cached_input=None)
WORDS = " ".join(f"w{i}" for i in range(50))
MSG = [{"role": "user", "content": "hi"}]
BODY = {"model": "demo", "messages": MSG, "max_tokens": 50}
# The mock counts "hi" as 1 token + 3 for the chat frame and answers 50 tokens: one request costs
COST = 4 * GPT4O.input + 50 * GPT4O.output  # 0.00051 USD; its reservation is 8 x input + 50 x output
KEY = "sk-ci-secret"
SUBJECT = f"key:{hash_key(KEY)}"


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_CI_KEY", KEY)


def _plan(*, key_budget: BudgetRule | None = None, team_budget: BudgetRule | None = None,
          limits: LimitRule | None = None, price: Price | None = GPT4O, latency: float = 0.2,
          error_rate: float = 0.0, per_token: float = 0.0):  # type: ignore[no-untyped-def]
    return plan([mock_provider("fake", text=WORDS, latency=latency, error_rate=error_rate,
                               latency_per_token=per_token)],
                [group("demo", target("fake", "demo", price=price))],
                auth=Auth(master_key=None, keys=(StaticKey(name="ci", key=env("TEST_CI_KEY"), team="platform",
                                                           user=None, models=(), budget=key_budget, limits=limits),),
                          refresh=5.0, jwt=None),
                teams=(Team(name="platform", models=(), budget=team_budget, limits=None),))


async def _burst(gw, n: int, body: dict[str, object] = BODY) -> Counter[int]:  # type: ignore[no-untyped-def]
    codes: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:

        async def one() -> None:
            r = await c.post(f"{base_url(gw)}/chat/completions", headers={"authorization": f"Bearer {KEY}"}, json=body)
            codes[r.status_code] += 1
            if r.status_code == 429:
                assert r.json()["error"]["code"] in ("budget_exceeded", "rate_limit_exceeded"), r.text

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
    return codes


@pytest.mark.parametrize("where", ["key", "team"])
async def test_200_concurrent_requests_on_a_budget_worth_3_8_serve_at_most_4(where: str) -> None:
    budget = BudgetRule(amount=3.8 * COST, period="1d", soft=None)
    p = _plan(key_budget=budget if where == "key" else None, team_budget=budget if where == "team" else None)
    subject = SUBJECT if where == "key" else "team:platform"
    with trio.fail_after(60):
        async with open_gateway(p) as gw:
            codes = await _burst(gw, 200)
            ledger = gw.app.access.gate.ledger
            spent = ledger.spent(subject, Budget(budget.amount, "1d"), gw.app.access.gate.wall())
            held = ledger.held(subject)
    print(f"{where} budget: {dict(codes)}, spent ${spent:.6f} of ${budget.amount:.6f}")
    assert 1 <= codes[200] <= 4 and codes[200] + codes[429] == 200, codes
    assert spent == pytest.approx(codes[200] * COST) and spent < budget.amount + COST
    assert held == 0.0, "every reservation was released"


async def test_tpm_under_50_concurrent_stays_within_one_reservation_of_the_limit() -> None:
    tpm = 300
    body = {**BODY, "max_tokens": 20}  # reserves 8 + 20 = 28 tokens; uses 4 + 20 = 24
    p = _plan(limits=LimitRule(rpm=None, tpm=tpm, parallel=None))
    with trio.fail_after(60):
        async with open_gateway(p) as gw:
            gw.app.access.gate.wall = lambda: 1_800_000_030.0  # mid-minute: one window for the whole burst
            codes = await _burst(gw, 50, body)
            w = gw.app.access.gate.ledger._windows[SUBJECT]
            counted, reserved = w.tokens, w.reserved
    print(f"tpm {tpm}: {dict(codes)}, {counted} tokens counted")
    assert counted == codes[200] * 24 and reserved == 0
    assert counted < tpm + 28, "within one request's reservation of the limit"
    assert codes[200] >= tpm // 28 + 1 and codes[429] == 50 - codes[200] > 0, "the first wave fills the limit"


async def test_reservations_return_to_zero_after_errors_and_disconnects() -> None:
    budget = BudgetRule(amount=1.0, period="1d", soft=None)
    limits = LimitRule(rpm=None, tpm=1_000_000, parallel=None)
    with trio.fail_after(60):
        async with open_gateway(_plan(key_budget=budget, team_budget=budget, limits=limits, error_rate=1.0)) as gw:
            codes = await _burst(gw, 20)
            assert sum(codes.values()) == 20 and set(codes) <= {502, 503}, codes  # upstream 500s, then breaker open
            ledger = gw.app.access.gate.ledger
            assert ledger.held(SUBJECT) == 0.0 and ledger.held("team:platform") == 0.0
            assert ledger._windows[SUBJECT].reserved == 0
        async with open_gateway(_plan(key_budget=budget, team_budget=budget, limits=limits, latency=0.0,
                                      per_token=0.05)) as gw:
            ledger = gw.app.access.gate.ledger
            async with httpx.AsyncClient(timeout=30) as c:
                for _ in range(5):  # a stream abandoned after its first event, and a request cancelled early
                    async with c.stream("POST", f"{base_url(gw)}/chat/completions",
                                        headers={"authorization": f"Bearer {KEY}"}, json={**BODY, "stream": True}) as r:
                        async for _ in r.aiter_bytes():
                            assert ledger.held(SUBJECT) > 0, "the stream holds its reservation"
                            break
                    with trio.move_on_after(0.05):
                        await c.post(f"{base_url(gw)}/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                                     json=BODY)
            while gw.app.access.gate.ledger.held(SUBJECT) or ledger._windows[SUBJECT].in_flight:
                await trio.sleep(0.01)  # the gateway notices each disconnect and settles
            assert ledger.held("team:platform") == 0.0 and ledger._windows[SUBJECT].reserved == 0


def test_budget_holds_the_worst_case_until_settled() -> None:
    g = Gatekeeper(KeyCache(), {}, required=True, wall=lambda: 1000.0)
    grant = Grant(hash="k", name="k", budget=1.0, budget_period="1d")
    first = g.admit(grant, "demo", 0.0, lambda: (100, 0.6, False))
    second = g.admit(grant, "demo", 0.0, lambda: (100, 0.6, False))  # 0.6 held < 1.0: admitted
    with pytest.raises(RateLimited) as info:
        g.admit(grant, "demo", 0.0, lambda: (100, 0.6, False))  # 1.2 held: refused
    assert info.value.code == "budget_exceeded"
    g.settle(first, 1.0, Usage(prompt=10, completion=10), 0.1)
    g.settle(second, 1.0, Usage(prompt=10, completion=10), 0.1)
    assert g.ledger.held("key:k") == 0.0 and g.ledger.spent("key:k", Budget(1.0, "1d"), 1000.0) == pytest.approx(0.2)
    g.admit(grant, "demo", 2.0, lambda: (100, 0.6, False))


def test_fail_closed_budget_refuses_unpriced_groups_fail_open_admits_them() -> None:
    g = Gatekeeper(KeyCache(), {}, required=True)
    closed = Grant(hash="c", name="c", budget=1.0, budget_refuse_unpriced=True)
    with pytest.raises(PriceUnknown) as info:
        g.admit(closed, "custom", 0.0, lambda: (10, 0.0, True))
    assert info.value.status == 403 and info.value.code == "price_unknown"
    g.admit(closed, "priced", 0.0, lambda: (10, 0.001, False))
    g.admit(Grant(hash="o", name="o", budget=1.0), "custom", 0.0, lambda: (10, 0.0, True))


def test_worst_case_estimate() -> None:
    basis = Basis(input=1e-6, output=4e-6, output_limit=1000, default_output=1000, unpriced=False)
    data = {"messages": [{"role": "user", "content": "x" * 371}]}  # 400 bytes: 100 tokens
    assert estimate(basis, data, "chat") == (1100, pytest.approx(100e-6 + 4000e-6), False)
    assert estimate(basis, {**data, "max_tokens": 10}, "chat")[0] == 110
    assert estimate(basis, {**data, "max_completion_tokens": 5000}, "chat")[0] == 1100, "capped at the limit"
    assert estimate(basis, {"input": "x" * 398}, "embeddings")[0] == 100
