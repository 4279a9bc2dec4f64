"""The store on a real PostgreSQL server: migrations (fresh, from an older schema, several sidecars
at once), keys stored only as hashes, and the seam's connection coming back after a restart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import peewee
import psycopg2
import pytest
import trio

from sidegate.runtime.governance.keys import hash_key, new_key
from sidegate.runtime.store.database import SCHEMA_VERSION, Store, StoreUnavailable
from sidegate.runtime.store.models import ApiKey, SpendLog
from sidegate.runtime.store.spend import SpendRow, write_rows
from tests.support.postgres import Cluster, fresh_database, pg_cluster, pg_server  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent


def _sql(url: str, sql: str) -> list[tuple[object, ...]]:
    con = psycopg2.connect(url)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []
    finally:
        con.close()


def _row(i: int, key: str = "h") -> SpendRow:
    return SpendRow(request_id=f"r{i}", key_hash=key, team="t", user="u", model="m", deployment="p/m",
                    prompt_tokens=10, completion_tokens=5, cached_tokens=0, reasoning_tokens=0, cost=0.001,
                    estimated=False, latency_ms=1.0, status=200, created_at=1_795_000_000.123456 + i)


async def test_a_fresh_database_is_migrated_with_double_precision(pg_server: str) -> None:  # noqa: F811
    url = fresh_database(pg_server)
    store = await Store.open(url)
    assert store.backend == "postgresql" and await store.schema_version() == SCHEMA_VERSION
    await store.run(lambda: write_rows([_row(0)]))
    # Times and costs are 8-byte floats: a 4-byte REAL would round a 2026 timestamp to minutes.
    assert await store.run(lambda: SpendLog.get().created_at) == 1_795_000_000.123456
    await store.aclose()
    types = dict(_sql(url, "select column_name, data_type from information_schema.columns"
                           " where table_name = 'spendlog'"))
    assert types["cost"] == "double precision" and types["created_at"] == "double precision"
    again = await Store.open(url)  # reopening is a no-op migration
    assert await again.schema_version() == SCHEMA_VERSION
    await again.aclose()


async def test_migration_adds_key_metadata_to_a_version_2_database(pg_server: str) -> None:  # noqa: F811
    url = fresh_database(pg_server)
    _sql(url, "create table meta (key varchar(255) primary key, value varchar(255));"
              "insert into meta values ('schema_version', '2');"
              'create table apikey (hash varchar(255) primary key, prefix varchar(255), name varchar(255),'
              ' team varchar(255), "user" varchar(255), models text default \'[]\', budget float,'
              ' budget_period varchar(255), rpm integer, tpm integer, parallel integer, expires_at float,'
              ' revoked boolean default false, created_at float, updated_at float);'
              "insert into apikey (hash, prefix, models, revoked, created_at, updated_at)"
              " values ('h1', 'sk-sg-abc...', '[]', false, 1.0, 1.0);")
    store = await Store.open(url)
    assert await store.schema_version() == SCHEMA_VERSION
    rows = await store.run(lambda: [(k.hash, k.metadata) for k in ApiKey.select()])
    await store.aclose()
    assert rows == [("h1", "{}")]


async def test_sidecars_opening_one_database_together_migrate_once(pg_server: str) -> None:  # noqa: F811
    url = fresh_database(pg_server)
    stores: list[Store] = []

    async def open_one() -> None:
        stores.append(await Store.open(url))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(open_one)
    versions = [await s.schema_version() for s in stores]
    for s in stores:
        await s.aclose()
    assert versions == [SCHEMA_VERSION] * 4
    assert _sql(url, "select value from meta") == [(str(SCHEMA_VERSION),)]


async def test_no_key_in_clear_in_the_database(pg_server: str) -> None:  # noqa: F811
    url = fresh_database(pg_server)
    store = await Store.open(url)
    key = new_key()
    await store.run(lambda: write_rows([_row(0, key=hash_key(key))]))
    await store.run(lambda: ApiKey.insert(hash=hash_key(key), prefix=key[:10] + "...", created_at=1.0,
                                          updated_at=1.0).execute())
    await store.aclose()
    dump = "".join(str(r) for t in ("apikey", "spendlog", "dailyspend", "meta")
                   for r in _sql(url, f"select row_to_json(x)::text from {t} x"))
    assert key not in dump and hash_key(key) in dump


async def test_the_seam_reconnects_after_the_server_restarts(pg_cluster: Cluster) -> None:  # noqa: F811
    url = fresh_database(pg_cluster.url)
    store = await Store.open(url)
    await store.run(lambda: write_rows([_row(0)]))
    await trio.to_thread.run_sync(pg_cluster.stop, "immediate")
    with pytest.raises((peewee.OperationalError, peewee.InterfaceError)):
        await store.run(lambda: write_rows([_row(1)]))
    with pytest.raises((peewee.OperationalError, peewee.InterfaceError)):  # still down: connecting fails
        await store.run(lambda: SpendLog.select().count())
    await trio.to_thread.run_sync(pg_cluster.start)
    await store.run(lambda: write_rows([_row(2)]))
    assert await store.run(lambda: sorted(r.request_id for r in SpendLog.select())) == ["r0", "r2"]
    await store.aclose()


async def test_open_waits_for_a_server_that_comes_up_late(pg_cluster: Cluster) -> None:  # noqa: F811
    url = fresh_database(pg_cluster.url)
    await trio.to_thread.run_sync(pg_cluster.stop, "fast")
    opened: list[Store] = []

    async def open_store() -> None:
        opened.append(await Store.open(url, wait=30))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_store)
            await trio.sleep(0.8)
            assert not opened
            await trio.to_thread.run_sync(pg_cluster.start)
    assert await opened[0].schema_version() == SCHEMA_VERSION
    await opened[0].aclose()


async def test_an_unreachable_store_is_a_clear_error_without_the_password() -> None:
    with trio.fail_after(10), pytest.raises(StoreUnavailable) as info:
        await Store.open("postgresql://sidegate:hunter2@127.0.0.1:1/sidegate?sslmode=disable", wait=1.0)
    message = str(info.value)
    assert "postgresql://sidegate:***@127.0.0.1:1/sidegate" in message and "hunter2" not in message
    assert "refused" in message.lower()


def test_psycopg2_loads_only_when_a_postgresql_store_opens(pg_server: str) -> None:  # noqa: F811
    """peewee and playhouse are imported with psycopg2 hidden (~5 MB of every sqlite sidecar); a
    PostgreSQL store hands it to peewee first, and then works as with peewee's own import: a fresh
    process, where nothing imported psycopg2 before the runtime did."""
    url = fresh_database(pg_server)
    probe = (
        "import json, sys, trio\n"
        "import sidegate.runtime.server\n"
        "from sidegate.runtime.store.database import Store\n"
        "from sidegate.runtime.store.models import Meta\n"
        "before = 'psycopg2' in sys.modules\n"
        "async def main():\n"
        "    store = await Store.open(sys.argv[1])\n"
        "    version = await store.run(lambda: Meta.get(Meta.key == 'schema_version').value)\n"
        "    await store.aclose()\n"
        "    return version\n"
        "print(json.dumps([before, trio.run(main), 'psycopg2' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, url], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, str(SCHEMA_VERSION), True]


def test_the_hand_over_sets_what_peewees_own_import_of_psycopg2_sets() -> None:
    """Module globals and the adapter's transaction-status constants (without them a broken
    connection looks usable and is never replaced), compared with peewee imported normally."""
    facts = ("import peewee\na = peewee.Psycopg2Adapter\n"
             "print(repr([str(peewee.psycopg2), str(peewee.pg_extensions), str(peewee.Json_pg2), a.txn_idle,"
             " a.txn_inerror, a.txn_unknown, peewee.PostgresqlDatabase('x')._adapter.json_type.__name__]))\n")
    ours = "import sys\nfrom sidegate.runtime.store import orm\nassert 'psycopg2' not in sys.modules\norm.with_psycopg2()\n"
    normal, handed = (subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                     check=True).stdout for code in (facts, ours + facts))
    assert handed == normal and "psycopg2" in normal
