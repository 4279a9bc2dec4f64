"""`/v1/files` and `/v1/batches` end to end with the official openai SDK through a running sidegate,
against a fake OpenAI (and Azure OpenAI) Files and Batch API: upload, list, retrieve, content,
delete; create, poll, list and cancel batches; every object scoped to the key that made it; a
batch's results metered exactly once at half price; bad input refused in OpenAI's envelope."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest
import trio

from sidegate.runtime.plan import Auth, Family, Files, LimitRule, Plan, Price, StaticKey
from sidegate.runtime.server import Handle
from sidegate.runtime.store.models import SpendLog, StoredBatch, StoredFile
from tests.support.fake_base import open_fake
from tests.support.fake_files import FakeFiles
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import group, mock_provider, openai_provider, plan, target, text
from tests.support.postgres import pg_server, store_url  # noqa: F401 - fixtures

PRICE = Price(input=2e-6, output=8e-6, cached_input=None)


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "sk-upstream")


def _key(name: str, **kw: Any) -> StaticKey:
    values: dict[str, Any] = dict(team=None, user=None, models=(), budget=None, limits=None)
    values.update(kw)
    return StaticKey(name=name, key=text(f"sk-{name}"), **values)


def _plan(fake: FakeFiles, database: str = "sqlite://:memory:", **kw: Any) -> Plan:
    family = Family.AZURE if fake.azure else Family.OPENAI
    up = openai_provider("up", fake.base_url, "UP_KEY", family=family,
                         api_version="2024-10-21" if fake.azure else None)
    p = plan([up, mock_provider("fake")],
             [group("batch", target("up", "gpt-4o-mini", price=PRICE), aliases=("gpt-batch",)),
              group("chat", target("fake", "demo"))],
             auth=Auth(master_key=None, keys=(_key("a", team="red"), _key("b"), _key("c", models=("chat",))),
                       jwt=None, refresh=30.0))
    return replace(p, store=replace(p.store, database=text(database)), files=Files(model="batch"), **kw)


@asynccontextmanager
async def _setup(database: str = "sqlite://:memory:", *, azure: bool = False,
                 **kw: Any) -> AsyncIterator[tuple[Handle, FakeFiles, dict[str, openai.AsyncOpenAI]]]:
    async with open_fake(FakeFiles(azure=azure)) as fake:
        async with open_gateway(_plan(fake, database, **kw)) as gw:
            clients = {n: openai.AsyncOpenAI(base_url=base_url(gw), api_key=f"sk-{n}", max_retries=0)
                       for n in ("a", "b", "c")}
            yield gw, fake, clients


def _lines(model: str = "batch", n: int = 3, url: str = "/v1/chat/completions") -> bytes:
    return "".join(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": url,
                               "body": {"model": model, "messages": [{"role": "user", "content": f"q{i}"}]}}) + "\n"
                   for i in range(n)).encode()


async def _spend(gw: Handle) -> list[dict[str, Any]]:
    app = gw.app
    assert app.store is not None and app.access.spend is not None
    while app.access.spend.pending:
        await trio.sleep(0.02)
    return await app.store.run(lambda: list(SpendLog.select().dicts()))


async def _completed(client: openai.AsyncOpenAI, batch_id: str) -> Any:
    for _ in range(10):  # the fake moves one step per retrieve
        batch = await client.batches.retrieve(batch_id)
        if batch.status == "completed":
            return batch
    raise AssertionError(f"batch {batch_id} never completed")


@pytest.mark.parametrize("azure", [False, True], ids=["openai", "azure"])
async def test_files_and_batches_flow_scoped_and_metered_once(store_url: str, azure: bool) -> None:  # noqa: F811
    with trio.fail_after(30):
        async with _setup(store_url, azure=azure) as (gw, fake, c):
            a, b = c["a"], c["b"]
            up = await a.files.create(file=("in.jsonl", _lines()), purpose="batch")
            assert up.purpose == "batch" and up.filename == "in.jsonl" and up.id in fake.files
            # sidegate pointed every line at the deployment's model (the fake refuses other models)
            sent = [json.loads(x) for x in fake.content[up.id].splitlines()]
            assert {s["body"]["model"] for s in sent} == {"gpt-4o-mini"}
            assert {s["url"] for s in sent} == {"/chat/completions" if azure else "/v1/chat/completions"}
            other = await b.files.create(file=("notes.txt", b"hello"), purpose="user_data")

            assert [f.id for f in (await a.files.list()).data] == [up.id]
            assert [f.id for f in (await b.files.list()).data] == [other.id]
            assert [f.id for f in (await a.files.list(purpose="user_data")).data] == []
            assert (await a.files.retrieve(up.id)).bytes == len(fake.content[up.id])
            for call in (b.files.retrieve(up.id), b.files.content(up.id), b.files.delete(up.id)):
                with pytest.raises(openai.NotFoundError) as missing:
                    await call
                assert missing.value.code == "file_not_found"
            with pytest.raises(openai.NotFoundError):  # another key's file cannot feed a batch either
                await b.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")
            assert up.id in fake.files, "nothing of b's reached a's file"

            batch = await a.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                           completion_window="24h", metadata={"job": "nightly"})
            assert batch.status == "validating" and batch.input_file_id == up.id
            with pytest.raises(openai.NotFoundError) as missing:
                await b.batches.retrieve(batch.id)
            assert missing.value.code == "batch_not_found"
            assert (await b.batches.list()).data == []
            done = await _completed(a, batch.id)
            assert done.output_file_id and done.request_counts and done.request_counts.completed == 3
            assert [x.id for x in (await a.batches.list()).data] == [batch.id]
            with pytest.raises(openai.NotFoundError):
                await b.files.content(done.output_file_id)
            assert await _spend(gw) == [], "nothing is metered before the results are fetched"

            first = await a.files.content(done.output_file_id)
            second = await a.files.content(done.output_file_id)
            assert first.content == second.content == fake.content[done.output_file_id]
            assert [json.loads(x)["custom_id"] for x in first.content.splitlines()] == ["req-0", "req-1", "req-2"]
            assert fake.content_fetches == 2
            rows = await _spend(gw)
            assert len(rows) == 1, "metered exactly once, however often the results are fetched"
            row = rows[0]
            prompt, completion = 10 + 11 + 12, 3 * 5
            assert (row["request_id"], row["model"], row["team"]) == (batch.id, "batch", "red")
            assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
            assert row["cost"] == pytest.approx((prompt * PRICE.input + completion * PRICE.output) / 2)
            assert gw.app.store is not None
            stored = await gw.app.store.run(lambda: StoredBatch.get_by_id(batch.id))
            assert stored.metered_at is not None and stored.cost == pytest.approx(row["cost"])

            deleted = await a.files.delete(up.id)
            assert deleted.deleted and up.id not in fake.files
            with pytest.raises(openai.NotFoundError):
                await a.files.retrieve(up.id)
            owners = await gw.app.store.run(lambda: sorted({r.owner for r in StoredFile.select()}))
            assert len(owners) == 2 and "" not in owners


async def test_cancel_and_pages() -> None:
    with trio.fail_after(20):
        async with _setup() as (_gw, _fake, c):
            a = c["a"]
            up = await a.files.create(file=("in.jsonl", _lines("gpt-batch", 2)), purpose="batch")
            made = [await a.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                           completion_window="24h") for _ in range(3)]
            cancelling = await a.batches.cancel(made[0].id)
            assert cancelling.status == "cancelling"
            assert (await a.batches.retrieve(made[0].id)).status == "cancelled"
            page = await a.batches.list(limit=2)
            assert len(page.data) == 2 and page.has_more
            every = [x.id async for x in a.batches.list(limit=2)]  # the SDK follows `after`
            assert sorted(every) == sorted(m.id for m in made) and len(every) == 3
            with pytest.raises(openai.NotFoundError):
                await a.batches.cancel("batch_unknown")


async def test_bad_uploads_and_batches_get_openai_errors() -> None:
    with trio.fail_after(20):
        async with _setup() as (gw, _fake, c):
            a = c["a"]
            url = base_url(gw)
            auth = {"authorization": "Bearer sk-a"}
            async with httpx.AsyncClient(base_url=url, headers=auth) as raw:
                r = await raw.post("/files", files={"file": ("x.jsonl", b"{}")})
                assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
                r = await raw.post("/files", files={"purpose": (None, "batch")})
                assert r.status_code == 400 and r.json()["error"]["param"] == "file"
                r = await raw.post("/files", json={"purpose": "batch"})
                assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
                r = await raw.post("/files", files={"file": ("x.txt", b"hi")}, data={"purpose": "x", "model": "nope"})
                assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
                r = await raw.post("/files", files={"file": ("x.txt", b"hi")}, data={"purpose": "x", "model": "chat"})
                assert r.status_code == 400 and r.json()["error"]["code"] == "files_not_supported"
                r = await raw.post("/batches", json={"endpoint": "/v1/chat/completions", "completion_window": "24h"})
                assert r.status_code == 400 and r.json()["error"]["param"] == "input_file_id"
                r = await raw.get("/files", params={"limit": "0"})
                assert r.status_code == 400 and r.json()["error"]["param"] == "limit"
            with pytest.raises(openai.BadRequestError) as refused:  # the upstream's own refusal, relayed
                await a.files.create(file=("x.txt", b"hi"), purpose="wrong")  # type: ignore[arg-type]
            assert refused.value.param == "purpose" and "is not one of" in refused.value.message
            with pytest.raises(openai.BadRequestError) as refused:
                await a.files.create(file=("in.jsonl", _lines("gpt-4o")), purpose="batch")
            assert "line 1" in refused.value.message and refused.value.param == "file"
            with pytest.raises(openai.BadRequestError) as refused:
                await a.files.create(file=("in.jsonl", b"not json\n"), purpose="batch")
            assert "not JSON" in refused.value.message
            up = await a.files.create(file=("in.jsonl", _lines()), purpose="batch")
            with pytest.raises(openai.BadRequestError) as refused:
                await a.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                       completion_window="48h")  # type: ignore[arg-type]
            assert refused.value.param == "completion_window"
            with pytest.raises(openai.NotFoundError) as missing:
                await a.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                                       completion_window="24h")
            assert missing.value.code == "file_not_found"
            with pytest.raises(openai.PermissionDeniedError):  # c may use only `chat`
                await c["c"].files.create(file=("x.txt", b"hi"), purpose="user_data")
            with pytest.raises(openai.AuthenticationError):
                await openai.AsyncOpenAI(base_url=url, api_key="sk-wrong", max_retries=0).files.list()


async def test_an_upload_over_the_bound_is_a_413() -> None:
    with trio.fail_after(20):
        async with open_fake(FakeFiles()) as fake:
            p = _plan(fake)
            p = replace(p, server=replace(p.server, max_file_size=4096))
            async with open_gateway(p) as gw:
                a = openai.AsyncOpenAI(base_url=base_url(gw), api_key="sk-a", max_retries=0)
                with pytest.raises(openai.APIStatusError) as big:
                    await a.files.create(file=("big.bin", b"x" * 8192), purpose="user_data")
                assert big.value.status_code == 413 and big.value.code == "file_too_large"
                assert "server.max_file_size" in big.value.message
                small = await a.files.create(file=("small.bin", b"x" * 1000), purpose="user_data")
                assert small.bytes == 1000
                assert sum(1 for s in fake.seen if s.method == "POST") == 1, "the big one never reached upstream"


async def test_concurrent_fetches_meter_once() -> None:
    with trio.fail_after(20):
        async with _setup() as (gw, _fake, c):
            a = c["a"]
            up = await a.files.create(file=("in.jsonl", _lines(n=2)), purpose="batch")
            batch = await a.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                           completion_window="24h")
            done = await _completed(a, batch.id)
            got: list[bytes] = []

            async def fetch() -> None:
                got.append((await a.files.content(str(done.output_file_id))).content)

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(fetch)
            assert len(got) == 4 and len(set(got)) == 1
            rows = await _spend(gw)
            assert [r["request_id"] for r in rows] == [batch.id]


async def test_upstream_down_and_rate_limits() -> None:
    with trio.fail_after(20):
        async with open_fake(FakeFiles()) as fake:
            p = _plan(fake)
            limited = replace(_key("a", team="red"), limits=LimitRule(rpm=2, tpm=None, parallel=None))
            assert p.auth is not None
            p = replace(p, auth=replace(p.auth, keys=(limited, *p.auth.keys[1:])))
            async with open_gateway(p) as gw:
                a = openai.AsyncOpenAI(base_url=base_url(gw), api_key="sk-a", max_retries=0)
                await a.files.create(file=("n.txt", b"1"), purpose="user_data")
                await a.files.create(file=("n.txt", b"2"), purpose="user_data")
                with pytest.raises(openai.RateLimitError):
                    await a.files.create(file=("n.txt", b"3"), purpose="user_data")
            down = replace(p, providers=tuple(replace(x, base_url="http://127.0.0.1:9/v1") if x.name == "up" else x
                                              for x in p.providers), auth=_plan(fake).auth)
            async with open_gateway(down) as gw:
                a = openai.AsyncOpenAI(base_url=base_url(gw), api_key="sk-a", max_retries=0)
                with pytest.raises(openai.APIStatusError) as failed:
                    await a.files.create(file=("n.txt", b"1"), purpose="user_data")
                assert failed.value.status_code == 502 and failed.value.code == "upstream_connect_error"


async def test_the_upload_names_its_model_group_without_files_model() -> None:
    with trio.fail_after(20):
        async with open_fake(FakeFiles()) as fake:
            async with open_gateway(replace(_plan(fake), files=Files())) as gw:
                a = openai.AsyncOpenAI(base_url=base_url(gw), api_key="sk-a", max_retries=0)
                with pytest.raises(openai.BadRequestError) as refused:
                    await a.files.create(file=("n.txt", b"1"), purpose="user_data")
                assert refused.value.param == "model"
                named = await a.files.create(file=("in.jsonl", _lines("gpt-batch")), purpose="batch",
                                             extra_body={"model": "gpt-batch"})
                assert gw.app.store is not None
                row = await gw.app.store.run(lambda: StoredFile.get_by_id(named.id))
                assert (row.group, row.deployment) == ("batch", "up/gpt-4o-mini")
                uploads = [s.raw for s in fake.seen if s.method == "POST"]
                assert len(uploads) == 1 and b'name="model"' not in uploads[0], "the form's `model` stays with sidegate"
                assert b'name="purpose"' in uploads[0]


async def test_a_hung_upstream_is_a_504_after_the_groups_timeout() -> None:
    with trio.fail_after(20):
        async with open_fake(FakeFiles()) as fake:
            p = _plan(fake)
            p = replace(p, models=tuple(replace(g, timeout=0.3) for g in p.models))
            async with open_gateway(p) as gw:
                a = openai.AsyncOpenAI(base_url=base_url(gw), api_key="sk-a", max_retries=0)
                up = await a.files.create(file=("n.txt", b"1"), purpose="user_data")
                fake.stall = True
                with pytest.raises(openai.APIStatusError) as slow:
                    await a.files.retrieve(up.id)
                assert slow.value.status_code == 504
                with pytest.raises(openai.APIStatusError) as slow:
                    await a.files.content(up.id)
                assert slow.value.status_code == 504


async def test_a_content_cut_midway_meters_nothing_until_a_whole_fetch() -> None:
    with trio.fail_after(20):
        async with _setup() as (gw, fake, c):
            a = c["a"]
            up = await a.files.create(file=("in.jsonl", _lines(n=4)), purpose="batch")
            batch = await a.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                           completion_window="24h")
            done = await _completed(a, batch.id)
            fake.cut_after = 150
            with pytest.raises(openai.APIConnectionError):
                await a.files.content(str(done.output_file_id))
            assert await _spend(gw) == []
            whole = await a.files.content(str(done.output_file_id))
            assert whole.content == fake.content[str(done.output_file_id)]
            rows = await _spend(gw)
            assert [(r["request_id"], r["prompt_tokens"]) for r in rows] == [(batch.id, 10 + 11 + 12 + 13)]
