"""The sidecar as an OpenAI client sees it: the official `openai` SDK against sidegate serving the
built-in mock provider (the quickstart's shape)."""

from __future__ import annotations

import openai
import pytest
import trio

from sidegate.runtime.plan import CooldownPolicy
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import group, mock_provider, plan, quick, target


def client(handle) -> openai.AsyncOpenAI:  # type: ignore[no-untyped-def]
    return openai.AsyncOpenAI(base_url=base_url(handle), api_key="unused", max_retries=0)


async def test_chat_non_stream_returns_canned_text_and_usage() -> None:
    with trio.fail_after(10):
        async with open_gateway(quick()) as gw:
            r = await client(gw).chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "hello"}]
            )
    assert r.choices[0].message.content == "Hello from sidegate."
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens == 3


async def test_chat_stream_echo_reassembles_and_ends() -> None:
    with trio.fail_after(10):
        async with open_gateway(quick()) as gw:
            stream = await client(gw).chat.completions.create(
                model="echo", stream=True, messages=[{"role": "user", "content": "one two three four"}]
            )
            parts, finishes, usages = [], [], []
            async for chunk in stream:
                usages.append(chunk.usage)
                for c in chunk.choices:
                    parts.append(c.delta.content or "")
                    finishes.append(c.finish_reason)
    assert "".join(parts) == "one two three four"
    assert finishes[-1] == "stop"
    assert all(u is None for u in usages), "usage must not reach a client that did not ask for it"


async def test_stream_include_usage_is_honoured() -> None:
    with trio.fail_after(10):
        async with open_gateway(quick()) as gw:
            stream = await client(gw).chat.completions.create(
                model="echo", stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "a b"}],
            )
            chunks = [c async for c in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


async def test_tool_call_echo_non_stream_and_stream() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    with trio.fail_after(10):
        async with open_gateway(quick()) as gw:
            c = client(gw)
            r = await c.chat.completions.create(
                model="demo", tools=tools, messages=[{"role": "user", "content": "Paris"}]  # type: ignore[arg-type]
            )
            stream = await c.chat.completions.create(
                model="demo", tools=tools, stream=True, messages=[{"role": "user", "content": "Paris"}],  # type: ignore[arg-type]
            )
            args, ids, names = "", set(), set()
            async for chunk in stream:
                for ch in chunk.choices:
                    for tc in ch.delta.tool_calls or []:
                        args += tc.function.arguments or "" if tc.function else ""
                        if tc.id:
                            ids.add(tc.id)
                        if tc.function and tc.function.name:
                            names.add(tc.function.name)
    call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert call.function.arguments == '{"city":"Paris"}'  # type: ignore[union-attr]
    assert args == '{"city":"Paris"}' and ids == {call.id} and names == {"get_weather"}


async def test_embeddings_float_and_base64_agree() -> None:
    with trio.fail_after(10):
        async with open_gateway(quick()) as gw:
            c = client(gw)
            as_float = await c.embeddings.create(model="demo", input=["a", "b"], encoding_format="float")
            as_b64 = await c.embeddings.create(model="demo", input=["a", "b"])  # the SDK asks for base64
    assert len(as_float.data) == 2 and len(as_float.data[0].embedding) == 8
    assert [d.embedding for d in as_float.data] == [d.embedding for d in as_b64.data]
    assert as_float.data[0].embedding != as_float.data[1].embedding


async def test_model_listing_and_retrieve() -> None:
    with trio.fail_after(10):
        async with open_gateway(quick()) as gw:
            c = client(gw)
            listed = [m.id async for m in c.models.list()]
            one = await c.models.retrieve("default")
            with pytest.raises(openai.NotFoundError):
                await c.models.retrieve("nope")
    assert listed == ["default", "demo", "echo", "slow"]
    assert one.id == "default"


async def test_completions_legacy_endpoint() -> None:
    with trio.fail_after(10):
        async with open_gateway(quick()) as gw:
            r = await client(gw).completions.create(model="echo", prompt="say this")
    assert r.choices[0].text == "say this"


async def test_mock_error_rate_is_seeded_and_maps_to_502() -> None:
    lenient = CooldownPolicy(failures=1000, window=60.0, duration=1.0, error_rate=None, min_requests=10)
    p = plan([mock_provider("flaky", error_rate=0.5, seed=7)], [group("m", target("flaky", "m"), cooldown=lenient)])
    outcomes = []
    with trio.fail_after(10):
        for _ in range(2):
            async with open_gateway(p) as gw:
                c = client(gw)
                run = []
                for _ in range(12):
                    try:
                        await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
                        run.append("ok")
                    except openai.APIStatusError as exc:
                        assert exc.status_code == 502
                        run.append("err")
                outcomes.append(run)
    assert outcomes[0] == outcomes[1], "same seed, same sequence"
    assert 0 < outcomes[0].count("err") < 12
