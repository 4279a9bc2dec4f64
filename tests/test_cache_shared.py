"""The shared cache backends: Redis shared by two sidecar processes (`sidegate serve` twice), the
spec's store (sqlite file and PostgreSQL) shared by two gateways, and a Redis outage that turns
requests into misses instead of errors."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from tests.support.cache_fakes import CountingOpenAI
from tests.support.fake_base import open_fake
from tests.support.gateway import open_gateway
from tests.support.postgres import pg_server, store_url  # noqa: F401 - fixtures
from tests.support.redis import RedisServer, redis_server

ROOT = Path(__file__).resolve().parent.parent
ASK = [{"role": "user", "content": "What is the capital of France?"}]
SPEC = """\
version: 1
server: {{listen: "127.0.0.1:{port}"}}
providers:
  oa: {{type: openai, base_url: "{url}", api_key: "${{CACHE_UPSTREAM_KEY}}"}}
models:
  fast: {{targets: [{{provider: oa, model: gpt-4o-mini}}]}}
store: {{database: "{database}"}}
cache: {{backend: {backend}, ttl: 1h{extra}}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def sidecar(spec: Path) -> AsyncIterator[None]:
    """`sidegate serve spec` as its own process, until it logged `started` (its log drained meanwhile)."""
    proc = await trio.lowlevel.open_process([sys.executable, "-m", "sidegate.compiler.cli", "serve", str(spec)], cwd=ROOT,
                                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    started = trio.Event()
    lines: list[bytes] = []

    async def drain() -> None:
        buffer = b""
        async for data in proc.stderr:  # type: ignore[union-attr]
            buffer += data
            *done, buffer = buffer.split(b"\n")
            lines.extend(done)
            if any(b'"event":"started"' in line for line in done):
                started.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        try:
            with trio.fail_after(30):
                await started.wait()
            yield
        finally:
            proc.terminate()
            with trio.move_on_after(15):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
            nursery.cancel_scope.cancel()
    assert not any(b"cache_backend_failed" in line for line in lines), b"\n".join(lines)


async def ask(port: int, key: str = "sk-master-0001") -> tuple[str, str]:
    c = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
    r = await c.chat.completions.with_raw_response.create(model="fast", messages=ASK, temperature=0)
    return r.headers["x-sidegate-cache"], r.parse().choices[0].message.content or ""


async def until_stored(port: int) -> tuple[str, str]:
    """Ask until the answer is a hit (a shared backend is written in the background, just after the
    miss's answer went out): the condition, bounded by the caller's deadline."""
    while True:
        got = await ask(port)
        if got[0] == "hit":
            return got
        await trio.sleep(0.02)


@pytest.fixture
def server() -> Any:
    with redis_server() as s:
        yield s


async def test_a_redis_cache_is_shared_by_two_sidecar_processes(server: RedisServer, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_UPSTREAM_KEY", "sk-up")
    ports = [_free_port(), _free_port()]
    async with open_fake(CountingOpenAI()) as up:
        specs = []
        for i, port in enumerate(ports):
            specs.append(tmp_path / f"s{i}.yaml")
            specs[-1].write_text(SPEC.format(port=port, url=up.base_url, database="sqlite://:memory:",
                                             backend="redis", extra=f", redis: \"{server.url}\""))
        with trio.fail_after(60):
            async with sidecar(specs[0]), sidecar(specs[1]):
                first = await ask(ports[0])
                await until_stored(ports[0])
                stored = up.calls  # the polling's own misses (a busy machine writes later) are not counted
                other = await ask(ports[1])
                async with httpx.AsyncClient() as http:
                    metrics = (await http.get(f"http://127.0.0.1:{ports[1]}/metrics")).text
    assert first[0] == "miss" and other == ("hit", first[1])
    assert up.calls == stored, "the second sidecar answered from the entry the first one wrote"
    assert 'sidegate_cache_requests_total{model="fast",result="hit"} 1.0' in metrics
    assert len(server.client().keys("sidegate:cache:*")) == 1


async def test_a_redis_outage_makes_misses_not_errors(server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_UPSTREAM_KEY", "sk-up")
    async with open_fake(CountingOpenAI()) as up:
        text = SPEC.format(port=0, url=up.base_url, database="sqlite://:memory:", backend="redis",
                           extra=f", redis: \"{server.url}\"")
        plan = compile_text(text, "redis.yaml").plan
        assert plan is not None
        with trio.fail_after(30):
            async with open_gateway(plan) as gw:
                assert (await ask(gw.port))[0] == "miss"
                await until_stored(gw.port)
                stored = up.calls
                server.stop()
                down = [await ask(gw.port) for _ in range(3)]
                async with httpx.AsyncClient() as http:
                    metrics = (await http.get(f"http://127.0.0.1:{gw.port}/metrics")).text
    assert [h for h, _ in down] == ["miss"] * 3 and up.calls == stored + 3
    assert 'sidegate_cache_backend_errors_total{operation="get"} 1.0' in metrics, "left alone after one failure"


async def test_the_store_backend_is_shared_by_two_gateways(store_url: str, tmp_path: Path,  # noqa: F811
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Two processes, as two sidecars are (one process holds one store: its tables are bound to it).
    monkeypatch.setenv("CACHE_UPSTREAM_KEY", "sk-up")
    monkeypatch.setenv("CACHE_MASTER", "sk-master-0001")
    ports = [_free_port(), _free_port()]
    async with open_fake(CountingOpenAI()) as up:
        specs = []
        for i, port in enumerate(ports):
            specs.append(tmp_path / f"s{i}.yaml")
            specs[-1].write_text(SPEC.format(port=port, url=up.base_url, database=store_url, backend="store", extra="")
                                 + 'auth: {master_key: "${CACHE_MASTER}"}\n')
        with trio.fail_after(60):
            async with sidecar(specs[0]), sidecar(specs[1]):
                first = await ask(ports[0])
                await until_stored(ports[0])
                stored = up.calls
                other = await ask(ports[1])
                async with httpx.AsyncClient() as http:
                    purged = (await http.post(f"http://127.0.0.1:{ports[1]}/cache/purge", json={},
                                              headers={"Authorization": "Bearer sk-master-0001"})).json()
                after = await ask(ports[0])
    assert first[0] == "miss" and other == ("hit", first[1])
    assert purged == {"purged": 1, "model": None} and after[0] == "miss"
    assert up.calls == stored + 1, "the other gateway's hit cost nothing; after the purge, one call"
