"""Governance groundwork: key hashing and the cache, limits and budgets (sans-IO), the sqlite
store's file (the spend writer's tests, on both backends, are in test_spend_writer.py)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import trio
import trio.lowlevel

from sidegate.runtime.governance.keys import Grant, KeyCache, hash_key, new_key
from sidegate.runtime.governance.limits import Budget, Ledger, Limits, period_start
from sidegate.runtime.store.database import SCHEMA_VERSION, Store
from sidegate.runtime.store.models import ApiKey
from sidegate.runtime.store.spend import SpendRow, SpendWriter


def test_keys_are_random_and_only_hashes_are_indexed() -> None:
    a, b = new_key(), new_key()
    assert a != b and a.startswith("sk-sg-") and len(a) > 40
    cache = KeyCache([Grant(hash=hash_key("master"), name="master", master=True)])
    cache.put(Grant(hash=hash_key(a), name="ci", models=frozenset({"demo"})))
    assert cache.lookup("master").master  # type: ignore[union-attr]
    grant = cache.lookup(a)
    assert grant is not None and grant.allows("demo") and not grant.allows("gpt-4o")
    assert cache.lookup(b) is None
    cache.drop(hash_key(a))
    assert cache.lookup(a) is None


def test_rpm_limit_refuses_the_11th_request_in_a_minute() -> None:
    ledger, limits = Ledger(), Limits(rpm=10)
    for i in range(10):
        assert ledger.limited_for("key:k", limits, 5.0 + i) is None
        ledger.start("key:k", 5.0 + i)
        ledger.finish("key:k", 5.0 + i, 0)
    wait = ledger.limited_for("key:k", limits, 20.0)
    assert wait == 40.0
    assert ledger.limited_for("key:k", limits, 60.0) is None


def test_parallel_limit() -> None:
    ledger, limits = Ledger(), Limits(parallel=2)
    ledger.start("t", 0.0)
    ledger.start("t", 0.0)
    assert ledger.limited_for("t", limits, 0.0) == 1.0
    ledger.finish("t", 0.0, 5)
    assert ledger.limited_for("t", limits, 0.0) is None


def test_budget_refuses_after_the_request_that_crossed_it_and_resets_next_period() -> None:
    ledger, budget = Ledger(), Budget(amount=0.01, period="1d", soft=0.5)
    wall = 86400 * 100 + 10
    assert not ledger.over_budget("key:k", budget, wall)
    assert ledger.add_spend("key:k", 0.006, budget, wall) is True  # crossed the soft line
    assert not ledger.over_budget("key:k", budget, wall)
    ledger.add_spend("key:k", 0.006, budget, wall)
    assert ledger.over_budget("key:k", budget, wall)
    assert not ledger.over_budget("key:k", budget, wall + 86400)


def test_calendar_month_period() -> None:
    t = time.mktime((2026, 11, 24, 12, 0, 0, 0, 0, 0)) - time.timezone
    assert time.gmtime(period_start("month", t))[:3] == (2026, 11, 1)


def _row(i: int, key: str = "h", cost: float = 0.001) -> SpendRow:
    return SpendRow(request_id=f"r{i}", key_hash=key, team="t", user=None, model="m", deployment="p/m",
                    prompt_tokens=10, completion_tokens=5, cached_tokens=0, reasoning_tokens=0, cost=cost,
                    estimated=False, latency_ms=1.0, status=200, created_at=1_795_000_000.0 + i)


def test_no_key_in_clear_in_the_database(tmp_path: Path) -> None:
    key = new_key()

    async def main() -> None:
        store = await Store.open(f"sqlite:///{tmp_path}/s.db")
        writer = SpendWriter(store)
        writer.record_nowait(_row(0, key=hash_key(key)))
        await writer.flush()
        await store.aclose()

    trio.run(main)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert key.encode() not in raw and hash_key(key).encode() in raw


async def test_migration_adds_key_metadata_to_a_version_2_database(tmp_path: Path) -> None:
    """A database written before key metadata existed gains the column and keeps its keys."""
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(
        "create table meta (key varchar primary key, value varchar);"
        "insert into meta values ('schema_version', '2');"
        "create table apikey (hash varchar primary key, prefix varchar, name varchar, team varchar,"
        " user varchar, models text default '[]', budget real, budget_period varchar, rpm integer,"
        " tpm integer, parallel integer, expires_at real, revoked integer default 0, created_at real,"
        " updated_at real);"
        "insert into apikey (hash, prefix, models, revoked, created_at, updated_at)"
        " values ('h1', 'sk-sg-abc...', '[]', 0, 1.0, 1.0);")
    con.commit()
    con.close()
    store = await Store.open(f"sqlite:///{path}")
    assert await store.schema_version() == SCHEMA_VERSION
    rows = await store.run(lambda: [(k.hash, k.metadata) for k in ApiKey.select()])
    await store.aclose()
    assert rows == [("h1", "{}")]
