"""The hot-path gate: authentication from either header, model permissions (key and team),
budgets refused from the first request after they are crossed, rate limits with Retry-After."""

from __future__ import annotations

import pytest

from sidegate.runtime.errors import RateLimited
from sidegate.runtime.governance.gate import AuthError, Forbidden, Gatekeeper, TeamPolicy, cost_of, token_of
from sidegate.runtime.governance.keys import Grant, KeyCache, hash_key
from sidegate.runtime.governance.limits import Budget, Limits
from sidegate.runtime.plan import Price
from sidegate.runtime.upstream.openai_wire import Usage


def gate(required: bool = True, **grant: object) -> Gatekeeper:
    cache = KeyCache([Grant(hash=hash_key("master"), name="master", master=True),
                      Grant(hash=hash_key("k1"), name="k1", **grant)])  # type: ignore[arg-type]
    teams = {"platform": TeamPolicy(name="platform", models=frozenset({"demo", "gpt"}), limits=Limits(parallel=2),
                                    budget=Budget(1.0, "30d"))}
    return Gatekeeper(cache, teams, required=required, wall=lambda: 1_795_000_000.0)


def test_token_from_bearer_or_x_api_key() -> None:
    assert token_of([(b"authorization", b"Bearer sk-1")]) == "sk-1"
    assert token_of([(b"x-api-key", b"sk-2")]) == "sk-2"
    assert token_of([(b"authorization", b"Basic abc")]) is None


def test_authentication() -> None:
    g = gate()
    with pytest.raises(AuthError):
        g.authenticate(None)
    with pytest.raises(AuthError):
        g.authenticate("wrong")
    assert g.authenticate("k1") is not None and g.authenticate("master").master  # type: ignore[union-attr]
    assert gate(required=False).authenticate(None) is None
    with pytest.raises(AuthError) as info:
        gate(expires_at=1.0).authenticate("k1")
    assert info.value.code == "expired_api_key"


def test_model_permissions_from_key_and_team() -> None:
    g = gate(models=frozenset({"demo", "other"}), team="platform")
    grant = g.authenticate("k1")
    g.admit(grant, "demo", 0.0)
    with pytest.raises(Forbidden):
        g.admit(grant, "other", 0.0)  # the key may, its team may not
    with pytest.raises(Forbidden):
        g.admit(grant, "gpt", 0.0)  # the team may, the key may not


def test_key_rpm_limit_gives_429_with_retry_after() -> None:
    g = gate(rpm=10)
    grant = g.authenticate("k1")
    for _ in range(10):
        g.settle(g.admit(grant, "demo", 5.0), 5.0, None, 0.0)
    with pytest.raises(RateLimited) as info:
        g.admit(grant, "demo", 30.0)
    assert info.value.retry_after == 30.0 and info.value.headers() == [(b"retry-after", b"30")]


def test_team_parallel_limit() -> None:
    g = gate(team="platform")
    grant = g.authenticate("k1")
    a = g.admit(grant, "demo", 0.0)
    g.admit(grant, "demo", 0.0)
    with pytest.raises(RateLimited):
        g.admit(grant, "demo", 0.0)
    g.settle(a, 0.0, None, 0.0)
    g.admit(grant, "demo", 0.0)


def test_budget_is_refused_from_the_first_request_after_it_was_crossed() -> None:
    g = gate(budget=0.01, budget_period="1d")
    grant = g.authenticate("k1")
    price = Price(input=1e-3, output=2e-3, cached_input=None)
    served = 0
    while True:
        try:
            adm = g.admit(grant, "demo", 0.0)
        except RateLimited as exc:
            assert exc.code == "budget_exceeded"
            break
        served += 1
        g.settle(adm, 0.0, Usage(prompt=2, completion=1), cost_of(Usage(prompt=2, completion=1), price))
    assert served == 3  # 0.004 per request: 0.004, 0.008 < 0.01, then 0.012 crosses; the 4th is refused


def test_master_key_is_not_metered() -> None:
    g = gate()
    assert g.admit(g.authenticate("master"), "anything", 0.0).subjects == ()


def test_cost_counts_cached_tokens_at_the_cached_price() -> None:
    price = Price(input=2.5e-6, output=1e-5, cached_input=1.25e-6)
    usage = Usage(prompt=1000, completion=100, cached=400)
    assert cost_of(usage, price) == pytest.approx(600 * 2.5e-6 + 400 * 1.25e-6 + 100 * 1e-5)
    assert cost_of(usage, None) == 0.0
