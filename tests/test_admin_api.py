"""The admin API's handlers against a real store (sqlite and PostgreSQL): keys (hash-only storage, immediate cache
updates, revocation), teams, spend logs and reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate.runtime.errors import BadRequest, NotFound
from sidegate.runtime.governance.keys import KeyCache, hash_key
from sidegate.runtime.http.admin import Admin
from sidegate.runtime.store.database import Store
from sidegate.runtime.store.spend import SpendRow, write_rows
from tests.support.postgres import pg_server, store_url  # noqa: F401 - fixtures


async def _admin(url: str) -> Admin:
    return Admin(await Store.open(url), KeyCache(), now=lambda: 1_795_000_000.0)


async def test_generate_info_update_delete(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    admin = await _admin(store_url)
    made = await admin.handle("POST", "/key/generate", {}, {
        "key_alias": "ci", "team_id": "platform", "models": ["demo"], "max_budget": 50, "rpm_limit": 60,
        "duration": "30d"})
    key = made["key"]
    assert made["token"] == hash_key(key) and made["expires"] == 1_795_000_000.0 + 30 * 86400
    grant = admin.cache.lookup(key)
    assert grant is not None and grant.rpm == 60 and grant.allows("demo") and not grant.allows("x")
    info = await admin.handle("GET", "/key/info", {"key": key}, {})
    assert info["info"]["key_alias"] == "ci" and info["info"]["spend"] == 0.0
    await admin.handle("POST", "/key/update", {}, {"key": key, "rpm_limit": 5, "models": []})
    grant = admin.cache.lookup(key)
    assert grant is not None and grant.rpm == 5 and grant.models is None
    await admin.handle("POST", "/key/delete", {}, {"keys": [key]})
    assert admin.cache.lookup(key) is None
    info = await admin.handle("GET", "/key/info", {"key": hash_key(key)}, {})
    assert info["info"]["revoked"] is True
    if store_url.startswith("sqlite"):
        raw = (tmp_path / "s.db").read_bytes() + (tmp_path / "s.db-wal").read_bytes()
        assert key.encode() not in raw and hash_key(key).encode() in raw
    await admin.store.aclose()


async def test_bad_input_and_unknown_keys(store_url: str) -> None:  # noqa: F811
    admin = await _admin(store_url)
    with pytest.raises(BadRequest) as info:
        await admin.handle("POST", "/key/generate", {}, {"rpm_limit": -1})
    assert info.value.param == "rpm_limit"
    with pytest.raises(BadRequest):
        await admin.handle("POST", "/key/generate", {}, {"budget_duration": "fortnight", "max_budget": 1})
    with pytest.raises(NotFound):
        await admin.handle("GET", "/key/info", {"key": "sk-sg-nope"}, {})
    await admin.store.aclose()


async def test_teams_and_spend_reports(store_url: str) -> None:  # noqa: F811
    admin = await _admin(store_url)
    await admin.handle("POST", "/team/new", {}, {"team_id": "platform", "models": ["demo"], "max_budget": 200})
    with pytest.raises(BadRequest):
        await admin.handle("POST", "/team/new", {}, {"team_id": "platform"})
    rows = [SpendRow(request_id=f"r{i}", key_hash="k1" if i % 2 else "k2", team="platform", user=None,
                     model="demo" if i < 3 else "gpt", deployment="d", prompt_tokens=10, completion_tokens=5,
                     cached_tokens=0, reasoning_tokens=0, cost=0.5, estimated=False, latency_ms=1.0, status=200,
                     created_at=1_795_000_000.0 + i * 86400) for i in range(4)]
    await admin.store.run(lambda: write_rows(rows))
    team = await admin.handle("GET", "/team/info", {"team_id": "platform"}, {})
    assert team["spend"] == 2.0
    logs = await admin.handle("GET", "/spend/logs", {"team_id": "platform", "model": "demo", "limit": "2"}, {})
    assert [r["request_id"] for r in logs["data"]] == ["r2", "r1"]
    by_model = await admin.handle("GET", "/spend/report", {"group_by": "model"}, {})
    assert {r["group"]: r["spend"] for r in by_model["data"]} == {"demo": 1.5, "gpt": 0.5}
    by_day = await admin.handle("GET", "/spend/report", {"group_by": "day"}, {})
    assert len(by_day["data"]) == 4
    await admin.store.aclose()


async def test_key_metadata_round_trips_and_reaches_the_cache(store_url: str) -> None:  # noqa: F811
    admin = await _admin(store_url)
    made = await admin.handle("POST", "/key/generate", {}, {"metadata": {"mcp": {"allow": ["files__*"]}}})
    grant = admin.cache.lookup(made["key"])
    assert grant is not None and grant.metadata == {"mcp": {"allow": ["files__*"]}}
    await admin.handle("POST", "/key/update", {}, {"key": made["key"], "metadata": {"a2a": {"allow": ["x"]}}})
    grant = admin.cache.lookup(made["key"])
    assert grant is not None and grant.metadata == {"a2a": {"allow": ["x"]}}
    info = await admin.handle("GET", "/key/info", {"key": made["key"]}, {})
    assert info["info"]["metadata"] == {"a2a": {"allow": ["x"]}}
    with pytest.raises(BadRequest) as bad:
        await admin.handle("POST", "/key/generate", {}, {"metadata": ["not", "an", "object"]})
    assert bad.value.param == "metadata"
    await admin.store.aclose()


async def test_names_are_bounded_strings(store_url: str) -> None:  # noqa: F811
    admin = await _admin(store_url)
    for body in ({"key_alias": "x" * 256}, {"team_id": 7}, {"user_id": ["u"]}):
        with pytest.raises(BadRequest) as bad:
            await admin.handle("POST", "/key/generate", {}, body)
        assert bad.value.param == next(iter(body))
    with pytest.raises(BadRequest):
        await admin.handle("POST", "/team/new", {}, {"team_id": "t" * 300})
    made = await admin.handle("POST", "/key/generate", {}, {"key_alias": "a" * 255})
    with pytest.raises(BadRequest):
        await admin.handle("POST", "/key/update", {}, {"key": made["key"], "user_id": 5})
    await admin.store.aclose()
