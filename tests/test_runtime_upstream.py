"""sidegate in front of a fake OpenAI upstream (a real local HTTP server): request rewriting,
streaming relay, and the error table of the runtime issue, one test per row."""

from __future__ import annotations

import json
import types

import httpx
import openai
import pytest
import trio

from sidegate.runtime.plan import Family, Header
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import group, mock_provider, openai_provider, plan, target, text
from tests.support.upstream import FakeOpenAI, open_fake_openai


def _plan(fake: FakeOpenAI, timeout: float = 5.0, **kw):  # type: ignore[no-untyped-def]
    up = openai_provider("up", fake.base_url, "FAKE_UPSTREAM_KEY")
    az = openai_provider("az", f"http://127.0.0.1:{fake.port}", "FAKE_UPSTREAM_KEY", family=Family.AZURE,
                         api_version="2024-10-21")
    models = [
        group("gpt", target("up", "ok", headers=(Header(name="X-Team", value=text("checkout")),),
                            extra_body=types.MappingProxyType({"user": "from-extra", "seed": 1})),
              aliases=("default",), timeout=timeout),
        group("azure-gpt", target("az", "my-deployment"), timeout=timeout),
        group("up/*", target("up", "*"), timeout=timeout),
    ]
    return plan([up, az, mock_provider("unused")], models, **kw)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret")


def sdk(gw) -> openai.AsyncOpenAI:  # type: ignore[no-untyped-def]
    return openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0)


async def test_request_is_rewritten_for_the_upstream() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            r = await sdk(gw).chat.completions.create(
                model="default", messages=[{"role": "user", "content": "hi"}], seed=5,
                extra_body={"vendor_knob": {"a": 1}},
            )
    seen = fake.seen[-1]
    assert r.choices[0].message.content == "Hi there!"
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-upstream-secret"
    assert seen.headers["x-team"] == "checkout"
    assert seen.body["model"] == "ok", "model rewritten to the deployment's upstream name"
    assert seen.body["vendor_knob"] == {"a": 1}, "unknown parameters pass through"
    assert seen.body["seed"] == 5 and seen.body["user"] == "from-extra", "client fields win over extra_body"


async def test_azure_deployment_url_api_version_and_key_header() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            await sdk(gw).chat.completions.create(model="azure-gpt", messages=[{"role": "user", "content": "x"}])
    seen = fake.seen[-1]
    assert seen.path == "/openai/deployments/my-deployment/chat/completions"
    assert seen.query == "api-version=2024-10-21"
    assert seen.headers["api-key"] == "sk-upstream-secret" and "authorization" not in seen.headers


async def test_wildcard_forwards_the_suffix() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            r = await sdk(gw).chat.completions.with_raw_response.create(
                model="up/ok:anything", messages=[{"role": "user", "content": "x"}])
    assert fake.seen[-1].body["model"] == "ok:anything"
    assert r.headers["x-sidegate-deployment"] == "up/*"


async def test_stream_split_at_odd_boundaries_usage_requested_upstream_but_hidden() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            stream = await sdk(gw).chat.completions.create(
                model="gpt", stream=True, messages=[{"role": "user", "content": "x"}])
            chunks = [c async for c in stream]
            async with httpx.AsyncClient() as c:
                metrics = (await c.get(f"http://127.0.0.1:{gw.port}/metrics")).text
    assert fake.seen[-1].body["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi there!"
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    assert 'sidegate_tokens_total{deployment="up/ok",direction="completion",model="gpt"} 3.0' in metrics


async def test_streamed_tool_call_arguments_arrive_whole() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            stream = await sdk(gw).chat.completions.create(
                model="gpt", stream=True, tools=tools, messages=[{"role": "user", "content": "x"}])  # type: ignore[arg-type]
            args = ""
            async for c in stream:
                for ch in c.choices:
                    for tc in ch.delta.tool_calls or []:
                        args += (tc.function.arguments or "") if tc.function else ""
    assert json.loads(args) == {"location": "Paris"}


async def test_headers_request_id_kept_deployment_and_overhead() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            async with httpx.AsyncClient() as c:
                r = await c.post(f"{base_url(gw)}/chat/completions", headers={"x-request-id": "req-42"},
                                 json={"model": "gpt", "messages": [{"role": "user", "content": "x"}]})
                generated = await c.post(f"{base_url(gw)}/chat/completions",
                                         json={"model": "gpt", "messages": [{"role": "user", "content": "x"}]})
    assert r.headers["x-request-id"] == "req-42"
    assert len(generated.headers["x-request-id"]) == 32
    assert r.headers["x-sidegate-deployment"] == "up/ok"
    assert 0 <= float(r.headers["x-sidegate-overhead-ms"]) < 1000


async def test_routes_without_v1_prefix() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as c:
                chat = await c.post("/chat/completions", json={"model": "gpt", "messages": [{"role": "user", "content": "x"}]})
                models = await c.get("/models")
    assert chat.status_code == 200 and models.json()["data"][0]["object"] == "model"


# ---- the error table ----

async def _post(gw, body: bytes | dict, path: str = "/chat/completions") -> httpx.Response:  # type: ignore[no-untyped-def, type-arg]
    async with httpx.AsyncClient(timeout=20) as c:
        if isinstance(body, bytes):
            return await c.post(base_url(gw) + path, content=body, headers={"content-type": "application/json"})
        return await c.post(base_url(gw) + path, json=body)


def _error(r: httpx.Response) -> dict:  # type: ignore[type-arg]
    envelope = r.json()
    assert set(envelope) == {"error"} and {"message", "type", "param", "code"} <= set(envelope["error"])
    return envelope["error"]  # type: ignore[no-any-return]


async def test_invalid_json_is_400() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            r = await _post(gw, b'{"model": "gpt", "messages": [')
    assert r.status_code == 400 and "not valid JSON" in _error(r)["message"]


@pytest.mark.parametrize("body,param", [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "gpt"}, "messages"),
    ({"model": "gpt", "messages": "hi"}, "messages"),
    ({"model": "gpt", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
])
async def test_missing_or_ill_typed_fields_are_400(body: dict, param: str) -> None:  # type: ignore[type-arg]
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            r = await _post(gw, body)
    assert r.status_code == 400 and _error(r)["param"] == param
    assert fake.seen == [], "nothing reaches the upstream"


async def test_body_over_the_limit_is_413() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake, max_body=1000)) as gw:
            r = await _post(gw, {"model": "gpt", "messages": [{"role": "user", "content": "x" * 2000}]})
    assert r.status_code == 413 and _error(r)["code"] == "request_too_large"


async def test_unknown_model_is_404_model_not_found() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            with pytest.raises(openai.NotFoundError) as info:
                await sdk(gw).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"


async def test_upstream_429_is_429_with_retry_after() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            r = await _post(gw, {"model": "up/rate-429", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert _error(r)["type"] == "rate_limit_error"


async def test_upstream_5xx_is_502() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            r = await _post(gw, {"model": "up/fail-500", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 502 and "HTTP 500" in _error(r)["message"]


async def test_upstream_400_keeps_its_message_and_param() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            r = await _post(gw, {"model": "up/bad-request", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and _error(r)["param"] == "foo"


async def test_upstream_timeout_is_504_within_the_deadline() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake, timeout=0.3)) as gw:
            t0 = trio.current_time()
            r = await _post(gw, {"model": "up/hang", "messages": [{"role": "user", "content": "x"}]})
            elapsed = trio.current_time() - t0
    assert r.status_code == 504 and _error(r)["code"] == "gateway_timeout"
    assert elapsed < 2


async def test_upstream_unreachable_is_502() -> None:
    p = plan([openai_provider("dead", "http://127.0.0.1:9/v1")], [group("m", target("dead", "x"))])
    with trio.fail_after(10):
        async with open_gateway(p) as gw:
            r = await _post(gw, {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 502 and _error(r)["code"] == "upstream_connect_error"


async def test_client_gone_cancels_the_upstream_call() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            with trio.move_on_after(0.3):
                await _post(gw, {"model": "up/hang", "messages": [{"role": "user", "content": "x"}]})
            for _ in range(100):
                if fake.cancelled:
                    break
                await trio.sleep(0.02)
            cancelled_while_serving = fake.cancelled
    assert cancelled_while_serving == 1


async def test_upstream_killed_mid_stream_gives_a_clean_error() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            stream = await sdk(gw).chat.completions.create(
                model="up/break-stream", stream=True, messages=[{"role": "user", "content": "x"}])
            with pytest.raises(openai.APIError) as info:
                async for _ in stream:
                    pass
    assert "upstream" in str(info.value.message)


async def test_stream_deadline_mid_stream_ends_with_error_event() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake, timeout=0.7)) as gw:
            async with httpx.AsyncClient() as c:
                r = await c.post(base_url(gw) + "/chat/completions", json={
                    "model": "up/slow-stream", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    events = [e for e in r.text.split("\n\n") if e]
    assert r.status_code == 200
    assert json.loads(events[-1][len("data: "):])["error"]["code"] == "gateway_timeout"


async def test_unknown_route_is_404_in_openai_envelope() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            async with httpx.AsyncClient() as c:
                r = await c.get(f"http://127.0.0.1:{gw.port}/v1/nothing")
    assert r.status_code == 404 and _error(r)["code"] == "not_found"


async def test_embeddings_pass_through_float_and_base64() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake, open_gateway(_plan(fake)) as gw:
            c = sdk(gw)
            f = await c.embeddings.create(model="gpt", input="x", encoding_format="float")
            b = await c.embeddings.create(model="gpt", input="x")
    assert f.data[0].embedding == [0.5, -0.25, 0.125] == b.data[0].embedding
    assert fake.seen[-1].body["encoding_format"] == "base64"
