"""Strategy decisions as pure functions: each strategy's pick, and that no strategy picks a cooling
deployment while a healthy one exists."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from sidegate.runtime.plan import CooldownPolicy, Price, Strategy
from sidegate.runtime.routing.balance import DeploymentState, GroupState, choose
from sidegate.runtime.routing.breaker import FailureKind
from tests.support.plans import group, target

COOL = CooldownPolicy(failures=1, window=60.0, duration=30.0, error_rate=None, min_requests=10)


def states(n: int) -> list[DeploymentState]:
    return [DeploymentState() for _ in range(n)]


def test_round_robin_cycles() -> None:
    g = group("g", target("a", "m"), target("b", "m"), target("c", "m"), strategy=Strategy.ROUND_ROBIN)
    cursor, s = GroupState(), states(3)
    picks = [choose(g, s, 0.0, random.Random(0), cursor=cursor).index for _ in range(6)]
    assert picks == [0, 1, 2, 0, 1, 2]


def test_least_busy_picks_fewest_in_flight() -> None:
    g = group("g", target("a", "m"), target("b", "m"), strategy=Strategy.LEAST_BUSY)
    s = states(2)
    s[0].start(0.0)
    s[0].start(0.0)
    s[1].start(0.0)
    assert {choose(g, s, 0.0, random.Random(i)).index for i in range(20)} == {1}


def test_usage_picks_lowest_share_of_caps() -> None:
    g = group("g", target("a", "m", rpm=10), target("b", "m", rpm=100), strategy=Strategy.USAGE)
    s = states(2)
    for _ in range(5):
        s[0].start(0.0)
    for _ in range(20):
        s[1].start(0.0)
    assert choose(g, s, 0.0, random.Random(0)).index == 1  # 20% used beats 50%


def test_cost_picks_cheapest_for_the_estimate_and_unknown_price_last() -> None:
    cheap = Price(input=1e-7, output=1e-6, cached_input=None)
    dear = Price(input=1e-6, output=1e-5, cached_input=None)
    g = group("g", target("a", "m"), target("b", "m", price=dear), target("c", "m", price=cheap),
              strategy=Strategy.COST)
    assert choose(g, states(3), 0.0, random.Random(0), tokens=(1000, 100)).index == 2


def test_latency_prefers_fastest_measured_with_some_exploration() -> None:
    g = group("g", target("a", "m"), target("b", "m"), strategy=Strategy.LATENCY)
    s = states(2)
    s[0].breaker.success(0.0, COOL, per_token=0.05)
    s[1].breaker.success(0.0, COOL, per_token=0.01)
    rng = random.Random(3)
    picks = [choose(g, s, 0.0, rng).index for _ in range(1000)]
    assert 0.9 <= picks.count(1) / 1000 <= 0.99, "mostly the fastest, a few explorations"
    s[0].breaker.success(0.0, COOL, ttft=0.1)
    s[1].breaker.success(0.0, COOL, ttft=0.9)
    stream_picks = [choose(g, s, 0.0, rng, stream=True).index for _ in range(200)]
    assert stream_picks.count(0) > 150, "streams are ranked by time to first token"


def test_untried_deployments_come_first() -> None:
    g = group("g", target("a", "m", weight=1e9), target("b", "m"))
    assert choose(g, states(2), 0.0, random.Random(0), tried=frozenset({0})).index == 1


@given(
    st.sampled_from(list(Strategy)),
    st.lists(st.booleans(), min_size=2, max_size=6).filter(lambda xs: not all(xs)),
    st.integers(0, 1000),
)
def test_no_strategy_picks_a_cooling_deployment_while_a_healthy_one_exists(
    strategy: Strategy, cooling: list[bool], seed: int
) -> None:
    g = group("g", *(target(f"p{i}", "m", tier=i % 2) for i in range(len(cooling))), strategy=strategy)
    s = states(len(cooling))
    for st_, down in zip(s, cooling, strict=True):
        if down:
            st_.breaker.failure(0.0, FailureKind.SERVER_ERROR, COOL)
    pick = choose(g, s, 1.0, random.Random(seed), cursor=GroupState()).index
    assert pick is not None and not cooling[pick]


def test_explain_shows_strategy_retries_cooldown_hedging_and_fallback_chain() -> None:
    from pathlib import Path

    from sidegate.compiler.cli.explain import explain
    from sidegate.compiler.pipeline import compile_text

    spec = Path(__file__).parent / "golden" / "ok" / "routing-policy.yaml"
    result = compile_text(spec.read_text(), spec.name)
    assert result.plan is not None
    out = explain(result.plan, "chat")
    assert "lowest tier first" in out and "retries: 3 attempt(s)" in out
    assert "cooldown: 2 failures in 30s" in out and "hedging: a second deployment after 2s" in out
    assert "fallbacks: small -> tiny" in out and "context-window fallbacks: long" in out
    assert "tier:       1" in out
