"""`/v1/responses` end to end with the official openai SDK: translated to chat completions for an
OpenAI-compatible server, Anthropic and Gemini; passed through to OpenAI; stateful through the
store; streamed with the documented event sequence; bad input refused with `param`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import openai
import pytest
import trio

from sidegate.runtime.plan import Auth, Family, Plan, StaticKey
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_base import open_fake
from tests.support.fake_gemini import FakeGemini
from tests.support.fake_responses import FakeOpenAIResponses
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import group, native_provider, openai_provider, plan, target, text

WEATHER = [{"type": "function", "name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "sk-upstream")
    monkeypatch.setenv("ANT_KEY", "sk-ant-test")
    monkeypatch.setenv("GEM_KEY", "AIza-test")


def _plan(fake: FakeOpenAIResponses, ant: FakeAnthropic, gem: FakeGemini, **kw: Any) -> Plan:
    compat = openai_provider("compat", fake.base_url, "UP_KEY")
    official = replace(openai_provider("oai", fake.base_url, "UP_KEY"), type="openai")
    return plan([compat, official, native_provider("ant", Family.ANTHROPIC, ant.base_url, "ANT_KEY"),
                 native_provider("gem", Family.GEMINI, gem.base_url, "GEM_KEY")],
                [group("chat", target("compat", "gpt-4o")), group("oai", target("oai", "gpt-4o-2024-08-06")),
                 group("claude", target("ant", "ok")), group("gemini", target("gem", "ok"))], **kw)


@asynccontextmanager
async def _setup(**kw: Any) -> AsyncIterator[tuple[openai.AsyncOpenAI, FakeOpenAIResponses, Plan, str]]:
    async with open_fake(FakeOpenAIResponses()) as fake, open_fake(FakeAnthropic()) as ant, \
            open_fake(FakeGemini()) as gem:
        p = _plan(fake, ant, gem, **kw)
        async with open_gateway(p) as gw:
            yield openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0), fake, p, base_url(gw)


def _events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for block in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            payload = json.loads(lines["data"])
            assert lines["event"] == payload["type"], "the event line names the payload's type"
            out.append(payload)
    return out


async def test_text_on_a_chat_backend_with_instructions_and_a_second_turn() -> None:
    with trio.fail_after(20):
        async with _setup() as (client, fake, _, _url):
            first = await client.responses.create(model="chat", input="Hello", instructions="Be brief.")
            assert first.status == "completed" and first.object == "response" and first.id.startswith("resp_")
            assert first.output_text == "You said: Hello (2 messages)"
            assert (first.usage.input_tokens, first.usage.output_tokens, first.usage.total_tokens) == (11, 7, 18)
            sent = fake.seen[-1]
            assert sent.path == "/v1/chat/completions" and sent.body["model"] == "gpt-4o"
            assert sent.body["messages"] == [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "Hello"}]
            second = await client.responses.create(model="chat", input="And now?", previous_response_id=first.id)
            roles = [m["role"] for m in fake.seen[-1].body["messages"]]
            assert roles == ["user", "assistant", "user"], "instructions are not carried over, the turns are"
            assert second.output_text == "You said: And now? (3 messages)"
            again = await client.responses.retrieve(second.id)
            assert again.output_text == second.output_text and again.previous_response_id == first.id
            items = await client.responses.input_items.list(second.id)
            assert [i.type for i in items.data] == ["message"] and items.data[0].content[0].text == "And now?"


async def test_function_tool_over_two_turns_streamed_and_whole() -> None:
    with trio.fail_after(20):
        async with _setup() as (client, fake, _, _url):
            for stream in (False, True):
                if stream:
                    async with client.responses.stream(model="chat", input="Weather in Paris?", tools=WEATHER) as s:
                        kinds = [e.type async for e in s]
                        first = await s.get_final_response()
                    assert "response.function_call_arguments.delta" in kinds
                    assert "response.function_call_arguments.done" in kinds
                else:
                    first = await client.responses.create(model="chat", input="Weather in Paris?", tools=WEATHER)
                (call,) = [o for o in first.output if o.type == "function_call"]
                assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
                follow = await client.responses.create(
                    model="chat", tools=WEATHER, previous_response_id=first.id,
                    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "22C"}])
                assert follow.output_text == "Sunny, 22C"
                messages = fake.seen[-1].body["messages"]
                assert messages[1]["tool_calls"][0]["id"] == call.call_id
                assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "22C"}
                assert fake.seen[-1].body["tools"][0]["function"]["name"] == "get_weather"


async def test_the_stream_is_the_documented_event_sequence() -> None:
    with trio.fail_after(20):
        async with _setup() as (_client, _fake, _, url):
            async with openai.AsyncOpenAI(base_url=url, api_key="unused").with_streaming_response.responses.create(
                    model="chat", input="Stream this", stream=True) as raw:
                assert raw.headers["content-type"].startswith("text/event-stream")
                events = _events(await raw.read())
    kinds = [e["type"] for e in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * (len(kinds) - 8),
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    final = events[-1]["response"]
    assert deltas == "You said: Stream this (1 messages)" == final["output"][0]["content"][0]["text"]
    assert final["status"] == "completed" and final["usage"]["total_tokens"] == 18


async def test_structured_output_and_reasoning_controls_are_translated() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    with trio.fail_after(20):
        async with _setup() as (client, fake, _, _url):
            out = await client.responses.create(model="chat", input="Where?", text={"format": {
                "type": "json_schema", "name": "place", "schema": schema, "strict": True}})
            assert json.loads(out.output_text) == {"city": "Paris"}
            assert fake.seen[-1].body["response_format"] == {
                "type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}}
            with pytest.raises(openai.BadRequestError) as refused:
                await client.responses.create(model="chat", input="Think", reasoning={"effort": "low"})
            assert "reasoning_effort" in refused.value.message, "gpt-4o refuses reasoning controls, as OpenAI does"


async def test_anthropic_backend_with_reasoning_summaries_and_tools() -> None:
    with trio.fail_after(20):
        async with _setup() as (client, _fake, _, _url):
            out = await client.responses.create(model="claude", input="Is 2^61-1 prime?", reasoning={"effort": "low"},
                                                max_output_tokens=4096)
            kinds = [o.type for o in out.output]
            assert kinds == ["reasoning", "message"]
            assert out.output[0].summary[0].text.startswith("Mersenne") and out.output_text
            tools = await client.responses.create(model="claude", input="Weather?", tools=WEATHER)
            assert [o.name for o in tools.output if o.type == "function_call"] == ["get_weather"]
            async with client.responses.stream(model="claude", input="Weather?", tools=WEATHER) as s:
                kinds = [e.type async for e in s]
                final = await s.get_final_response()
            assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
            assert [o.type for o in final.output] == ["message", "function_call"]


async def test_gemini_backend_text_and_tool() -> None:
    with trio.fail_after(20):
        async with _setup() as (client, _fake, _, _url):
            out = await client.responses.create(model="gemini", input="Hi")
            assert out.output_text == "Hi there!" and out.usage.input_tokens == 12
            tools = await client.responses.create(model="gemini", input="Weather?", tools=WEATHER)
            (call,) = [o for o in tools.output if o.type == "function_call"]
            assert call.name == "get_weather" and json.loads(call.arguments) == {"location": "Paris"}
            async with client.responses.stream(model="gemini", input="Hi") as s:
                final = await s.get_final_response()
            assert final.output_text == "Hi there!"


async def test_openai_backend_passes_through_with_state_held_upstream() -> None:
    with trio.fail_after(20):
        async with _setup() as (client, fake, _, _url):
            first = await client.responses.create(model="oai", input="Hello", tools=[{"type": "web_search"}])
            sent = fake.seen[-1]
            assert sent.path == "/v1/responses" and sent.body["model"] == "gpt-4o-2024-08-06"
            assert sent.body["tools"] == [{"type": "web_search"}], "built-in tools go to OpenAI as sent"
            assert first.id == "resp_up0" and first.output_text == "upstream: Hello (1 items)"
            second = await client.responses.create(model="oai", input="More", previous_response_id=first.id)
            assert fake.seen[-1].body["previous_response_id"] == "resp_up0", "OpenAI holds the earlier turn"
            assert second.output_text == "upstream: More (3 items)", "two earlier items held upstream, one new"
            async with client.responses.stream(model="oai", input="Streamed") as s:
                kinds = [e.type async for e in s]
                final = await s.get_final_response()
            assert kinds[-1] == "response.completed" and final.output_text == "upstream: Streamed (1 items)"
            assert (await client.responses.retrieve(final.id)).output_text == final.output_text


async def test_a_conversation_moves_between_translated_and_passthrough_backends() -> None:
    with trio.fail_after(20):
        async with _setup() as (client, fake, _, _url):
            local = await client.responses.create(model="chat", input="Hello")
            moved = await client.responses.create(model="oai", input="Continue", previous_response_id=local.id)
            body = fake.seen[-1].body
            assert "previous_response_id" not in body, "OpenAI never saw the local turn: it is sent as input"
            assert [i.get("role") for i in body["input"]] == ["user", "assistant", "user"]
            assert moved.output_text == "upstream: Continue (3 items)"
            back = await client.responses.create(model="chat", input="Back", previous_response_id=moved.id)
            assert [m["role"] for m in fake.seen[-1].body["messages"]] == ["user", "assistant", "user", "assistant",
                                                                           "user"]
            assert back.output_text == "You said: Back (5 messages)"


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"input": [{"type": "computer_call_output", "call_id": "x"}]}, "input[0].type"),
    ({"input": [{"type": "function_call_output", "call_id": "nope", "output": "1"}]}, "input[0].call_id"),
    ({"input": "hi", "previous_response_id": "resp_unknown"}, "previous_response_id"),
    ({"input": "hi", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}, "tool_choice"),
    ({"input": "hi", "background": True}, "background"),
    ({"input": "hi", "max_output_tokens": 3}, "max_output_tokens"),
])
async def test_bad_input_is_a_400_naming_the_parameter(kwargs: dict[str, Any], param: str) -> None:
    with trio.fail_after(20):
        async with _setup() as (client, fake, _, _url):
            with pytest.raises(openai.BadRequestError) as refused:
                await client.responses.create(model="chat", **kwargs)
            assert refused.value.body["param"] == param  # type: ignore[index]
            assert not fake.seen, "nothing reached the upstream"


async def test_stored_responses_are_scoped_to_their_key_and_expire() -> None:
    auth = Auth(master_key=None, keys=(StaticKey(name="a", key=text("sk-a"), team=None, user=None, models=(), budget=None, limits=None),
                                       StaticKey(name="b", key=text("sk-b"), team=None, user=None, models=(), budget=None, limits=None)), jwt=None, refresh=30.0)
    with trio.fail_after(20):
        async with _setup(auth=auth) as (_client, _fake, p, url):
            a = openai.AsyncOpenAI(base_url=url, api_key="sk-a", max_retries=0)
            b = openai.AsyncOpenAI(base_url=url, api_key="sk-b", max_retries=0)
            mine = await a.responses.create(model="chat", input="secret plans")
            assert (await a.responses.retrieve(mine.id)).output_text == mine.output_text
            with pytest.raises(openai.NotFoundError):
                await b.responses.retrieve(mine.id)
            with pytest.raises(openai.BadRequestError):
                await b.responses.create(model="chat", input="more", previous_response_id=mine.id)
            unstored = await a.responses.create(model="chat", input="forget me", store=False)
            with pytest.raises(openai.NotFoundError):
                await a.responses.retrieve(unstored.id)
            await a.responses.delete(mine.id)
            with pytest.raises(openai.NotFoundError):
                await a.responses.retrieve(mine.id)
    assert p.store.responses_retention == 30 * 86400.0


async def test_retention_expires_stored_responses() -> None:
    with trio.fail_after(20):
        async with open_fake(FakeOpenAIResponses()) as fake, open_fake(FakeAnthropic()) as ant, \
                open_fake(FakeGemini()) as gem:
            p = _plan(fake, ant, gem)
            p = replace(p, store=replace(p.store, responses_retention=1e-9))
            async with open_gateway(p) as gw:
                client = openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0)
                gone = await client.responses.create(model="chat", input="short-lived")
                with pytest.raises(openai.NotFoundError):
                    await client.responses.retrieve(gone.id)
                with pytest.raises(openai.BadRequestError):
                    await client.responses.create(model="chat", input="again", previous_response_id=gone.id)


def test_the_docs_table_matches_the_translation_rules() -> None:
    """docs/responses.md prints the rules of runtime/responses/request.py: every parameter in its row."""
    from pathlib import Path

    from sidegate.runtime.responses.request import DROPPED, MAPPED, REFUSED

    doc = (Path(__file__).resolve().parent.parent / "docs" / "responses.md").read_text(encoding="utf-8")
    table = doc.split("<!-- responses-parameters -->", 1)[1].split("<!-- /responses-parameters -->", 1)[0]
    rows = {line.split("|")[1].strip().split(" ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    for names, row in ((MAPPED, "mapped"), (DROPPED, "dropped"), (tuple(REFUSED), "refused")):
        for name in names:
            assert f"`{name}`" in rows[row], (name, row)


@pytest.mark.parametrize("stream", [False, True], ids=["run", "run_streamed"])
async def test_the_agents_sdk_runs_a_function_tool_through_sidegate(stream: bool) -> None:
    """The OpenAI Agents SDK with its default model (OpenAIResponsesModel), in its own asyncio process."""
    import sys
    from pathlib import Path

    pytest.importorskip("agents", reason="the openai-agents package (a dev dependency) is not installed")
    root = Path(__file__).resolve().parent.parent
    with trio.fail_after(60):
        async with _setup() as (_client, fake, _, url):
            done = await trio.run_process(
                [sys.executable, "-m", "tests.support.agents_client", url, "chat", *(["--stream"] if stream else [])],
                cwd=root, capture_stdout=True, capture_stderr=True, check=False)
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            result = json.loads(done.stdout.decode().strip().splitlines()[-1])
            assert result["calls"] == ["Paris"] and result["output"] == "Sunny, 22C in Paris"
            assert len(result["ids"]) == 2 and all(i.startswith("resp_") for i in result["ids"])
            assert [s.path for s in fake.seen] == ["/v1/chat/completions"] * 2
            assert fake.seen[-1].body["messages"][-1] == {"role": "tool", "tool_call_id": "call_2",
                                                          "content": "22C in Paris"}


async def test_langchain_with_use_responses_api() -> None:
    """LangChain's ChatOpenAI on the Responses API: a tool call bound with bind_tools, then the answer to
    its result, whole and streamed (the sync client in a worker thread)."""
    lc = pytest.importorskip("langchain_openai", reason="langchain-openai (a dev dependency) is not installed")
    from langchain_core.messages import HumanMessage, ToolMessage

    with trio.fail_after(60):
        async with _setup() as (_client, fake, _, url):
            def run() -> tuple[Any, Any, str]:
                llm = lc.ChatOpenAI(model="chat", base_url=url, api_key="unused", use_responses_api=True,
                                    max_retries=0)
                tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
                asked = llm.bind_tools([tool]).invoke([HumanMessage("Weather in Paris?")])
                call = asked.tool_calls[0]
                answered = llm.bind_tools([tool]).invoke(
                    [HumanMessage("Weather in Paris?"), asked, ToolMessage("22C", tool_call_id=call["id"])])
                streamed = "".join(str(c.text) for c in llm.stream([HumanMessage("Stream it")]))
                return asked, answered, streamed

            asked, answered, streamed = await trio.to_thread.run_sync(run)
    assert asked.tool_calls[0]["name"] == "get_weather" and asked.tool_calls[0]["args"] == {"city": "Paris"}
    assert answered.text == "Sunny, 22C"
    assert streamed == "You said: Stream it (1 messages)"
    assert all(s.path == "/v1/chat/completions" for s in fake.seen)


async def test_a_stream_cut_mid_way_ends_with_response_failed_and_is_not_stored() -> None:
    from tests.support.upstream import open_fake_openai

    with trio.fail_after(20):
        async with open_fake_openai() as broken:
            p = plan([openai_provider("flaky", broken.base_url)], [group("flaky", target("flaky", "break-stream"))])
            async with open_gateway(p) as gw:
                url = base_url(gw)
                async with openai.AsyncOpenAI(base_url=url, api_key="x").with_streaming_response.responses.create(
                        model="flaky", input="hi", stream=True) as raw:
                    events = _events(await raw.read())
                assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.failed"
                failed = events[-1]["response"]
                assert failed["status"] == "failed" and "upstream connection broke" in failed["error"]["message"]
                assert [e["sequence_number"] for e in events] == list(range(len(events)))
                client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
                with pytest.raises(openai.NotFoundError):
                    await client.responses.retrieve(failed["id"])


async def test_unknown_parameters_reach_openai_and_are_dropped_for_chat_backends() -> None:
    with trio.fail_after(20):
        async with _setup() as (client, fake, _, _url):
            ok = await client.responses.create(model="chat", input="hi", extra_body={"client_metadata": {"a": 1},
                                                                                     "future_knob": True})
            assert ok.status == "completed" and "future_knob" not in fake.seen[-1].body
            with pytest.raises(openai.BadRequestError) as refused:
                await client.responses.create(model="oai", input="hi", extra_body={"future_knob": True})
            assert refused.value.body["param"] == "future_knob", "OpenAI itself judged it"  # type: ignore[index]


async def test_the_openai_node_sdk() -> None:
    """The openai npm package (Node) against /v1/responses: text, a function tool over two turns, a stream."""
    import os
    from pathlib import Path

    from tests.support.npm import npm_modules

    modules = await trio.to_thread.run_sync(npm_modules, "openai@6.49.0", "openai/package.json")
    script = Path(__file__).resolve().parent / "support" / "responses_node.js"
    with trio.fail_after(60):
        async with _setup() as (_client, _fake, _, url):
            done = await trio.run_process(["node", str(script), url, "chat"], capture_stdout=True,
                                          capture_stderr=True, check=False,
                                          env={**os.environ, "NODE_PATH": str(modules)})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["text"] == "You said: Hello from Node (1 messages)"
    assert result["call"] == "get_weather" and json.loads(result["args"]) == {"city": "Paris"}
    assert result["answered"] == "Sunny, 22C"
    assert result["events"][0] == "response.created" and result["events"][-1] == "response.completed"
    assert result["streamed"] == "You said: Stream it (1 messages)"
