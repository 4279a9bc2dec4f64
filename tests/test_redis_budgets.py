"""Budget reservations shared through Redis with atomic Lua scripts: three sidecar processes
sharing a budget worth 3.8 requests serve at most 4 of 200 concurrent requests (the same bound as
one process); the reservations of a sidecar that died are ignored once its heartbeat expires; with
Redis down each sidecar decides alone, at once, and the spend it settled reaches Redis when it is
back."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trio.lowlevel

from sidegate.runtime.governance.limits import Budget, Ledger
from sidegate.runtime.governance.redis_budget import SharedBudgets
from sidegate.runtime.governance.redis_sync import PREFIX, RedisSync
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.plan import LogLevel
from tests.support.plans import text
from tests.support.redis import RedisServer, redis_server

ROOT = Path(__file__).resolve().parents[1]
INPUT, OUTPUT = 2.5e-6, 1e-5  # gpt-4o, USD per token
COST = 4 * INPUT + 50 * OUTPUT  # one answer: "hi" is 4 prompt tokens to the mock; 50 completion tokens
BODY = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
WORDS = " ".join(f"w{i}" for i in range(50))


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        yield s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SPEC = """
version: 1
server: {{listen: "127.0.0.1:{port}"}}
providers:
  fake: {{type: mock, text: "{words}", latency: 200ms}}
models:
  demo:
    targets: [{{provider: fake, model: demo, price: {{input: 2.5, output: 10}}}}]
auth:
  keys:
    - {{name: app, key: "${{TEST_APP_KEY}}", budget: {{amount: {amount!r}, period: 1d}}}}
store: {{database: "sqlite:///{db}", redis: "{redis}", redis_sync: 100ms}}
"""


@contextmanager
def _sidecar(tmp_path: Path, n: int, redis_url: str, amount: float) -> Iterator[int]:
    port = _free_port()
    spec = tmp_path / f"sidecar{n}.yaml"
    spec.write_text(SPEC.format(port=port, words=WORDS, amount=amount, db=tmp_path / f"s{n}.db", redis=redis_url))
    proc = subprocess.Popen([sys.executable, "-m", "sidegate.compiler.cli", "serve", str(spec)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True, env={**_env(), "TEST_APP_KEY": "sk-app-secret"})
    assert proc.stderr is not None
    started, deadline = False, time.monotonic() + 40
    while not started and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        started = line.startswith("{") and json.loads(line).get("event") == "started"
    log = (tmp_path / f"sidecar{n}.log").open("w")
    threading.Thread(target=lambda: [log.write(line) for line in proc.stderr], daemon=True).start()
    try:
        assert started, "sidecar did not start"
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _env() -> dict[str, str]:
    return dict(os.environ)


async def _burst(ports: list[int], n: int) -> Counter[int]:
    codes: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:

        async def one(i: int) -> None:
            r = await c.post(f"http://127.0.0.1:{ports[i % len(ports)]}/v1/chat/completions",
                             headers={"authorization": "Bearer sk-app-secret"}, json=BODY)
            codes[r.status_code] += 1

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
    return codes


async def test_three_sidecars_sharing_a_budget_worth_3_8_serve_at_most_4(server: RedisServer, tmp_path: Path) -> None:
    amount = 3.8 * COST
    with ExitStack() as stack:
        ports = [stack.enter_context(_sidecar(tmp_path, n, server.url, amount)) for n in range(3)]
        with trio.fail_after(90):
            codes = await _burst(ports, 200)
            r = server.client()
            while any(r.hlen(k) for k in r.keys(f"{PREFIX}held:*")):
                await trio.sleep(0.02)  # the settlements are queued after each answer
            spend = sum(float(r.get(k) or 0) for k in r.keys(f"{PREFIX}spend:*"))
            r.close()
    logs = "".join((tmp_path / f"sidecar{n}.log").read_text() for n in range(3))
    assert "redis_sync_failed" not in logs, "every admission was decided in Redis"
    print(f"3 sidecars: {dict(codes)}, ${spend:.6f} spent of ${amount:.6f}")
    assert 1 <= codes[200] <= 4 and codes[200] + codes[429] == 200, codes
    assert spend == pytest.approx(codes[200] * COST) and spend < amount + COST


class _Log(Logger):
    def __init__(self) -> None:
        super().__init__(LogLevel.DEBUG)
        self.events: list[str] = []

    def log(self, level: LogLevel, event: str, fields: Mapping[str, object]) -> None:
        self.events.append(event)


def _budgets(url: str | None) -> SharedBudgets:
    sync = RedisSync(Ledger(), _Log())
    sync.configure(text(url) if url else None, 0.1)
    return SharedBudgets(sync)


async def test_a_dead_sidecars_reservations_stop_counting_when_its_heartbeat_expires(server: RedisServer) -> None:
    budget, wall = Budget(1.0, "1d"), time.time()
    a, b = _budgets(server.url), _budgets(server.url)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.run)
            nursery.start_soon(b.run)
            await _running(a, b)
            held, refused = await a.reserve("r1", [("team:t", budget)], 1.0, wall)
            assert held is not None and refused is None
            assert await b.reserve("r2", [("team:t", budget)], 0.1, wall) == (None, "team:t"), "a holds the budget"
            nursery.cancel_scope.cancel()  # a dies (and its heartbeat is gone: as if it had expired)
        r = server.client()
        r.delete(f"{PREFIX}pod:{a.pod}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.run)
            await _running(b)
            held_b, refused = await b.reserve("r3", [("team:t", budget)], 0.5, wall)
            assert held_b is not None and refused is None
            b.settle_nowait(held_b, 0.25)
            key = f"{PREFIX}spend:team:t:{int(held_b.subjects[0][1])}"
            while float(r.get(key) or 0) != 0.25:
                await trio.sleep(0.01)
            assert r.hlen(f"{PREFIX}held:team:t:{int(held_b.subjects[0][1])}") == 0, "settled: nothing held"
            nursery.cancel_scope.cancel()
        r.close()


async def _running(*budgets: SharedBudgets) -> None:
    while not all(b.active for b in budgets):
        await trio.lowlevel.checkpoint()


async def test_with_redis_down_admission_is_local_and_settled_spend_is_pushed_later(server: RedisServer) -> None:
    budget, wall = Budget(1.0, "1d"), time.time()
    b = _budgets(server.url)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.run)
            await _running(b)
            held, _ = await b.reserve("r1", [("key:k", budget)], 0.2, wall)
            assert held is not None
            server.stop()
            t0 = trio.current_time()
            assert await b.reserve("r2", [("key:k", budget)], 0.2, wall) == (None, None), "decide locally"
            assert b.sync.up is False and not b.active and b.fallbacks == 1
            assert trio.current_time() - t0 < 1.5
            b.sync.ledger.over_budget("key:k", budget, wall)  # a budgeted subject the sync keeps in step
            b.settle_nowait(held, 0.15)  # Redis is down: the counter sync will push it
            while b._settles:
                await trio.sleep(0.01)
            server.start()
            while not await b.sync.sync_once():
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        r = server.client()
        assert float(r.get(f"{PREFIX}spend:key:k:{int(held.subjects[0][1])}") or 0) == pytest.approx(0.15)
        r.close()


async def test_a_request_cancelled_while_its_reservation_is_in_redis_holds_nothing(server: RedisServer) -> None:
    import os
    from dataclasses import replace

    from sidegate.runtime.plan import Auth, BudgetRule, Price, StaticKey, Store
    from tests.support.gateway import base_url, open_gateway
    from tests.support.plans import env, group, mock_provider, plan, target

    os.environ.setdefault("TEST_APP_KEY", "sk-app-secret")
    p = plan([mock_provider("fake")], [group("demo", target("fake", "demo", price=Price(input=INPUT, output=OUTPUT,
                                                                                            cached_input=None)))],
             auth=Auth(master_key=None, keys=(StaticKey(name="a", key=env("TEST_APP_KEY"), team=None, user=None,
                                                        models=(), budget=BudgetRule(amount=1.0, period="1d", soft=None),
                                                        limits=None),), refresh=5.0, jwt=None))
    p = replace(p, store=Store(database=text("sqlite://:memory:"), redis=text(server.url), redis_sync=0.1),
                server=replace(p.server, drain_timeout=0.3))
    asked = trio.Event()
    with trio.fail_after(20):
        async with open_gateway(p) as gw, httpx.AsyncClient(timeout=10) as c:
            access = gw.app.access

            async def hang(*args: object) -> tuple[None, None]:
                asked.set()
                await trio.sleep_forever()
                raise AssertionError

            access.budgets.reserve = hang  # type: ignore[method-assign]
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    with contextlib.suppress(httpx.HTTPError):  # the server stops under it
                        await c.post(f"{base_url(gw)}/chat/completions",
                                     headers={"authorization": f"Bearer {os.environ['TEST_APP_KEY']}"}, json=BODY)

                nursery.start_soon(call)
                await asked.wait()
                assert access.gate.ledger.held(next(iter(access.gate.ledger._held))) > 0
                gw.shutdown.set()  # the drain (0.3 s) cancels the admission while it waits on Redis
    assert not access.gate.ledger._held, "the local reservation was given back"
    assert not any(w.in_flight or w.reserved for w in access.gate.ledger._windows.values())
