"""What an MCP server sends before its answer, relayed by sidegate on the client's own event stream:
progress, log messages at the session's level, and the server's requests of a session-era client
(answered by the client through sidegate), against the reference upstream (official Python SDK)
speaking both eras. Faults: an answer posted from another session is not taken, a client without
the capability or without an event stream gets the server's request refused, a bad level is
refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from tests.support.gateway import open_gateway
from tests.support.mcp_conformance import Reference, start_reference

_SSE = {"accept": "application/json, text/event-stream"}
_JSON = {"accept": "application/json"}


@pytest.fixture(scope="module")
def reference() -> Iterator[Reference]:
    running = start_reference()
    try:
        yield running
    finally:
        running.stop()


@asynccontextmanager
async def _gateway(reference: Reference) -> AsyncIterator[httpx.AsyncClient]:
    text = ("version: 1\nproviders: {fake: {type: mock}}\nmodels: {demo: {targets: [{provider: fake, model: demo}]}}\n"
            f"mcp:\n  servers:\n    ref: {{url: \"{reference.url}\", timeout: 20s}}\n")
    result = compile_text(text, "relay.yaml")
    assert result.plan is not None, [d.format_text() for d in result.diagnostics]
    async with open_gateway(result.plan) as gw, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gw.port}/mcp/ref", timeout=20) as http:
        yield http


async def _session(http: httpx.AsyncClient, capabilities: dict[str, Any]) -> dict[str, str]:
    opened = await http.post("", headers=_JSON, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "t", "version": "1"}}})
    assert opened.status_code == 200, opened.text
    assert "logging" in opened.json()["result"]["capabilities"]
    headers = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    await http.post("", headers={**headers, **_JSON}, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return headers


def _call(tool: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


async def test_progress_and_log_messages_arrive_before_the_answer_at_the_session_s_level(reference: Reference) -> None:
    async with _gateway(reference) as http:
        session = await _session(http, {})
        streamed = await http.post("", headers={**session, **_SSE},
                                   json=_call("test_tool_with_progress", {}, {"progressToken": "p-1"}))
        plain = await http.post("", headers={**session, **_JSON},
                                json=_call("test_tool_with_progress", {}, {"progressToken": "p-2"}))
        logged = await http.post("", headers={**session, **_SSE}, json=_call("test_logging_tool", {}))
        quiet = await http.post("", headers={**session, **_JSON}, json={
            "jsonrpc": "2.0", "id": 8, "method": "logging/setLevel", "params": {"level": "warning"}})
        filtered = await http.post("", headers={**session, **_SSE}, json=_call("test_logging_tool", {}))
        bad = await http.post("", headers={**session, **_JSON}, json={
            "jsonrpc": "2.0", "id": 9, "method": "logging/setLevel", "params": {"level": "loud"}})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = _events(streamed.text)
    assert [e["params"]["progress"] for e in events[:-1]] == [0, 50, 100]
    assert {e["params"]["progressToken"] for e in events[:-1]} == {"p-1"}, "the client's own token"
    assert events[-1]["id"] == 7 and events[-1]["result"]["content"][0]["text"].startswith("Progress reported")
    assert plain.headers["content-type"].startswith("application/json"), "no event stream asked: the answer only"
    assert plain.json()["result"]["content"][0]["text"].startswith("Progress reported")
    levels = [e["params"]["level"] for e in _events(logged.text) if e.get("method") == "notifications/message"]
    assert levels == ["debug", "info", "notice", "warning", "error"]
    assert quiet.json() == {"jsonrpc": "2.0", "id": 8, "result": {}}
    assert [e["params"]["level"] for e in _events(filtered.text) if "method" in e] == ["warning", "error"]
    assert bad.json()["error"]["code"] == -32602


async def test_a_servers_sampling_request_is_answered_by_the_calling_client(reference: Reference) -> None:
    async with _gateway(reference) as http:
        caller = await _session(http, {"sampling": {}})
        other = await _session(http, {"sampling": {}})
        seen: list[dict[str, Any]] = []
        async with http.stream("POST", "", headers={**caller, **_SSE},
                               json=_call("test_sampling", {"prompt": "2+2?"})) as answer:
            lines = answer.aiter_lines()
            async for line in lines:
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    break
            asked = seen[0]
            reply = {"jsonrpc": "2.0", "id": asked["id"], "result": {
                "role": "assistant", "content": {"type": "text", "text": "four"}, "model": "m", "stopReason": "endTurn"}}
            forged = {**reply, "result": {**reply["result"], "content": {"type": "text", "text": "five"}}}
            stolen = await http.post("", headers={**other, **_JSON}, json=forged)  # another session: not taken
            given = await http.post("", headers={**caller, **_JSON}, json=reply)
            async for line in lines:
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
        again = await http.post("", headers={**caller, **_JSON}, json=reply)  # answered already: dropped
    assert asked["method"] == "sampling/createMessage" and str(asked["id"]).startswith("sg-")
    assert asked["params"]["messages"][0]["content"]["text"] == "2+2?"
    assert stolen.status_code == given.status_code == again.status_code == 202
    assert seen[-1]["id"] == 7 and seen[-1]["result"]["content"][0]["text"] == "LLM response: four"


@pytest.mark.parametrize("why", ["undeclared", "no event stream"])
async def test_a_server_request_the_client_cannot_take_is_refused_by_the_gateway(reference: Reference,
                                                                                 why: str) -> None:
    async with _gateway(reference) as http:
        caps: dict[str, Any] = {} if why == "undeclared" else {"sampling": {}}
        session = await _session(http, caps)
        with trio.fail_after(15):  # the gateway answers the server at once: no wait for a client
            done = await http.post("", headers={**session, **(_SSE if why == "undeclared" else _JSON)},
                                   json=_call("test_sampling", {"prompt": "2+2?"}))
    answer = _events(done.text)[-1] if done.headers["content-type"].startswith("text/event-stream") else done.json()
    assert answer["id"] == 7
    assert answer.get("error") or answer["result"].get("isError"), answer


async def _events_of(stream: httpx.Response, into: trio.MemorySendChannel[dict[str, Any]]) -> None:
    """Read a stream's events in the background (a read cut by a timeout cannot be resumed)."""
    async with into:
        async for line in stream.aiter_lines():
            if line.startswith("data:"):
                await into.send(dict(json.loads(line[5:])))


async def _next_event(events: trio.MemoryReceiveChannel[dict[str, Any]], seconds: float) -> dict[str, Any] | None:
    with trio.move_on_after(seconds):
        return await events.receive()
    return None


@pytest.mark.parametrize("path", ["/mcp/ref", "/mcp"])
async def test_a_subscribed_session_gets_the_resource_s_updates_on_its_own_stream(reference: Reference,
                                                                                 path: str) -> None:
    uri = "test://watched-resource"
    public, tool = (uri, "test_touch_resource") if path == "/mcp/ref" else (f"ref+{uri}", "ref__test_touch_resource")
    async with _gateway(reference) as http:
        http.base_url = httpx.URL(str(http.base_url).replace("/mcp/ref", path))
        follower = await _session(http, {})
        bystander = await _session(http, {})
        subscribed = await http.post("", headers={**follower, **_JSON}, json={
            "jsonrpc": "2.0", "id": 3, "method": "resources/subscribe", "params": {"uri": public}})
        assert subscribed.json() == {"jsonrpc": "2.0", "id": 3, "result": {}}, subscribed.text
        async with http.stream("GET", "", headers={**follower, **_SSE}) as mine, \
                http.stream("GET", "", headers={**bystander, **_SSE}) as theirs, trio.open_nursery() as nursery:
            assert mine.headers["content-type"].startswith("text/event-stream")
            to_me, for_me = trio.open_memory_channel[dict[str, Any]](16)
            to_them, for_them = trio.open_memory_channel[dict[str, Any]](16)
            nursery.start_soon(_events_of, mine, to_me)
            nursery.start_soon(_events_of, theirs, to_them)
            got = None
            for _ in range(40):  # until the gateway's own stream from the server is open
                touched = await http.post("", headers={**follower, **_JSON}, json=_call(tool, {"uri": uri}))
                assert touched.json()["result"]["content"][0]["text"] == f"announced {uri}", touched.text
                got = await _next_event(for_me, 0.25)
                if got is not None:
                    break
            stray = await _next_event(for_them, 0.3)
            nursery.cancel_scope.cancel()
        gone = await http.post("", headers={**follower, **_JSON}, json={
            "jsonrpc": "2.0", "id": 4, "method": "resources/unsubscribe", "params": {"uri": public}})
        after = await http.post("", headers={**follower, **_JSON}, json=_call(tool, {"uri": uri}))
        unknown = await http.get("", headers={"mcp-session-id": "nosuch", **_SSE})
    assert got == {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": public}}
    assert stray is None, "a session that did not subscribe hears nothing"
    assert gone.json()["result"] == {}
    assert after.json()["result"]["content"][0]["text"] == f"not subscribed to {uri}", "unsubscribed upstream too"
    assert unknown.status_code == 404


async def test_a_session_stream_ends_when_the_drain_starts(reference: Reference) -> None:
    text = ("version: 1\nserver: {drain_timeout: 60s}\nproviders: {fake: {type: mock}}\n"
            "models: {demo: {targets: [{provider: fake, model: demo}]}}\n"
            f"mcp:\n  servers:\n    ref: {{url: \"{reference.url}\"}}\n")
    result = compile_text(text, "relay.yaml")
    assert result.plan is not None, [d.format_text() for d in result.diagnostics]
    with trio.fail_after(20):  # far less than the 60 s drain: the stream does not hold it
        async with open_gateway(result.plan) as gw, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{gw.port}/mcp/ref", timeout=30) as http:
            session = await _session(http, {})
            async with http.stream("GET", "", headers={**session, **_SSE}) as stream:
                lines = stream.aiter_lines()
                assert await lines.__anext__() == ": stream open"
                gw.shutdown.set()
                rest = [line async for line in lines]
    assert all(not line.startswith("data:") for line in rest)
