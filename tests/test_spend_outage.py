"""Killing PostgreSQL mid-load loses no spend row once it is back: requests keep being served while
the server is down (nothing on the hot path waits on the database), the spend writer buffers and
retries, reconnects after the restart, and the spend log ends up holding every request."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
import trio

from sidegate.runtime.plan import Auth, Price, StaticKey, Store
from tests.support.gateway import open_gateway
from tests.support.plans import env, group, mock_provider, plan, target, text
from tests.support.postgres import Cluster, fresh_database, pg_cluster  # noqa: F401 - fixtures

PRICE = Price(input=1e-3, output=2e-3, cached_input=None)
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MASTER", "sk-master-secret")
    monkeypatch.setenv("TEST_CI_KEY", "sk-ci-secret")


def _metric(text_: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text_.splitlines() if line.startswith((name + " ", name + "{")))


async def test_killing_postgres_mid_load_loses_no_spend_row(pg_cluster: Cluster) -> None:  # noqa: F811
    url = fresh_database(pg_cluster.url)
    p = plan([mock_provider("fake", text="a b c")], [group("demo", target("fake", "demo", price=PRICE))],
             auth=Auth(master_key=env("TEST_MASTER"), keys=(StaticKey(
                 name="ci", key=env("TEST_CI_KEY"), team="platform", user=None, models=("demo",),
                 budget=None, limits=None),), refresh=0.2, jwt=None))
    p = replace(p, store=Store(database=text(url)))
    sent: list[str] = []
    phase = "up"
    served_while_down = 0
    with trio.fail_after(60):
        async with open_gateway(p) as gw:
            writer = gw.app.access.spend
            assert writer is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as c:

                async def client(n: int) -> None:
                    nonlocal served_while_down
                    i = 0
                    while phase != "done":
                        rid = f"c{n}-{i}"
                        stream = i % 2 == 1
                        r = await c.post("/v1/chat/completions", json={"model": "demo", "messages": MSG,
                                         "stream": stream}, headers={"authorization": "Bearer sk-ci-secret",
                                                                     "x-request-id": rid})
                        assert r.status_code == 200, r.text
                        sent.append(rid)
                        served_while_down += phase == "down"
                        i += 1

                async with trio.open_nursery() as nursery:
                    for n in range(4):
                        nursery.start_soon(client, n)
                    await trio.sleep(0.5)
                    await trio.to_thread.run_sync(pg_cluster.stop, "immediate")
                    phase = "down"
                    await trio.sleep(1.5)
                    phase = "restarting"
                    await trio.to_thread.run_sync(pg_cluster.start)
                    phase = "up"
                    await trio.sleep(0.5)
                    phase = "done"
                while writer.pending:
                    await trio.sleep(0.05)
                master = {"authorization": "Bearer sk-master-secret"}
                logged: list[str] = []
                page = 1
                while True:
                    data = (await c.get("/spend/logs", headers=master,
                                        params={"page": str(page), "limit": "1000"})).json()["data"]
                    logged += [row["request_id"] for row in data]
                    if len(data) < 1000:
                        break
                    page += 1
                metrics = (await c.get("/metrics")).text
    print(f"served {len(sent)} requests, {served_while_down} while PostgreSQL was down; "
          f"{writer.failures} failed writes retried; {len(logged)} spend rows")
    assert served_while_down > 20, "requests are served while the database is down"
    assert writer.failures >= 1 and _metric(metrics, "sidegate_spend_write_failures_total") >= 1
    assert sorted(logged) == sorted(sent), "every request served has exactly one spend row"
    assert _metric(metrics, "sidegate_spend_rows_dropped_total") == 0
