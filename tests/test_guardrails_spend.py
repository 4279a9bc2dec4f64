"""Guardrail decisions in the spend row (`guardrails`: `name:outcome,...`, never the text), on sqlite
and a real PostgreSQL: written for masked, passed and blocked answers (a stream cut by a
during_call guardrail too) and read back through `/spend/logs`; the `_v7` migration adds the column
(and the keys' own `guardrails`) to an older database; the summary stays within the column."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import openai
import peewee
import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.store.database import SCHEMA_VERSION, Store
from sidegate.runtime.store.models import ApiKey, Meta, SpendLog
from sidegate.runtime.store.spend import MAX_TEXT, guardrail_summary
from tests.support.cache_fakes import CountingOpenAI
from tests.support.fake_base import open_fake
from tests.support.gateway import open_gateway
from tests.support.postgres import pg_server, store_url  # noqa: F401 - fixtures
from tests.support.spend_logs import spend_rows

SPEC = """\
version: 1
providers:
  oa: {{type: openai, base_url: "{url}", api_key: "${{GUARD_UPSTREAM_KEY}}"}}
auth:
  master_key: "${{GUARD_MASTER}}"
  keys:
    - {{name: app, key: "${{GUARD_APP_KEY}}"}}
store:
  database: "{db}"
guardrails:
  pii: {{kind: pii, action: mask, entities: [email]}}
  nope: {{kind: keywords, mode: during_call, words: [forbidden word]}}
models:
  chat: {{guardrails: [pii, nope], targets: [{{provider: oa, model: gpt-4o-mini}}]}}
  bare: {{targets: [{{provider: oa, model: gpt-4o-mini}}]}}
"""
MASTER = {"Authorization": "Bearer sk-master-0003"}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARD_UPSTREAM_KEY", "sk-upstream-0001")
    monkeypatch.setenv("GUARD_MASTER", "sk-master-0003")
    monkeypatch.setenv("GUARD_APP_KEY", "sk-app-key-0004")


@asynccontextmanager
async def served(db: str) -> AsyncIterator[str]:
    async with open_fake(CountingOpenAI()) as up:
        result = compile_text(SPEC.format(url=up.base_url, db=db), "guardrails.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        async with open_gateway(result.plan) as gw:
            yield f"http://127.0.0.1:{gw.port}"


async def test_decisions_are_in_the_spend_row_on_both_backends(store_url: str) -> None:  # noqa: F811
    with trio.fail_after(30):
        async with served(store_url) as url:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-app-key-0004", max_retries=0)
            async with httpx.AsyncClient(base_url=url) as http:
                while (await http.get("/health/ready")).status_code != 200:
                    await trio.sleep(0.02)
                await client.chat.completions.create(model="chat", messages=[
                    {"role": "user", "content": "mail ann@example.com"}])
                with pytest.raises(openai.APIError):
                    stream = await client.chat.completions.create(model="chat", stream=True, messages=[
                        {"role": "user", "content": "say the forbidden word please"}])
                    async for _ in stream:
                        pass
                await client.chat.completions.create(model="bare", messages=[{"role": "user", "content": "hi"}])
                rows = await spend_rows(url, "sk-master-0003", lambda rs: len(rs) >= 3)
    by_status = sorted((r["status"], r["model"], r["guardrails"]) for r in rows)
    assert by_status == [(200, "bare", None), (200, "chat", "pii:masked,nope:passed"),
                         (400, "chat", "pii:passed,nope:blocked")]
    assert all("ann@" not in str(r) and "forbidden" not in str(r) for r in rows), "never the text"


async def test_the_v7_migration_adds_the_column_to_an_older_database(store_url: str) -> None:  # noqa: F811
    store = await Store.open(store_url)

    def downgrade() -> None:
        db = SpendLog._meta.database
        for model in (SpendLog, ApiKey):
            db.execute_sql(f'ALTER TABLE {model._meta.table_name} DROP COLUMN guardrails')
        Meta.update(value="6").where(Meta.key == "schema_version").execute()

    await store.run(downgrade)
    assert await store.schema_version() == 6
    await store.aclose()
    again = await Store.open(store_url)
    assert await again.schema_version() == SCHEMA_VERSION

    def columns() -> list[set[str]]:
        db: peewee.Database = SpendLog._meta.database
        return [{c.name for c in db.get_columns(m._meta.table_name)} for m in (SpendLog, ApiKey)]

    assert all("guardrails" in have for have in await again.run(columns)), "the spend log's and the keys'"
    await again.aclose()
    reopened = await Store.open(store_url)  # idempotent: nothing left to add
    assert await reopened.schema_version() == SCHEMA_VERSION
    await reopened.aclose()


def test_the_summary_keeps_whole_decisions_within_the_column() -> None:
    assert guardrail_summary(None) is None and guardrail_summary([]) is None
    assert guardrail_summary(["a:passed", "b:blocked"]) == "a:passed,b:blocked"
    many = [f"guardrail-{i:03}:passed" for i in range(40)]
    summary = guardrail_summary(many)
    assert summary is not None and len(summary) <= MAX_TEXT
    kept = summary.split(",")
    assert kept[-1].startswith("+") and int(kept[-1][1:]) + len(kept) - 1 == 40
    assert kept[:-1] == many[: len(kept) - 1]
