"""Upstream 429s end to end, with the official SDKs (max_retries=0) against a scripted upstream on
127.0.0.1: another deployment serves when one is free; a short Retry-After on a lone deployment is
waited out; a long one reaches the client as the upstream's own 429 (message, code, Retry-After) in
its dialect; hostile Retry-After values are bounded; the rate-limit headers and the upstream's
request id are relayed; Anthropic's 529 is `overloaded_error` for Anthropic clients."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio

from sidegate.runtime.plan import Family, RetryOn, RetryPolicy
from sidegate.runtime.retry_after import RETRY_AFTER_CAP, parse_retry_after
from tests.support.fault_upstream import Act, anthropic_error, open_fault_upstream, openai_error
from tests.support.gateway import open_gateway
from tests.support.plans import group, native_provider, openai_provider, plan, target

ASK: list[Any] = [{"role": "user", "content": "hi"}]
RETRY = RetryPolicy(attempts=2, backoff=0.2, max_backoff=5.0, on=tuple(RetryOn), max_retry_after=5.0)


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "sk-up")
    monkeypatch.setenv("ANT_KEY", "sk-ant-up")


def limited(retry_after: str | None, message: str = "Rate limit reached for gpt-x on requests per min") -> Act:
    headers = [("x-ratelimit-limit-requests", "60"), ("x-ratelimit-remaining-requests", "0"),
               ("x-ratelimit-reset-requests", "1s"), ("x-request-id", "req_up_429")]
    if retry_after is not None:
        headers.append(("retry-after", retry_after))
    return Act(status=429, headers=headers, body=openai_error(message, "requests", "rate_limit_exceeded"))


def one(url: str, timeout: float = 10.0, retry: RetryPolicy = RETRY, **kw: Any):  # type: ignore[no-untyped-def]
    return plan([openai_provider("up", url, "UP_KEY")], [group("m", target("up", "x"), timeout=timeout, retry=retry,
                                                                **kw)])


def sdk(gw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0)


async def test_short_retry_after_on_a_lone_deployment_is_waited_out() -> None:
    with trio.fail_after(30):
        async with open_fault_upstream(lambda n, _: limited("1") if n == 1 else Act()) as up, \
                open_gateway(one(up.base_url)) as gw:
            t0 = trio.current_time()
            r = await sdk(gw).chat.completions.with_raw_response.create(model="m", messages=ASK)
            elapsed = trio.current_time() - t0
    assert r.parse().choices[0].message.content == "Hi there!"
    assert r.headers["x-sidegate-attempts"] == "2" and len(up.hits) == 2
    assert up.hits[1] - up.hits[0] >= 1.0, "the second attempt waited for the upstream's Retry-After"
    assert elapsed >= 1.0


async def test_long_retry_after_is_the_upstreams_429_at_once() -> None:
    with trio.fail_after(30):
        async with open_fault_upstream(lambda n, _: limited("60")) as up, open_gateway(one(up.base_url)) as gw:
            t0 = trio.current_time()
            with pytest.raises(openai.RateLimitError) as info:
                await sdk(gw).chat.completions.create(model="m", messages=ASK)
            elapsed = trio.current_time() - t0
            # the next request does not even reach the upstream: it asked for 60 s
            with pytest.raises(openai.RateLimitError) as again:
                await sdk(gw).chat.completions.create(model="m", messages=ASK)
    err = info.value
    assert err.status_code == 429 and "Rate limit reached for gpt-x" in err.message
    assert err.code == "rate_limit_exceeded" and err.response.headers["retry-after"] == "60"
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.response.headers["x-upstream-request-id"] == "req_up_429"
    assert len(up.hits) == 1 and elapsed < 10, "not waited, not retried"
    assert again.value.status_code == 429 and "Rate limit reached for gpt-x" in again.value.message
    assert 1 <= int(again.value.response.headers["retry-after"]) <= 60


async def test_429_goes_to_another_free_deployment_and_the_health_report_says_rate_limited() -> None:
    with trio.fail_after(30):
        async with open_fault_upstream(lambda n, _: limited("20")) as a, open_fault_upstream(lambda n, _: Act()) as b:
            p = plan([openai_provider("a", a.base_url, "UP_KEY"), openai_provider("b", b.base_url, "UP_KEY")],
                     [group("m", target("a", "x", weight=1e9), target("b", "x"), retry=RETRY)])
            async with open_gateway(p) as gw:
                first = await sdk(gw).chat.completions.with_raw_response.create(model="m", messages=ASK)
                for _ in range(3):
                    await sdk(gw).chat.completions.create(model="m", messages=ASK)
                async with httpx.AsyncClient() as c:
                    report = (await c.get(f"http://127.0.0.1:{gw.port}/health/deployments")).json()
                    metrics = (await c.get(f"http://127.0.0.1:{gw.port}/metrics")).text
    assert first.headers["x-sidegate-deployment"] == "b/x" and first.headers["x-sidegate-attempts"] == "2"
    assert len(a.hits) == 1 and len(b.hits) == 4, "a is kept out for its Retry-After"
    state = {d["deployment"]: d for d in report["deployments"]}
    assert state["a/x"]["state"] == "rate_limited" and 15 < state["a/x"]["retry_in"] <= 20
    assert "Rate limit reached" in state["a/x"]["last_error"] and state["a/x"]["last_error_kind"] == "429"
    assert state["a/x"]["last_error_at"].endswith("Z") and state["b/x"]["state"] == "closed"
    assert 'sidegate_deployment_state{deployment="a/x",model="m"} 3.0' in metrics


@pytest.mark.parametrize("value", ["inf", "nan", "1e11", "-5", "soon", "Infinity", "1" * 400])
async def test_hostile_retry_after_values_give_a_clean_bounded_429(value: str) -> None:
    no_wait = replace(RETRY, max_retry_after=0.0)
    with trio.fail_after(30):
        async with open_fault_upstream(lambda n, _: limited(value)) as up, \
                open_gateway(one(up.base_url, retry=no_wait)) as gw:
            with pytest.raises(openai.RateLimitError) as info:
                await sdk(gw).chat.completions.create(model="m", messages=ASK)
            async with httpx.AsyncClient() as c:
                report = (await c.get(f"http://127.0.0.1:{gw.port}/health/deployments")).json()
    header = info.value.response.headers.get("retry-after")
    assert header is None or 1 <= int(header) <= RETRY_AFTER_CAP
    dep = report["deployments"][0]
    assert dep["retry_in"] <= 30.0, "kept out at most the cooldown duration, never until restart"
    assert dep["state"] == ("rate_limited" if dep["retry_in"] > 0 else "closed")


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "7"}, 7.0), ({"retry-after-ms": "1500"}, 1.5), ({"retry-after-ms": "x", "retry-after": "3"}, 3.0),
    ({"retry-after": "inf"}, RETRY_AFTER_CAP), ({"retry-after": "1e11"}, RETRY_AFTER_CAP),
    ({"retry-after-ms": "inf"}, RETRY_AFTER_CAP), ({"retry-after": "nan"}, None), ({"retry-after": "-1"}, None),
    ({"retry-after": "later"}, None), ({"retry-after": ""}, None), ({}, None),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
])
def test_retry_after_is_finite_and_bounded(headers: dict[str, str], seconds: float | None) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after(headers, now=now) == seconds


async def test_anthropic_client_gets_rate_limit_error_from_an_anthropic_upstream() -> None:
    def script(n: int, _: Any) -> Act:
        return Act(status=429, headers=[("retry-after", "40"), ("anthropic-ratelimit-requests-remaining", "0"),
                                        ("request-id", "req_ant_1")],
                   body=anthropic_error("rate_limit_error", "Number of request tokens has exceeded your limit"))

    with trio.fail_after(30):
        async with open_fault_upstream(script, anthropic=True) as up:
            p = plan([native_provider("ant", Family.ANTHROPIC, up.base_url, "ANT_KEY")],
                     [group("claude", target("ant", "claude-x"), retry=RETRY)])
            async with open_gateway(p) as gw:
                client = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="k", max_retries=0)
                with pytest.raises(anthropic.RateLimitError) as info:
                    await client.messages.create(model="claude", max_tokens=10, messages=ASK)
    err = info.value
    assert "Number of request tokens has exceeded your limit" in err.message
    assert err.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert err.response.headers["retry-after"] == "40"
    assert err.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert err.response.headers["x-upstream-request-id"] == "req_ant_1"


async def test_529_is_overloaded_for_anthropic_clients_and_503_for_openai_clients() -> None:
    def script(n: int, _: Any) -> Act:
        return Act(status=529, body=anthropic_error("overloaded_error", "Overloaded"))

    once = replace(RETRY, attempts=1)
    with trio.fail_after(30):
        async with open_fault_upstream(script, anthropic=True) as up:
            p = plan([native_provider("ant", Family.ANTHROPIC, up.base_url, "ANT_KEY")],
                     [group("claude", target("ant", "claude-x"), retry=once)])
            async with open_gateway(p) as gw:
                client = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="k", max_retries=0)
                with pytest.raises(anthropic.OverloadedError) as ant:
                    await client.messages.create(model="claude", max_tokens=10, messages=ASK)
                with pytest.raises(openai.InternalServerError) as oai:
                    await sdk(gw).chat.completions.create(model="claude", messages=ASK)
    assert ant.value.status_code == 529 and ant.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert "Overloaded" in ant.value.message
    assert oai.value.status_code == 503 and oai.value.type == "overloaded_error"


async def test_rate_limit_headers_and_upstream_request_id_on_success() -> None:
    headers = [("x-ratelimit-remaining-tokens", "149984"), ("x-ratelimit-reset-tokens", "6ms"),
               ("x-request-id", "req_ok_1"), ("set-cookie", "session=secret"), ("server", "upstream/1")]
    with trio.fail_after(30):
        async with open_fault_upstream(lambda n, _: Act(headers=headers)) as up, open_gateway(one(up.base_url)) as gw:
            r = await sdk(gw).chat.completions.with_raw_response.create(model="m", messages=ASK)
    assert r.headers["x-ratelimit-remaining-tokens"] == "149984" and r.headers["x-ratelimit-reset-tokens"] == "6ms"
    assert r.headers["x-upstream-request-id"] == "req_ok_1" and r.headers["x-request-id"] != "req_ok_1"
    assert "set-cookie" not in r.headers and r.headers.get("server") != "upstream/1"


@pytest.mark.parametrize(("delay", "seconds"), [("30s", 30.0), ("nans", None), ("infs", RETRY_AFTER_CAP),
                                                 ("1e11s", RETRY_AFTER_CAP), ("-3s", None), ("soons", None)])
def test_gemini_retry_delay_is_bounded_too(delay: str, seconds: float | None) -> None:
    import json

    from sidegate.runtime.upstream.providers.gemini import error_from_gemini

    body = {"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
                      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]}}
    err = error_from_gemini(429, {}, json.dumps(body).encode())
    assert err.status == 429 and err.retry_after == seconds


async def test_a_529_with_retry_after_stays_overloaded_and_keeps_the_deployment_out() -> None:
    def script(n: int, _: Any) -> Act:
        return Act(status=529, headers=[("retry-after", "30")], body=anthropic_error("overloaded_error", "Overloaded"))

    with trio.fail_after(30):
        async with open_fault_upstream(script, anthropic=True) as up:
            p = plan([native_provider("ant", Family.ANTHROPIC, up.base_url, "ANT_KEY")],
                     [group("claude", target("ant", "claude-x"), retry=RETRY)])
            async with open_gateway(p) as gw:
                client = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="k", max_retries=0)
                errors = []
                for _ in range(2):
                    with pytest.raises(anthropic.APIStatusError) as info:
                        await client.messages.create(model="claude", max_tokens=10, messages=ASK)
                    errors.append(info.value)
    assert isinstance(errors[0], anthropic.OverloadedError) and errors[0].response.headers["retry-after"] == "30"
    assert len(up.hits) == 1, "kept out for its Retry-After: the second request did not reach it"
    assert errors[1].status_code == 503 and "Overloaded" in errors[1].message, "the cause, not a made-up 429"
    assert 1 <= int(errors[1].response.headers["retry-after"]) <= 30
