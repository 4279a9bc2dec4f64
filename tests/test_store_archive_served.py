"""The spend archive in a running sidegate (`store.archive` compiled from a spec, the archiver in the
server's nursery) against moto's S3 server: the closed periods already in the store are written
while the sidecar serves the openai SDK, and the live request's row (an open period) is not."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan.canonical import dumps
from sidegate.runtime.store.database import Store
from sidegate.runtime.store.models import SpendLog
from sidegate.runtime.store.spend import SpendRow, write_rows
from tests.support.gateway import base_url, open_gateway
from tests.support.s3 import S3Server, s3_server  # noqa: F401 - fixture

SPEC = """
version: 1
providers:
  fake: {{type: mock, text: "archived later"}}
models:
  demo:
    targets: [{{provider: fake, model: demo, price: {{input: 0.001, output: 0.002}}}}]
store:
  database: "sqlite:///{db}"
  archive:
    url: s3://{bucket}/team-a
    every: 1h
    endpoint_url: {endpoint}
    access_key_id: ${{T_SERVED_KEY_ID}}
    secret_access_key: {{env: T_SERVED_SECRET}}
"""


def _row(i: int, at: float) -> SpendRow:
    return SpendRow(request_id=f"old-{i}", key_hash=None, team=None, user=None, model="demo", deployment="fake/demo",
                    prompt_tokens=3, completion_tokens=2, cached_tokens=0, reasoning_tokens=0, cost=0.01, estimated=False,
                    latency_ms=5.0, status=200, created_at=at)


async def _listing(client: Any, bucket: str) -> list[str]:
    found = await trio.to_thread.run_sync(lambda: client.list_objects_v2(Bucket=bucket).get("Contents", []))
    return [o["Key"] for o in found]


async def test_a_served_sidecar_archives_closed_periods_while_it_serves(
        tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    bucket = f"served-{uuid.uuid4().hex[:8]}"
    client = s3_server.bucket(bucket)
    hour = int(time.time() // 3600 * 3600) - 3 * 3600  # three hours ago: long closed
    store = await Store.open(f"sqlite:///{tmp_path}/s.db")
    await store.run(lambda: write_rows([_row(0, hour + 10), _row(1, hour + 20), _row(2, hour + 3600 + 1)]))
    await store.aclose()
    monkeypatch.setenv("T_SERVED_KEY_ID", s3_server.key_id)
    monkeypatch.setenv("T_SERVED_SECRET", s3_server.secret)
    result = compile_text(SPEC.format(db=f"{tmp_path}/s.db", bucket=bucket, endpoint=s3_server.url), "spec.yaml")
    assert result.plan is not None, result.diagnostics
    assert s3_server.secret not in dumps(result.plan)  # the plan holds the reference, not the key

    async with open_gateway(result.plan) as handle:
        sdk = openai.AsyncOpenAI(base_url=base_url(handle), api_key="unused", max_retries=0)
        answer = await sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "archived later"
        with trio.fail_after(20):
            while len(await _listing(client, bucket)) < 2:
                await trio.sleep(0.05)  # polls a condition: the archiver's objects
        assert handle.app.store is not None
        with trio.fail_after(10):  # the spend writer stores the live request's row in the background
            while len(live := await handle.app.store.run(lambda: [r.request_id for r in SpendLog.select()])) < 4:
                await trio.sleep(0.02)
    keys = await _listing(client, bucket)
    day = time.strftime("%Y/%m/%d", time.gmtime(hour))
    assert keys[0] == f"team-a/spend/{day}/{time.gmtime(hour).tm_hour:02d}.jsonl.gz"
    body = await trio.to_thread.run_sync(lambda: client.get_object(Bucket=bucket, Key=keys[0])["Body"].read())
    rows = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert [r["request_id"] for r in rows] == ["old-0", "old-1"] and rows[0]["cost"] == 0.01
    assert len(live) == 4  # the live request's row is in the store, in an open period: not archived
    every = set()
    for key in keys:
        data = await trio.to_thread.run_sync(lambda k=key: client.get_object(Bucket=bucket, Key=k)["Body"].read())
        every |= {json.loads(line)["request_id"] for line in gzip.decompress(data).splitlines()}
    assert every == {"old-0", "old-1", "old-2"}


def test_the_archive_command_runs_one_pass_and_reports_it(tmp_path: Path, s3_server: S3Server,  # noqa: F811
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from sidegate.compiler.cli import main

    bucket = f"cli-{uuid.uuid4().hex[:8]}"
    client = s3_server.bucket(bucket)
    hour = int(time.time() // 3600 * 3600) - 2 * 3600

    async def seed() -> None:
        store = await Store.open(f"sqlite:///{tmp_path}/s.db")
        await store.run(lambda: write_rows([_row(0, hour + 10)]))
        await store.aclose()

    trio.run(seed)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(db=f"{tmp_path}/s.db", bucket=bucket, endpoint=s3_server.url))
    monkeypatch.setenv("T_SERVED_KEY_ID", s3_server.key_id)
    monkeypatch.setenv("T_SERVED_SECRET", "not-the-secret-0123456789")
    assert main(["archive", str(spec)]) == 1  # refused by the server: reported, nothing written
    out, err = capsys.readouterr()
    assert json.loads(out)["error"].startswith("PutObject") and "SignatureDoesNotMatch" in err
    assert "not-the-secret-0123456789" not in out + err

    monkeypatch.setenv("T_SERVED_SECRET", s3_server.secret)
    assert main(["archive", str(spec)]) == 0
    summary = json.loads(capsys.readouterr().out)
    key = f"team-a/spend/{time.strftime('%Y/%m/%d/%H', time.gmtime(hour))}.jsonl.gz"
    assert summary == {"archived": [{"period": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(hour)),
                                     "object": f"s3://{bucket}/{key}", "rows": 1}], "pruned": 0, "error": None}
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    assert main(["archive", str(spec)]) == 0 and json.loads(capsys.readouterr().out)["archived"] == []


def test_serve_refuses_to_start_a_parquet_archive_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import sidegate.runtime.store.archive as archive
    from sidegate.runtime.server import run

    monkeypatch.setattr(archive, "parquet_available", lambda: False)
    monkeypatch.setenv("T_SERVED_KEY_ID", "id")
    monkeypatch.setenv("T_SERVED_SECRET", "secret-value-never-printed")
    text = SPEC.format(db=f"{tmp_path}/s.db", bucket="spend-x", endpoint="http://127.0.0.1:9") + "    format: parquet\n"
    plan = compile_text(text + "server: {listen: '127.0.0.1:0'}\n", "spec.yaml").plan
    assert plan is not None
    assert run(plan, load_plan=lambda: plan, watch_path=None, workers=1) == 1
    err = capsys.readouterr().err
    assert "cannot start: store.archive.format parquet needs pyarrow: pip install 'sidegate[parquet]'" in err
    assert "secret-value-never-printed" not in err
