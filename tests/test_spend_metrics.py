"""The spend buffer and soft budgets on /metrics, read as Prometheus would: rows written and
pending, and soft-threshold crossings counted per scope (key, team) — never per key id."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from sidegate.runtime.plan import Auth, BudgetRule, Price, StaticKey, Store, Team
from tests.support.gateway import open_gateway
from tests.support.plans import env, group, mock_provider, plan, target, text

PRICE = Price(input=1e-3, output=2e-3, cached_input=None)
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_CI_KEY", "sk-ci-secret")


def _samples(raw: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(raw) for s in family.samples}


async def test_soft_budget_crossings_and_spend_rows_on_metrics(tmp_path: Path) -> None:
    # Each answer costs 4 x 0.001 + 3 x 0.002 = 0.010 USD: the team's soft line (50% of 0.04) is
    # crossed by the 2nd request and the key's (60% of 0.05) by the 3rd; each counts once.
    key_budget = BudgetRule(amount=0.05, period="1d", soft=0.6)
    team_budget = BudgetRule(amount=0.04, period="1d", soft=0.5)
    p = plan([mock_provider("fake", text="a b c")], [group("demo", target("fake", "demo", price=PRICE))],
             auth=Auth(master_key=None, keys=(StaticKey(name="ci", key=env("TEST_CI_KEY"), team="platform",
                                                        user=None, models=(), budget=key_budget, limits=None),),
                       refresh=5.0, jwt=None),
             teams=(Team(name="platform", models=(), budget=team_budget, limits=None),))
    p = replace(p, store=Store(database=text(f"sqlite:///{tmp_path}/m.db")))
    with trio.fail_after(20):
        async with open_gateway(p) as gw:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as c:
                before = _samples((await c.get("/metrics")).text)
                codes = []
                for _ in range(4):
                    r = await c.post("/v1/chat/completions", headers={"authorization": "Bearer sk-ci-secret"},
                                     json={"model": "demo", "messages": MSG})
                    codes.append(r.status_code)
                writer = gw.app.access.spend
                assert writer is not None
                while writer.pending:
                    await trio.sleep(0.02)
                after = (await c.get("/metrics")).text
    samples = _samples(after)
    assert codes == [200] * 4
    assert ("sidegate_budget_soft_crossings_total", (("scope", "team"),)) not in before
    assert samples[("sidegate_budget_soft_crossings_total", (("scope", "team"),))] == 1
    assert samples[("sidegate_budget_soft_crossings_total", (("scope", "key"),))] == 1
    assert samples[("sidegate_spend_rows_written_total", ())] == 4
    assert samples[("sidegate_spend_rows_pending", ())] == 0
    assert samples[("sidegate_spend_write_failures_total", ())] == 0
    assert samples[("sidegate_spend_rows_dropped_total", (("reason", "overflow"),))] == 0
    assert samples[("sidegate_spend_rows_dropped_total", (("reason", "rejected"),))] == 0
    assert "sk-ci-secret" not in after
