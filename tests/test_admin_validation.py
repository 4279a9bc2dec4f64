"""The admin API refuses what it cannot honour instead of storing it silently: an unknown team or
model in /key/generate, /key/update and /team/new is a 400 in OpenAI's error envelope (with a
did-you-mean); revoking a key that does not exist is a 404 and revokes nothing."""

from __future__ import annotations

import httpx
import pytest
import trio

from sidegate.runtime.plan import Auth, Team
from tests.support.gateway import open_gateway
from tests.support.plans import env, group, mock_provider, plan, target

MASTER = {"authorization": "Bearer sk-master-secret"}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MASTER", "sk-master-secret")


def _plan():  # type: ignore[no-untyped-def]
    return plan([mock_provider("fake")], [group("demo", target("fake", "demo")), group("groq/*", target("fake", "*"))],
                auth=Auth(master_key=env("TEST_MASTER"), keys=(), refresh=5.0, jwt=None),
                teams=(Team(name="platform", models=(), budget=None, limits=None),))


async def test_unknown_teams_and_models_are_400_and_missing_keys_404() -> None:
    with trio.fail_after(20):
        async with open_gateway(_plan()) as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as c:
            bad_team = await c.post("/key/generate", headers=MASTER, json={"team_id": "platfrom"})
            bad_model = await c.post("/key/generate", headers=MASTER, json={"models": ["demo", "gpt-5"]})
            ok = await c.post("/key/generate", headers=MASTER, json={"team_id": "platform", "models": ["demo", "groq/*"]})
            stored_team = await c.post("/team/new", headers=MASTER, json={"team_id": "ml", "models": ["demo"]})
            team_bad_model = await c.post("/team/new", headers=MASTER, json={"team_id": "x", "models": ["dem"]})
            on_stored = await c.post("/key/generate", headers=MASTER, json={"team_id": "ml"})
            update = await c.post("/key/update", headers=MASTER, json={"key": ok.json()["key"], "team_id": "nope"})
            missing = await c.post("/key/delete", headers=MASTER, json={"keys": [ok.json()["key"], "sk-sg-typo"]})
            still = await c.post("/v1/chat/completions", headers={"authorization": f"Bearer {ok.json()['key']}"},
                                 json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
            revoked = await c.post("/key/delete", headers=MASTER, json={"keys": [ok.json()["key"]]})
            again = await c.post("/key/delete", headers=MASTER, json={"keys": [ok.json()["key"]]})
    assert bad_team.status_code == 400
    assert bad_team.json()["error"]["code"] == "unknown_team" and bad_team.json()["error"]["param"] == "team_id"
    assert "did you mean 'platform'" in bad_team.json()["error"]["message"]
    assert bad_model.status_code == 400 and bad_model.json()["error"]["code"] == "unknown_model"
    assert ok.status_code == 200 and stored_team.status_code == 200 and on_stored.status_code == 200
    assert team_bad_model.status_code == 400 and "did you mean 'demo'" in team_bad_model.json()["error"]["message"]
    assert update.status_code == 400 and update.json()["error"]["code"] == "unknown_team"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"
    assert still.status_code == 200, "a refused delete revokes nothing"
    assert revoked.status_code == 200 and revoked.json()["already_revoked"] == []
    assert again.json()["already_revoked"] == revoked.json()["deleted_keys"]
