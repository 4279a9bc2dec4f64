"""The Realtime API through sidegate: the openai SDK's realtime client (`client.realtime.connect`,
websockets underneath) holds sessions through a running sidecar to a fake realtime upstream (a
WebSocket server speaking OpenAI's documented events); usage lands in the spend log. Faults: a bad
key and an unknown model refused before the upgrade, an upstream that closes mid-session, a client
that leaves, the duration and per-key session limits, a spent budget, an oversize message and the
shutdown drain. The SDK's client is synchronous here (its async one needs asyncio): it runs in a
worker thread."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar, cast

import openai
import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from sidegate.runtime.plan import Auth, BudgetRule, Family, Plan, Price, Realtime, StaticKey
from sidegate.runtime.server import Handle
from sidegate.runtime.store.models import SpendLog
from tests.support.fake_realtime import FakeRealtime, open_fake_realtime
from tests.support.gateway import open_gateway
from tests.support.plans import env, group, openai_provider, plan, target

PRICE = Price(input=4e-6, output=16e-6, cached_input=4e-7)
CLIENT_KEY = "sk-client-virtual-1"
DEFAULTS = Realtime()
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RT_UPSTREAM_KEY", "sk-upstream-realtime")
    monkeypatch.setenv("RT_CLIENT_KEY", CLIENT_KEY)
    monkeypatch.setenv("RT_OTHER_KEY", "sk-client-virtual-2")


def _plan(fake: FakeRealtime, realtime: Realtime = DEFAULTS, budget: BudgetRule | None = None,
          family: Family = Family.OPENAI) -> Plan:
    provider = openai_provider("up", fake.base_url, "RT_UPSTREAM_KEY", family=family,
                               api_version="2024-10-01-preview" if family is Family.AZURE else None)
    keys = (StaticKey(name="app", key=env("RT_CLIENT_KEY"), team=None, user=None, models=(), budget=budget,
                      limits=None),
            StaticKey(name="other", key=env("RT_OTHER_KEY"), team=None, user=None, models=("chat",), budget=None,
                      limits=None))
    p = plan([provider], [group("voice", target("up", "gpt-realtime", price=PRICE))],
             auth=Auth(master_key=None, keys=keys, refresh=60.0, jwt=None))
    return replace(p, realtime=realtime)


@asynccontextmanager
async def _stack(realtime: Realtime = DEFAULTS, budget: BudgetRule | None = None,
                 family: Family = Family.OPENAI) -> AsyncIterator[tuple[FakeRealtime, Handle]]:
    async with open_fake_realtime(FakeRealtime(azure=family is Family.AZURE)) as fake:
        async with open_gateway(_plan(fake, realtime, budget, family)) as gw:
            yield fake, gw


async def _in_thread(fn: Callable[[], T], limit: float = 15.0) -> T:
    with trio.fail_after(limit):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


def _client(gw: Handle, key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"http://127.0.0.1:{gw.port}/v1", max_retries=0)


def _next(conn: Any, kind: str) -> Any:
    """Events up to the first of type `kind` (an `error` event fails the test)."""
    for event in conn:
        if event.type == "error":
            raise AssertionError(f"error event: {event.error}")
        if event.type == kind:
            return event
    raise AssertionError(f"the session closed before {kind}")


def _converse(gw: Handle, turns: int = 2) -> dict[str, Any]:
    out: dict[str, Any] = {"texts": [], "usages": []}
    with _client(gw).realtime.connect(model="voice") as conn:
        out["created"] = _next(conn, "session.created")
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "instructions": "Be brief."})
        out["updated"] = _next(conn, "session.updated")
        conn.input_audio_buffer.append(audio="AAECAwQFBgc=")  # 8 bytes of PCM, relayed as it comes
        for n in range(turns):
            conn.conversation.item.create(item={"type": "message", "role": "user",
                                                "content": [{"type": "input_text", "text": f"hello {n}"}]})
            conn.response.create()
            text: list[str] = []
            for event in conn:
                if event.type == "response.output_text.delta":
                    text.append(event.delta)
                elif event.type == "response.done":
                    out["usages"].append(event.response.usage)
                    break
                elif event.type == "error":
                    raise AssertionError(f"error event: {event.error}")
            out["texts"].append("".join(text))
    return out


async def _rows(gw: Handle, n: int) -> list[dict[str, Any]]:
    assert gw.app.store is not None
    with trio.fail_after(10):
        while True:
            rows = cast(list[dict[str, Any]], await gw.app.store.run(lambda: list(SpendLog.select().dicts())))
            if len(rows) >= n:
                return rows
            await trio.sleep(0.02)


async def _until(check: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not check():
            await trio.sleep(0.01)


async def test_session_through_the_sdk_is_metered() -> None:
    async with _stack() as (fake, gw):
        out = await _in_thread(lambda: _converse(gw))
        assert out["texts"] == [fake.text, fake.text]
        assert out["created"].session.model == "gpt-realtime"
        assert out["updated"].session.instructions == "Be brief."
        assert [u.input_tokens for u in out["usages"]] == [40, 40]
        rows = await _rows(gw, 2)
        session = fake.sessions[0]
        with trio.fail_after(5):
            await session.closed.wait()
    # the upstream saw sidegate's own key and the deployment's model, never the client's virtual key
    assert session.headers["authorization"] == "Bearer sk-upstream-realtime"
    assert CLIENT_KEY not in str(session.headers)
    assert session.query["model"] == ["gpt-realtime"]
    assert session.audio_bytes == 8
    assert [e["type"] for e in session.events].count("response.create") == 2
    assert session.close_code == 1000  # the client left: the upstream was closed cleanly
    assert len(rows) == 2
    for row in rows:
        assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (40, 17, 8)
        assert row["model"] == "voice" and row["deployment"] == "up/gpt-realtime" and row["status"] == 200
        assert row["cost"] == pytest.approx(32 * 4e-6 + 8 * 4e-7 + 17 * 16e-6)
        assert row["key_hash"] is not None
    assert rows[0]["request_id"] == rows[1]["request_id"]  # one session, one request id


async def test_bad_key_and_unknown_model_are_refused_before_the_upgrade() -> None:
    def attempt(key: str, model: str) -> InvalidStatus:
        try:
            with _client(gw, key).realtime.connect(model=model) as conn:
                conn.recv()
        except InvalidStatus as exc:
            return exc
        raise AssertionError("the session opened")

    async with _stack() as (fake, gw):
        bad = await _in_thread(lambda: attempt("sk-wrong", "voice"))
        unknown = await _in_thread(lambda: attempt(CLIENT_KEY, "no-such-model"))
        forbidden = await _in_thread(lambda: attempt("sk-client-virtual-2", "voice"))
    assert bad.response.status_code == 401
    assert b'"invalid_api_key"' in bad.response.body and b"sk-wrong" not in bad.response.body
    assert unknown.response.status_code == 404 and b'"model_not_found"' in unknown.response.body
    assert forbidden.response.status_code == 403 and b'"model_not_allowed"' in forbidden.response.body
    assert fake.sessions == []  # nothing reached the upstream


async def test_upstream_closing_mid_session_closes_the_client() -> None:
    def session() -> ConnectionClosed:
        with _client(gw).realtime.connect(model="voice") as conn:
            _next(conn, "session.created")
            conn.response.create()
            try:
                _next(conn, "response.done")
            except ConnectionClosed as exc:
                return exc
        raise AssertionError("no close")

    async with _stack() as (fake, gw):
        fake.close_on = "response.create"
        closed = await _in_thread(session)
        await _until(lambda: not gw.app.realtime.open)
    assert closed.rcvd is not None and closed.rcvd.code == 1011


async def test_client_dropping_its_connection_closes_the_upstream() -> None:
    async with _stack() as (fake, gw):
        def drop() -> None:
            ws = ws_connect(f"ws://127.0.0.1:{gw.port}/v1/realtime?model=voice",
                            additional_headers={"Authorization": f"Bearer {CLIENT_KEY}"}, open_timeout=5)
            assert '"session.created"' in str(ws.recv(timeout=5))
            ws.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the connection is just gone
            ws.socket.close()

        await _in_thread(drop)
        with trio.fail_after(5):
            await fake.sessions[0].closed.wait()
        await _until(lambda: not gw.app.realtime.open)
    assert fake.sessions[0].close_code == 1000


async def test_session_duration_limit() -> None:
    async with _stack(Realtime(max_duration=0.5)) as (fake, gw):
        def session() -> tuple[Any, ConnectionClosed, float]:
            t0 = time.monotonic()
            with _client(gw).realtime.connect(model="voice") as conn:
                _next(conn, "session.created")
                error = None
                try:
                    for event in conn:
                        if event.type == "error":
                            error = event.error
                except ConnectionClosed as exc:
                    return error, exc, time.monotonic() - t0
            raise AssertionError("closed without an error close")

        error, closed, took = await _in_thread(session)
        with trio.fail_after(5):
            await fake.sessions[0].closed.wait()
    assert error is not None and error.code == "session_expired" and "realtime.max_duration" in error.message
    assert closed.rcvd is not None and closed.rcvd.code == 1008
    assert 0.4 < took < 5
    assert fake.sessions[0].close_code == 1000


async def test_max_sessions_per_key() -> None:
    async with _stack(Realtime(max_sessions_per_key=1)) as (fake, gw):
        first = _client(gw).realtime.connect(model="voice")
        conn = await _in_thread(first.__enter__)
        try:
            await _in_thread(lambda: _next(conn, "session.created"))

            def second() -> InvalidStatus:
                try:
                    with _client(gw).realtime.connect(model="voice"):
                        pass
                except InvalidStatus as exc:
                    return exc
                raise AssertionError("a second session opened")

            refused = await _in_thread(second)
        finally:
            await _in_thread(lambda: first.__exit__(None, None, None))
        await _until(lambda: not gw.app.realtime.open)
        again = await _in_thread(lambda: _converse(gw, turns=1))  # the slot is free again
    assert refused.response.status_code == 429 and b'"too_many_sessions"' in refused.response.body
    assert again["texts"] == [fake.text]
    assert len(fake.sessions) == 2


async def test_spent_budget_ends_the_session() -> None:
    async with _stack(budget=BudgetRule(amount=1e-4, period="1d", soft=None)) as (_fake, gw):
        def session() -> tuple[list[str], ConnectionClosed]:
            seen: list[str] = []
            with _client(gw).realtime.connect(model="voice") as conn:
                _next(conn, "session.created")
                conn.response.create()
                try:
                    for event in conn:
                        seen.append(event.type if event.type != "error" else f"error:{event.error.code}")
                except ConnectionClosed as exc:
                    return seen, exc
            raise AssertionError("no close")

        seen, closed = await _in_thread(session)
        rows = await _rows(gw, 1)

        def again() -> InvalidStatus:
            try:
                with _client(gw).realtime.connect(model="voice"):
                    pass
            except InvalidStatus as exc:
                return exc
            raise AssertionError("opened with a spent budget")

        refused = await _in_thread(again)
    assert seen[-2:] == ["response.done", "error:budget_exceeded"]
    assert closed.rcvd is not None and closed.rcvd.code == 1008
    assert rows[0]["cost"] > 1e-4
    assert refused.response.status_code == 429 and b'"budget_exceeded"' in refused.response.body


async def test_oversize_message_closes_with_1009() -> None:
    async with _stack(Realtime(max_message=4096)) as (fake, gw):
        def session() -> ConnectionClosed:
            with _client(gw).realtime.connect(model="voice") as conn:
                _next(conn, "session.created")
                conn.input_audio_buffer.append(audio="A" * 8192)
                try:
                    _next(conn, "never")
                except ConnectionClosed as exc:
                    return exc
            raise AssertionError("no close")

        closed = await _in_thread(session)
        with trio.fail_after(5):
            await fake.sessions[0].closed.wait()
    assert closed.rcvd is not None and closed.rcvd.code == 1009
    assert fake.sessions[0].audio_bytes == 0  # the oversize event never reached the upstream


async def test_shutdown_drain_closes_sessions_with_1001() -> None:
    async with open_fake_realtime(FakeRealtime()) as fake:
        async with open_gateway(_plan(fake)) as gw:
            connect = _client(gw).realtime.connect(model="voice")
            conn = await _in_thread(connect.__enter__)
            await _in_thread(lambda: _next(conn, "session.created"))

            def wait_close() -> ConnectionClosed:
                try:
                    while True:
                        conn.recv()  # raises the close, even a normal one (iterating ends quietly on 1000/1001)
                except ConnectionClosed as exc:
                    return exc

            async with trio.open_nursery() as nursery:
                result: list[ConnectionClosed] = []

                async def watch() -> None:
                    result.append(await _in_thread(wait_close))

                nursery.start_soon(watch)
                gw.shutdown.set()
        with trio.fail_after(5):
            await fake.sessions[0].closed.wait()
    assert result[0].rcvd is not None and result[0].rcvd.code == 1001
    assert fake.sessions[0].close_code == 1001


async def test_azure_realtime_deployment() -> None:
    async with _stack(family=Family.AZURE) as (fake, gw):
        out = await _in_thread(lambda: _converse(gw, turns=1))
        rows = await _rows(gw, 1)
    session = fake.sessions[0]
    assert out["texts"] == [fake.text]
    assert session.path == "/openai/realtime"
    assert session.query["deployment"] == ["gpt-realtime"]
    assert session.query["api-version"] == ["2024-10-01-preview"]
    assert session.headers["api-key"] == "sk-upstream-realtime" and "authorization" not in session.headers
    assert rows[0]["prompt_tokens"] == 40


async def test_under_hypercorns_front(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDEGATE_FRONT", "hypercorn")
    assert os.environ["SIDEGATE_FRONT"] == "hypercorn"
    async with _stack() as (fake, gw):
        out = await _in_thread(lambda: _converse(gw, turns=1))
        rows = await _rows(gw, 1)

        def bad() -> InvalidStatus:
            try:
                with _client(gw, "sk-wrong").realtime.connect(model="voice") as conn:
                    conn.recv()
            except InvalidStatus as exc:
                return exc
            raise AssertionError("opened")

        refused = await _in_thread(bad)
    assert out["texts"] == [fake.text]
    assert rows[0]["completion_tokens"] == 17
    assert refused.response.status_code == 401
