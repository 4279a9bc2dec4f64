"""Governance end to end: sidegate served in-process with keys required; the openai SDK and plain
HTTP as clients; the admin API; limits, budgets, spend surviving a restart."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
import trio

from sidegate.runtime.plan import Auth, BudgetRule, LimitRule, Price, StaticKey, Team
from tests.support.clock import away_from_a_minute_boundary
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import env, group, mock_provider, plan, target, text

PRICE = Price(input=1e-3, output=2e-3, cached_input=None)


def _plan(db: str = "sqlite://:memory:", **key: object):  # type: ignore[no-untyped-def]
    p = plan([mock_provider("fake", text="a b c")], [group("demo", target("fake", "demo", price=PRICE)),
                                                    group("other", target("fake", "other"))],
             auth=Auth(master_key=env("TEST_MASTER"), keys=(StaticKey(
                 name="ci", key=env("TEST_CI_KEY"), team="platform", user=None, models=("demo",),
                 budget=key.get("budget"), limits=key.get("limits")),), refresh=0.2, jwt=key.get("jwt")),  # type: ignore[arg-type]
             teams=(Team(name="platform", models=("demo", "other"), budget=None, limits=None),))
    from dataclasses import replace

    from sidegate.runtime.plan import Store

    return replace(p, store=Store(database=text(db)))


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MASTER", "sk-master-secret")
    monkeypatch.setenv("TEST_CI_KEY", "sk-ci-secret")


def _sdk(gw, key: str) -> openai.AsyncOpenAI:  # type: ignore[no-untyped-def]
    return openai.AsyncOpenAI(base_url=base_url(gw), api_key=key, max_retries=0)


MSG = [{"role": "user", "content": "hi"}]


async def test_keys_are_required_and_checked() -> None:
    with trio.fail_after(10):
        async with open_gateway(_plan()) as gw:
            with pytest.raises(openai.AuthenticationError) as info:
                await _sdk(gw, "wrong").chat.completions.create(model="demo", messages=MSG)  # type: ignore[arg-type]
            assert info.value.code == "invalid_api_key"
            ok = await _sdk(gw, "sk-ci-secret").chat.completions.create(model="demo", messages=MSG)  # type: ignore[arg-type]
            async with httpx.AsyncClient() as c:
                via_header = await c.post(f"{base_url(gw)}/chat/completions", headers={"x-api-key": "sk-ci-secret"},
                                          json={"model": "demo", "messages": MSG})
                missing = await c.post(f"{base_url(gw)}/chat/completions", json={"model": "demo", "messages": MSG})
            with pytest.raises(openai.PermissionDeniedError):
                await _sdk(gw, "sk-ci-secret").chat.completions.create(model="other", messages=MSG)  # type: ignore[arg-type]
    assert ok.choices[0].message.content == "a b c" and via_header.status_code == 200
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"


async def test_rpm_10_gives_429_with_retry_after_on_the_11th() -> None:
    await away_from_a_minute_boundary()
    with trio.fail_after(10):
        async with open_gateway(_plan(limits=LimitRule(rpm=10, tpm=None, parallel=None))) as gw:
            async with httpx.AsyncClient() as c:
                codes = []
                for _ in range(11):
                    r = await c.post(f"{base_url(gw)}/chat/completions", headers={"authorization": "Bearer sk-ci-secret"},
                                     json={"model": "demo", "messages": MSG})
                    codes.append(r.status_code)
    assert codes == [200] * 10 + [429]
    assert 1 <= int(r.headers["retry-after"]) <= 60 and r.json()["error"]["type"] == "rate_limit_error"


async def test_budget_is_refused_from_the_first_request_after_crossing_it() -> None:
    # Each answer costs prompt 4 (3 + 1 word) x 0.001 + completion 3 x 0.002 = 0.010 USD.
    with trio.fail_after(10):
        async with open_gateway(_plan(budget=BudgetRule(amount=0.025, period="1d", soft=None))) as gw:
            c = _sdk(gw, "sk-ci-secret")
            served = 0
            with pytest.raises(openai.RateLimitError) as info:
                for _ in range(10):
                    await c.chat.completions.create(model="demo", messages=MSG)  # type: ignore[arg-type]
                    served += 1
    assert served == 3 and info.value.code == "budget_exceeded"


async def test_admin_api_keys_and_spend_survive_a_restart(tmp_path: Path) -> None:
    p = _plan(db=f"sqlite:///{tmp_path}/gw.db")
    master = {"authorization": "Bearer sk-master-secret"}
    with trio.fail_after(20):
        async with open_gateway(p) as gw:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as c:
                denied = await c.post("/key/generate", headers={"authorization": "Bearer sk-ci-secret"}, json={})
                made = (await c.post("/key/generate", headers=master, json={"models": ["demo"], "key_alias": "app"})).json()
                for _ in range(3):
                    r = await c.post("/v1/chat/completions", headers={"authorization": f"Bearer {made['key']}"},
                                     json={"model": "demo", "messages": MSG})
                    assert r.status_code == 200
            await trio.sleep(0.1)
        async with open_gateway(p) as gw:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as c:
                again = await c.post("/v1/chat/completions", headers={"authorization": f"Bearer {made['key']}"},
                                     json={"model": "demo", "messages": MSG})
                await trio.sleep(0.3)  # the spend writer batches off the hot path
                logs = (await c.get("/spend/logs", headers=master, params={"api_key": made["key"]})).json()
                await c.post("/key/delete", headers=master, json={"keys": [made["key"]]})
                revoked = await c.post("/v1/chat/completions", headers={"authorization": f"Bearer {made['key']}"},
                                       json={"model": "demo", "messages": MSG})
                report = (await c.get("/spend/report", headers=master, params={"group_by": "model"})).json()
    assert denied.status_code == 403
    assert again.status_code == 200 and len(logs["data"]) == 4, "three before the restart, one after"
    assert all(row["cost"] == pytest.approx(0.010) for row in logs["data"])
    assert revoked.status_code == 401
    assert report["data"][0]["group"] == "demo" and report["data"][0]["requests"] == 4
    raw = b"".join(f.read_bytes() for f in tmp_path.iterdir())
    assert made["key"].encode() not in raw and b"sk-ci-secret" not in raw and b"sk-master-secret" not in raw


async def test_open_gateway_without_auth_section_needs_no_key() -> None:
    p = plan([mock_provider("fake")], [group("demo", target("fake", "demo"))])
    with trio.fail_after(10):
        async with open_gateway(p) as gw:
            r = await _sdk(gw, "anything").chat.completions.create(model="demo", messages=MSG)  # type: ignore[arg-type]
    assert r.choices


async def test_admin_created_teams_and_users_are_enforced_and_survive_a_restart(tmp_path: Path) -> None:
    """A team made with POST /team/new (rpm 2) and a user made with POST /user/new (rpm 1) limit the
    keys that name them from the next request, and again after a restart (read from the store)."""
    db = f"sqlite:///{tmp_path}/gov.db"
    master = {"authorization": "Bearer sk-master-secret"}
    await away_from_a_minute_boundary(20)
    with trio.fail_after(20):
        async with open_gateway(_plan(db)) as gw:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as c:
                assert (await c.post("/team/new", headers=master, json={"team_id": "small", "rpm_limit": 2,
                                                                        "models": ["demo"]})).status_code == 200
                made = await c.post("/user/new", headers=master, json={"user_id": "bob", "rpm_limit": 1})
                assert made.status_code == 200 and made.json()["rpm_limit"] == 1
                dup = await c.post("/user/new", headers=master, json={"user_id": "bob"})
                assert dup.status_code == 400 and dup.json()["error"]["code"] == "user_exists"
                team_key = (await c.post("/key/generate", headers=master, json={"team_id": "small"})).json()["key"]
                user_key = (await c.post("/key/generate", headers=master, json={"user_id": "bob"})).json()["key"]

                async def codes(key: str, n: int, model: str = "demo") -> list[int]:
                    return [(await c.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                          json={"model": model, "messages": MSG})).status_code for _ in range(n)]

                assert await codes(team_key, 3) == [200, 200, 429]
                assert await codes(team_key, 1, "other") == [403], "the team's models bind its keys"
                assert await codes(user_key, 2) == [200, 429]
                info = (await c.get("/user/info", headers=master, params={"user_id": "bob"})).json()
                assert info["user_info"]["rpm_limit"] == 1 and len(info["keys"]) == 1 and info["spend"] >= 0
        async with open_gateway(_plan(db)) as gw:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as c:
                after = [(await c.post("/v1/chat/completions", headers={"authorization": f"Bearer {user_key}"},
                                       json={"model": "demo", "messages": MSG})).status_code for _ in range(2)]
    assert after == [200, 429], "stored users are enforced after a restart"
