"""Tracing of the tool gateways: an MCP tool call and an A2A relay are spans of their own under the
client's `traceparent`, and the MCP server and the A2A agent receive that span as their parent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan import Plan
from tests.support.a2a_agents import TOKEN, AgentServer
from tests.support.fake_base import lifespan, read_all
from tests.support.gateway import open_gateway
from tests.support.mcp_upstreams import start_http
from tests.support.otlp import otlp_receiver, wait_for
from tests.test_tracing_otlp import CLIENT_SPAN, CLIENT_TRACE, TRACEPARENT, tracing

pytestmark = pytest.mark.usefixtures("_fast")


@pytest.fixture
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("A2A_AGENT_TOKEN", TOKEN)


class RecordingAgent(AgentServer):
    """The message agent, also keeping the `traceparent` of every request that reached it."""

    def __init__(self) -> None:
        super().__init__("message")
        self.traceparents: list[str] = []

    def app(self) -> Any:
        inner = super().app()

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and not scope["path"].endswith("agent-card.json"):
                self.traceparents.append(dict(scope["headers"]).get(b"traceparent", b"").decode())
            await inner(scope, receive, send)

        return recording


def traced(spec: str, endpoint: str) -> Plan:
    result = compile_text(spec, "traced.yaml")
    assert result.plan is not None, [d.format_text() for d in result.diagnostics]
    p = result.plan
    return replace(p, observability=replace(p.observability, tracing=tracing(endpoint, logs=False, metrics=False)))


BASE = "version: 1\nproviders: {fake: {type: mock}}\nmodels: {demo: {targets: [{provider: fake, model: demo}]}}\n"


async def test_an_a2a_relay_is_a_span_and_the_agent_gets_its_context() -> None:
    agent = RecordingAgent()
    agent.start()
    try:
        spec = BASE + f'a2a:\n  agents:\n    echo: {{url: "{agent.base}", auth: {{bearer: "${{A2A_AGENT_TOKEN}}"}}}}\n'
        with otlp_receiver() as rx, trio.fail_after(30):
            async with open_gateway(traced(spec, rx.endpoint)) as gw, httpx.AsyncClient() as http:
                answer = await http.post(f"http://127.0.0.1:{gw.port}/a2a/echo", headers={
                    "a2a-version": "1.0", "traceparent": TRACEPARENT},
                    json={"jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": {"id": "no-such-task"}})
                assert answer.status_code == 200 and answer.json()["id"] == 7
                (span,) = await wait_for(lambda: rx.trace(CLIENT_TRACE), what="the relay span")
    finally:
        await trio.to_thread.run_sync(agent.stop)
    assert span.name == "invoke_agent echo" and span.kind == "server" and span.parent_id == CLIENT_SPAN
    assert span.attributes["gen_ai.agent.name"] == "echo" and span.attributes["http.response.status_code"] == 200
    assert agent.traceparents[-1] == f"00-{CLIENT_TRACE}-{span.span_id}-01"


@asynccontextmanager
async def recording_proxy(target: str) -> AsyncIterator[tuple[str, list[tuple[str, str]]]]:
    """A pass-through HTTP proxy in front of `target` keeping (JSON-RPC method, traceparent) of each request."""
    seen: list[tuple[str, str]] = []
    client = httpx.AsyncClient()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_all(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k not in (b"host", b"content-length")}
        method = json.loads(body).get("method", "") if body else ""
        seen.append((method, headers.get("traceparent", "")))
        answer = await client.request(scope["method"], target, content=body, headers=headers)
        await send({"type": "http.response.start", "status": answer.status_code, "headers": [
            (k.encode(), v.encode()) for k, v in answer.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")]})
        await send({"type": "http.response.body", "body": answer.content})

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    async with trio.open_nursery() as nursery, client:
        binds = await nursery.start(serve, app, config)
        yield binds[0] + "/mcp", seen
        nursery.cancel_scope.cancel()


async def test_an_mcp_tool_call_is_a_span_whose_context_reaches_the_server() -> None:
    alpha = start_http("alpha", stateless=True)
    envelope = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "alpha__add", "arguments": {"a": 2, "b": 3}, "_meta": envelope}}
    headers = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "alpha__add",
               "traceparent": TRACEPARENT}
    try:
        with otlp_receiver() as rx, trio.fail_after(30):
            async with recording_proxy(alpha.url) as (url, seen):
                spec = BASE + f'mcp:\n  servers:\n    alpha: {{url: "{url}"}}\n'
                async with open_gateway(traced(spec, rx.endpoint)) as gw, httpx.AsyncClient() as http:
                    answer = await http.post(f"http://127.0.0.1:{gw.port}/mcp", json=body, headers=headers)
                    assert answer.status_code == 200, answer.text
                    assert "5" in json.dumps(answer.json()["result"])
                    (span,) = await wait_for(lambda: rx.trace(CLIENT_TRACE), what="the tool-call span")
    finally:
        alpha.stop()
    assert span.kind == "server" and span.parent_id == CLIENT_SPAN and span.name.startswith("tools/call ")
    assert span.attributes["gen_ai.operation.name"] == "execute_tool"
    assert span.attributes["sidegate.mcp.server"] == "alpha" and span.attributes["sidegate.mcp.is_error"] is False
    calls = [tp for method, tp in seen if method == "tools/call"]
    assert calls == [f"00-{CLIENT_TRACE}-{span.span_id}-01"], seen
