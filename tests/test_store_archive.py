"""The spend archive against a real S3-compatible server (moto's server mode, SigV4 enforced), on
sqlite and PostgreSQL: closed periods are written once, read back and matched against the rows;
a second pass writes nothing; a crash between upload and marker re-uploads the same object; two
sidecars sharing a store archive each period once; pruning after keep_days (a clock the test sets);
the bucket down or the credentials wrong fail the pass cleanly, keep the rows, and the next pass
catches up."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.plan import LogFormat, LogLevel, Logs, Secret, SecretPart, SecretSource
from sidegate.runtime.plan.archive import Archive, ArchiveFormat
from sidegate.runtime.plan.canonical import dumps
from sidegate.runtime.store.archive import LEASE, Archiver, _claim, object_key
from sidegate.runtime.store.database import Store
from sidegate.runtime.store.models import ArchivedPeriod, SpendLog
from sidegate.runtime.store.spend import SpendRow, write_rows
from tests.support.postgres import pg_server, store_url  # noqa: F401 - fixtures
from tests.support.s3 import S3Server, free_port, s3_server, start_moto  # noqa: F401 - fixtures

HOUR = 3600
BASE = 1_796_004_000
"""2026-11-30T02:00:00Z, an hour's start."""
DAY = 86400
ROOT = Path(__file__).resolve().parents[1]


def _env(name: str) -> Secret:
    return Secret(parts=(SecretPart(source=SecretSource.ENV, value=name),))


def _config(server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> Archive:
    monkeypatch.setenv("T_ARCHIVE_KEY_ID", server.key_id)
    monkeypatch.setenv("T_ARCHIVE_SECRET", kw.pop("secret", server.secret))
    values: dict[str, Any] = dict(bucket=bucket, prefix="sidegate/prod", every=3600.0, grace=300.0,
                                  format=ArchiveFormat.JSONL_GZ, keep_days=None, endpoint_url=server.url,
                                  region="us-east-1", access_key_id=_env("T_ARCHIVE_KEY_ID"),
                                  secret_access_key=_env("T_ARCHIVE_SECRET"), path_style=True)
    values.update(kw)
    return Archive(**values)


def _logger() -> tuple[Logger, io.StringIO]:
    stream = io.StringIO()
    return Logger(Logs(format=LogFormat.JSON, level=LogLevel.INFO, bodies=False), stream), stream


def _lines(logger: Logger, stream: io.StringIO) -> list[dict[str, Any]]:
    logger.flush_nowait()
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _row(i: int, at: float) -> SpendRow:
    return SpendRow(request_id=f"req-{i}", key_hash=f"h{i % 3}", team="t" if i % 2 else None, user=None,
                    model="gpt-4o", deployment="openai/gpt-4o", prompt_tokens=10 + i, completion_tokens=i,
                    cached_tokens=0, reasoning_tokens=0, cost=0.001 * i, estimated=bool(i % 5 == 0),
                    latency_ms=12.5, status=200, created_at=at, cache_hit=i % 7 == 0, saved_cost=0.0)


async def _seed(store: Store, times: list[float]) -> None:
    await store.run(lambda: write_rows([_row(i, t) for i, t in enumerate(times)]))


def _objects(client: Any, bucket: str) -> dict[str, bytes]:
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def _db_rows(start: int, end: int) -> list[dict[str, Any]]:
    query = SpendLog.select().where((SpendLog.created_at >= start) & (SpendLog.created_at < end))
    return [{**r, "estimated": bool(r["estimated"]), "cache_hit": bool(r["cache_hit"])}
            for r in query.order_by(SpendLog.id).dicts()]


def _markers() -> list[tuple[int, str, int, str, bool]]:
    return [(m.period_start, m.object_key, m.rows, m.sha256, m.done)
            for m in ArchivedPeriod.select().order_by(ArchivedPeriod.period_start)]


async def _open(url: str, config: Archive, clock: Clock) -> tuple[Store, Archiver, Logger, io.StringIO]:
    store = await Store.open(url)
    logger, stream = _logger()
    return store, await Archiver.open(store, config, logger, clock=clock), logger, stream


async def test_closed_periods_are_written_once_and_match_the_rows(store_url: str, s3_server: S3Server,  # noqa: F811
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = f"spend-{uuid.uuid4().hex[:8]}"
    client = s3_server.bucket(bucket)
    clock = Clock(BASE + 2 * HOUR + 600)  # 04:10: 02:00 and 03:00 are closed (grace 5m), 04:00 is open
    times = [BASE + 5, BASE + 1800, BASE + 3599.5, BASE + HOUR + 1, BASE + 2 * HOUR + 30]
    store, archiver, logger, stream = await _open(store_url, _config(s3_server, bucket, monkeypatch), clock)
    await _seed(store, times)

    result = await archiver.run_once()
    assert result.error is None
    keys = ["sidegate/prod/spend/2026/11/30/02.jsonl.gz", "sidegate/prod/spend/2026/11/30/03.jsonl.gz"]
    assert [(s, k, n) for s, k, n in result.archived] == [(BASE, keys[0], 3), (BASE + HOUR, keys[1], 1)]
    objects = _objects(client, bucket)
    assert sorted(objects) == keys
    for start, key in ((BASE, keys[0]), (BASE + HOUR, keys[1])):
        lines = [json.loads(line) for line in gzip.decompress(objects[key]).splitlines()]
        assert lines == await store.run(lambda s=start: _db_rows(s, s + HOUR))
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["Metadata"]["sha256"] == hashlib.sha256(objects[key]).hexdigest()
    markers = await store.run(_markers)
    assert markers == [(BASE, keys[0], 3, hashlib.sha256(objects[keys[0]]).hexdigest(), True),
                       (BASE + HOUR, keys[1], 1, hashlib.sha256(objects[keys[1]]).hexdigest(), True)]
    assert [line["event"] for line in _lines(logger, stream)] == ["archived", "archived"]

    again = await archiver.run_once()  # nothing new is closed: no object, no marker
    assert again.archived == [] and sorted(_objects(client, bucket)) == keys and await store.run(_markers) == markers

    clock.now += HOUR  # 05:10: 04:00 closes
    later = await archiver.run_once()
    assert [k for _, k, _ in later.archived] == ["sidegate/prod/spend/2026/11/30/04.jsonl.gz"]
    assert len(await store.run(_markers)) == 3 and await store.run(lambda: SpendLog.select().count()) == 5
    await archiver.aclose()
    await store.aclose()


async def test_a_crash_between_upload_and_marker_reuploads_the_same_object(
        store_url: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    bucket = f"spend-{uuid.uuid4().hex[:8]}"
    client = s3_server.bucket(bucket)
    clock = Clock(BASE + HOUR + 600)
    store, archiver, _, _ = await _open(store_url, _config(s3_server, bucket, monkeypatch), clock)
    await _seed(store, [BASE + 10, BASE + 20])
    key = object_key(archiver.config, BASE)
    # A sidecar claimed the period, wrote a torn object, and died before its marker.
    assert await store.run(lambda: _claim(BASE, HOUR, key, "dead-sidecar", clock.now)) == "claimed"
    client.put_object(Bucket=bucket, Key=key, Body=b"torn")

    first = await archiver.run_once()  # the claim is fresh: left to its owner
    assert first.archived == [] and _objects(client, bucket)[key] == b"torn"
    clock.now += LEASE + 1  # the claim is stale: taken over, the same name written again
    second = await archiver.run_once()
    assert second.archived == [(BASE, key, 2)]
    objects = _objects(client, bucket)
    assert list(objects) == [key]
    lines = [json.loads(line) for line in gzip.decompress(objects[key]).splitlines()]
    assert [r["request_id"] for r in lines] == ["req-0", "req-1"]
    assert [(m[0], m[2], m[4]) for m in await store.run(_markers)] == [(BASE, 2, True)]
    await archiver.aclose()
    await store.aclose()


SIDECAR_SPEC = """
version: 1
providers:
  fake: {{type: mock}}
models:
  demo:
    targets: [{{provider: fake, model: demo}}]
store:
  database: "{db}"
  archive: {{url: "s3://{bucket}/shared", endpoint_url: "{endpoint}", access_key_id: "${{T_KEY_ID}}",
            secret_access_key: "${{T_SECRET}}"}}
"""


async def test_sidecars_sharing_a_store_archive_each_period_once(
        store_url: str, s3_server: S3Server, tmp_path: Any) -> None:  # noqa: F811
    """Three processes (`sidegate archive`, each a sidecar's pass) race over one store and bucket."""
    bucket = f"spend-{uuid.uuid4().hex[:8]}"
    client = s3_server.bucket(bucket)
    hour = int(time.time() // HOUR * HOUR) - 8 * HOUR
    store = await Store.open(store_url)
    await _seed(store, [hour + h * HOUR + 7 + i for h in range(6) for i in range(h + 1)])
    compiled = compile_text(SIDECAR_SPEC.format(db=store_url, bucket=bucket, endpoint=s3_server.url), "spec.yaml")
    assert compiled.plan is not None, compiled.diagnostics
    plan = tmp_path / "plan.json"
    plan.write_text(dumps(compiled.plan))  # --plan: the processes load no compiler
    env = {**os.environ, "PYTHONPATH": str(ROOT), "T_KEY_ID": s3_server.key_id, "T_SECRET": s3_server.secret}
    procs = [subprocess.Popen([sys.executable, "-m", "sidegate.compiler.cli", "archive", "--plan", str(plan)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [await trio.to_thread.run_sync(p.communicate, None, 60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    written = [(a["period"], a["rows"]) for out, _ in outputs for a in json.loads(out)["archived"]]
    periods = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(hour + h * HOUR)) for h in range(6)]
    assert sorted(written) == [(p, h + 1) for h, p in enumerate(periods)]  # every period once, no period twice
    assert len(_objects(client, bucket)) == 6
    assert [(m[0], m[2], m[4]) for m in await store.run(_markers)] == [(hour + h * HOUR, h + 1, True) for h in range(6)]
    await store.aclose()


async def test_rows_are_pruned_after_keep_days_once_archived(store_url: str, s3_server: S3Server,  # noqa: F811
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = f"spend-{uuid.uuid4().hex[:8]}"
    client = s3_server.bucket(bucket)
    clock = Clock(BASE + 2 * HOUR + 600)
    store, archiver, logger, stream = await _open(store_url, _config(s3_server, bucket, monkeypatch, keep_days=31),
                                                  clock)
    await _seed(store, [BASE + 1, BASE + 2, BASE + HOUR + 1])
    assert len((await archiver.run_once()).archived) == 2
    count = lambda: SpendLog.select().count()  # noqa: E731
    clock.now = BASE + 31 * DAY + 30  # 31 days after the first period's start: it has not ended 31 days ago
    assert (await archiver.run_once()).pruned == 0 and await store.run(count) == 3
    clock.now = BASE + 31 * DAY + HOUR + 1  # the first period ended 31 days ago, the second has not
    first = await archiver.run_once()
    assert first.pruned == 2 and first.archived == []
    assert [r.request_id for r in await store.run(lambda: list(SpendLog.select()))] == ["req-2"]
    # a row recorded late into the second period (a journal replayed) after it was archived
    await store.run(lambda: write_rows([_row(9, BASE + HOUR + 99)]))
    clock.now = BASE + 31 * DAY + 2 * HOUR + 1
    second = await archiver.run_once()  # the period's object is written again, whole, then pruned
    key = "sidegate/prod/spend/2026/11/30/03.jsonl.gz"
    assert second.archived == [(BASE + HOUR, key, 2)] and second.pruned == 2 and await store.run(count) == 0
    objects = _objects(client, bucket)
    assert len(objects) == 2  # the archive keeps everything
    assert [json.loads(line)["request_id"] for line in gzip.decompress(objects[key]).splitlines()] == ["req-2", "req-9"]
    events = [line["event"] for line in _lines(logger, stream)]
    assert events.count("archive_late_rows") == 1 and events.count("archived") == 3
    markers = await store.run(lambda: [(m.rows, m.pruned_at is not None) for m in ArchivedPeriod.select()
                                       .order_by(ArchivedPeriod.period_start)])
    assert markers == [(2, True), (2, True)]
    await archiver.aclose()
    await store.aclose()


async def test_the_bucket_down_fails_the_pass_keeps_the_rows_and_the_next_period_catches_up(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, s3_server: S3Server) -> None:  # noqa: F811
    port = free_port()  # nothing listens there yet
    down = replace(_config(s3_server, "spend-later", monkeypatch, keep_days=1), endpoint_url=f"http://127.0.0.1:{port}")
    clock = Clock(BASE + HOUR + 600)
    store, archiver, logger, stream = await _open(f"sqlite:///{tmp_path}/s.db", down, clock)
    await _seed(store, [BASE + 1, BASE + 2])
    result = await archiver.run_once()
    assert result.archived == [] and result.error is not None and "Could not connect" in result.error
    failed = [line for line in _lines(logger, stream) if line["event"] == "archive_failed"]
    assert failed and failed[0]["level"] == "error" and failed[0]["retry"] == "next period"
    assert await store.run(_markers) == []  # the claim was released
    clock.now += 3 * DAY  # far past keep_days: nothing is archived, so nothing is pruned
    still = await archiver.run_once()
    assert still.error is not None and still.pruned == 0 and await store.run(lambda: SpendLog.select().count()) == 2
    server = await trio.to_thread.run_sync(partial(start_moto, port, auth=False))  # the bucket is back
    try:
        server.bucket("spend-later")
        await _seed(store, [BASE + 2 * HOUR + 5])
        later = await archiver.run_once()
        assert [(s, n) for s, _, n in later.archived] == [(BASE, 2), (BASE + 2 * HOUR, 1)]
        assert later.error is None and later.pruned == 3  # archived, then (3 days on) pruned
        assert await store.run(lambda: SpendLog.select().count()) == 0
        assert len(_objects(server.client(), "spend-later")) == 2
    finally:
        await archiver.aclose()
        await store.aclose()
        server.stop()


async def test_wrong_credentials_log_clearly_without_the_secret(tmp_path: Any, s3_server: S3Server,  # noqa: F811
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = f"spend-{uuid.uuid4().hex[:8]}"
    client = s3_server.bucket(bucket)
    wrong = "wrongSecretKEY+3f9a1c2b7d4e6f8091a2b3c4d5e6f70"
    clock = Clock(BASE + HOUR + 600)
    store, archiver, logger, stream = await _open(f"sqlite:///{tmp_path}/s.db",
                                                  _config(s3_server, bucket, monkeypatch, secret=wrong), clock)
    await _seed(store, [BASE + 1])
    result = await archiver.run_once()
    assert result.archived == [] and result.error is not None and "SignatureDoesNotMatch" in result.error
    text = (logger.flush_nowait(), stream.getvalue())[1]
    assert "archive_failed" in text and "SignatureDoesNotMatch" in text and "HTTP 403" in text
    assert wrong not in text and wrong not in result.error and s3_server.secret not in text
    assert await store.run(_markers) == [] and await store.run(lambda: SpendLog.select().count()) == 1
    assert _objects(client, bucket) == {}
    await archiver.aclose()
    await store.aclose()


async def test_parquet_objects_hold_the_rows(tmp_path: Any, s3_server: S3Server,  # noqa: F811
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    bucket = f"spend-{uuid.uuid4().hex[:8]}"
    client = s3_server.bucket(bucket)
    config = _config(s3_server, bucket, monkeypatch, format=ArchiveFormat.PARQUET, every=900.0, prefix="")
    store, archiver, _, _ = await _open(f"sqlite:///{tmp_path}/s.db", config, Clock(BASE + HOUR))
    await _seed(store, [BASE + 900 + 1, BASE + 900 + 2])
    assert [k for _, k, _ in (await archiver.run_once()).archived] == ["spend/2026/11/30/0215.parquet"]
    table = pq.read_table(io.BytesIO(_objects(client, bucket)["spend/2026/11/30/0215.parquet"]))
    assert table.to_pylist() == await store.run(lambda: _db_rows(BASE + 900, BASE + 1800))
    await archiver.aclose()
    await store.aclose()


async def test_parquet_without_pyarrow_refuses_to_start(tmp_path: Any, s3_server: S3Server,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import sidegate.runtime.store.archive as archive

    monkeypatch.setattr(archive, "parquet_available", lambda: False)
    store = await Store.open(f"sqlite:///{tmp_path}/s.db")
    config = _config(s3_server, "unused", monkeypatch, format=ArchiveFormat.PARQUET)
    with pytest.raises(archive.ArchiveUnavailable, match=r"needs pyarrow: pip install 'sidegate\[parquet\]'"):
        await Archiver.open(store, config, _logger()[0])
    await store.aclose()


def test_every_spend_log_column_is_archived() -> None:
    """Rows are pruned once archived: a column the archive leaves out would be lost with them."""
    from sidegate.runtime.store.archive_encode import COLUMNS

    assert [name for name, _ in COLUMNS] == list(SpendLog._meta.sorted_field_names)
