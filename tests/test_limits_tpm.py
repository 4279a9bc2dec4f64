"""tpm limits count requests in flight: the worst case (prompt estimate plus the output it may
produce) is reserved at admission and replaced by the real usage when the request finishes, so
concurrent requests cannot all slip under a tpm limit before any of them has finished."""

from __future__ import annotations

import httpx
import pytest
import trio

from sidegate.runtime.errors import RateLimited
from sidegate.runtime.governance.gate import Gatekeeper
from sidegate.runtime.governance.keys import Grant, KeyCache
from sidegate.runtime.plan import Auth, LimitRule, StaticKey
from sidegate.runtime.upstream.openai_wire import Usage
from tests.support.clock import away_from_a_minute_boundary
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import env, group, mock_provider, plan, target


def test_prompt_estimate_is_reserved_then_replaced_by_usage() -> None:
    g = Gatekeeper(KeyCache(), {}, required=True)
    grant = Grant(hash="k", name="k", tpm=1000)
    first = g.admit(grant, "demo", 0.0, lambda: (600, 0.0, False))
    g.admit(grant, "demo", 1.0, lambda: (600, 0.0, False))  # 600 < 1000: still admitted, now 1200 counted
    with pytest.raises(RateLimited):
        g.admit(grant, "demo", 2.0, lambda: (1, 0.0, False))
    g.settle(first, 3.0, Usage(prompt=80, completion=20), 0.0)  # 1200 - 600 + 100 = 700
    g.admit(grant, "demo", 4.0, lambda: (600, 0.0, False))
    late = g.admit(Grant(hash="j", name="j", tpm=1000), "demo", 59.0, lambda: (600, 0.0, False))
    g.settle(late, 61.0, Usage(prompt=80, completion=20), 0.0)  # finished in the next minute: 100 there
    assert g.ledger._windows["key:j"].tokens == 100 and g.ledger._windows["key:j"].reserved == 0


def test_a_reservation_made_last_minute_still_counts_in_the_next() -> None:
    g = Gatekeeper(KeyCache(), {}, required=True)
    grant = Grant(hash="k", name="k", tpm=1000)
    first = g.admit(grant, "demo", 59.0, lambda: (1000, 0.0, False))
    with pytest.raises(RateLimited):  # a new minute, but 1000 are still held by the request in flight
        g.admit(grant, "demo", 61.0, lambda: (200, 0.0, False))
    g.settle(first, 62.0, Usage(prompt=10, completion=10), 0.0)
    g.admit(grant, "demo", 63.0, lambda: (200, 0.0, False))


def test_no_tpm_limit_no_estimate() -> None:
    g = Gatekeeper(KeyCache(), {}, required=True)

    def boom() -> tuple[int, float, bool]:
        raise AssertionError("estimated without a tpm limit")

    g.admit(Grant(hash="k", name="k", rpm=5), "demo", 0.0, boom)


async def test_concurrent_requests_reserve_their_prompts_against_tpm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TPM_KEY", "sk-tpm-secret")
    p = plan([mock_provider("fake", latency=0.5)], [group("demo", target("fake", "demo"))],
             auth=Auth(master_key=None, keys=(StaticKey(name="t", key=env("TEST_TPM_KEY"), team=None, user=None,
                                                        models=(), budget=None,
                                                        limits=LimitRule(rpm=None, tpm=50, parallel=None)),),
                       refresh=5.0, jwt=None))
    # prompt ~37 tokens estimated (150 bytes of messages / 4) + max_tokens 1 = 38 reserved
    body = {"model": "demo", "messages": [{"role": "user", "content": "x" * 120}], "max_tokens": 1}
    codes: list[int] = []
    await away_from_a_minute_boundary()
    with trio.fail_after(20):
        async with open_gateway(p) as gw, httpx.AsyncClient(timeout=10) as c:

            async def one() -> None:
                r = await c.post(f"{base_url(gw)}/chat/completions",
                                 headers={"authorization": "Bearer sk-tpm-secret"}, json=body)
                codes.append(r.status_code)

            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(one)
    assert sorted(codes) == [200, 200, 429, 429, 429], "38 reserved, 76 reserved, then over 50"
