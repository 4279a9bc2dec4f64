"""Retry safety, counted at the upstream: a request is re-sent on its own only when it provably did
not reach the upstream (a pooled keep-alive connection the upstream had closed before anything was
written is never used; a connect failure). A reset after the request was sent is a failure under
the retry policy: exactly as many upstream hits as the policy's attempts, never a silent replay."""

from __future__ import annotations

import io
import json
from typing import Any

import openai
import pytest
import trio

from sidegate.runtime.plan import RetryOn, RetryPolicy
from sidegate.runtime.upstream.h11pool import H11Transport
from sidegate.runtime.upstream.transport import UpstreamRequest
from tests.support.fault_upstream import Act, open_fault_upstream
from tests.support.gateway import open_gateway
from tests.support.plans import group, openai_provider, plan, target

ASK: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "sk-up")


def policy(attempts: int, on: tuple[RetryOn, ...] = tuple(RetryOn)) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, backoff=0.05, max_backoff=0.1, on=on)


@pytest.mark.parametrize(("attempts", "on", "hits"), [
    (1, tuple(RetryOn), 1), (2, tuple(RetryOn), 2), (3, tuple(RetryOn), 3), (3, (RetryOn.CONNECT,), 1),
])
async def test_a_reset_after_send_is_attempted_exactly_as_the_policy_says(
    attempts: int, on: tuple[RetryOn, ...], hits: int,
) -> None:
    # the first request succeeds and leaves a pooled keep-alive connection; every later one is reset
    with trio.fail_after(30):
        async with open_fault_upstream(lambda n, _: Act() if n == 1 else Act(reset=True)) as up:
            p = plan([openai_provider("up", up.base_url, "UP_KEY")],
                     [group("m", target("up", "x"), retry=policy(attempts, on))])
            async with open_gateway(p) as gw:
                client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="k", max_retries=0)
                await client.chat.completions.create(model="m", messages=ASK)
                with pytest.raises(openai.APIStatusError) as info:
                    await client.chat.completions.create(model="m", messages=ASK)
    assert len(up.hits) - 1 == hits, "one upstream hit per attempt of the policy, no silent replay"
    assert info.value.status_code == 502 and info.value.response.headers["x-sidegate-attempts"] == str(hits)
    assert "ConnectionResetError" in info.value.message or "closed the connection" in info.value.message


async def test_a_pooled_connection_the_upstream_closed_is_never_used() -> None:
    with trio.fail_after(30):
        async with open_fault_upstream(lambda n, _: Act(close_after=True)) as up:
            p = plan([openai_provider("up", up.base_url, "UP_KEY")], [group("m", target("up", "x"), retry=policy(1))])
            async with open_gateway(p) as gw:
                client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="k", max_retries=0)
                for i in range(5):
                    r = await client.chat.completions.with_raw_response.create(model="m", messages=ASK)
                    assert r.headers["x-sidegate-attempts"] == "1"
                    await up.wait_for(lambda i=i: up.closed == i + 1)  # the server hung up after answering
    assert len(up.hits) == 5 and up.connections == 5


async def test_transport_reuses_a_live_connection_and_drops_a_closed_one() -> None:
    request = UpstreamRequest("POST", "", (("authorization", "Bearer sk-up"), ("content-type", "application/json")),
                              json.dumps({"model": "x", "messages": ASK}).encode(), 5.0)
    with trio.fail_after(30):
        async with open_fault_upstream(lambda n, _: Act(close_after=n == 2)) as up:
            t = H11Transport()
            req = UpstreamRequest(request.method, up.base_url + "/chat/completions", request.headers, request.body, 5.0)
            assert (await t.send(req)).status == 200
            assert (await t.send(req)).status == 200  # same connection; the server closes it after this
            await up.wait_for(lambda: up.closed == 1)
            assert (await t.send(req)).status == 200
            await t.aclose()
    assert len(up.hits) == 3 and up.connections == 2


async def test_a_dead_deployment_fails_over_and_every_attempt_is_logged_with_its_cause() -> None:
    with trio.fail_after(30):
        async with open_fault_upstream(lambda n, _: Act()) as healthy:
            dead = openai_provider("dead", "http://127.0.0.1:9/v1?key=sk-in-the-query", "UP_KEY")
            p = plan([dead, openai_provider("ok", healthy.base_url, "UP_KEY")],
                     [group("m", target("dead", "x", weight=1e9), target("ok", "x"), retry=policy(2)),
                      group("only-dead", target("dead", "y"), retry=policy(2))])
            async with open_gateway(p) as gw:
                log = io.StringIO()
                gw.app.logger._stream = log
                client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="k", max_retries=0)
                r = await client.chat.completions.with_raw_response.create(model="m", messages=ASK)
                with pytest.raises(openai.APIStatusError) as info:
                    await client.chat.completions.create(model="only-dead", messages=ASK)
                with trio.fail_after(10):
                    while log.getvalue().count('"event":"request"') < 2:
                        await trio.sleep(0.01)
    assert r.headers["x-sidegate-deployment"] == "ok/x" and r.headers["x-sidegate-attempts"] == "2"
    assert info.value.status_code == 502 and "127.0.0.1:9" in info.value.message
    assert "Connection refused" in info.value.message or "Errno" in info.value.message
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    failed = [line for line in lines if line["event"] == "upstream_attempt_failed"]
    assert [(f["group"], f["attempt"]) for f in failed] == [("m", 1), ("only-dead", 1), ("only-dead", 2)]
    for f in failed:
        assert f["deployment"].startswith("dead/") and f["url"].startswith("http://127.0.0.1:9/v1")
        assert "Errno" in f["error"] or "refused" in f["error"]
        assert f["kind"] == "connect"
    assert "sk-in-the-query" not in log.getvalue() and "sk-up" not in log.getvalue()
    final = next(line for line in lines if line["event"] == "request" and line["group"] == "only-dead")
    assert final["deployment"] == "dead/y" and "127.0.0.1:9" in final["error"]
