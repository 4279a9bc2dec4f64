"""Tracing of the tool gateways: an MCP tool call and an A2A relay are spans of their own under the
client's `traceparent`, and the A2A agent receives the relay span as its parent."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx
import pytest
import trio

from compiler.pipeline import compile_text
from runtime.plan import Plan
from tests.support.a2a_agents import TOKEN, AgentServer
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


async def test_an_mcp_tool_call_is_a_span_under_the_client_trace() -> None:
    alpha = start_http("alpha", stateless=True)
    try:
        spec = BASE + f'mcp:\n  servers:\n    alpha: {{url: "{alpha.url}"}}\n'
        with otlp_receiver() as rx, trio.fail_after(30):
            async with open_gateway(traced(spec, rx.endpoint)) as gw, httpx.AsyncClient() as http:
                envelope = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                            "io.modelcontextprotocol/clientCapabilities": {}}
                body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "alpha__add", "arguments": {"a": 2, "b": 3}, "_meta": envelope}}
                answer = await http.post(f"http://127.0.0.1:{gw.port}/mcp", json=body, headers={
                    "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "alpha__add",
                    "traceparent": TRACEPARENT})
                assert answer.status_code == 200, answer.text
                assert json.dumps(answer.json()["result"]).count("5") >= 1
                (span,) = await wait_for(lambda: rx.trace(CLIENT_TRACE), what="the tool-call span")
    finally:
        alpha.stop()
    assert span.kind == "server" and span.parent_id == CLIENT_SPAN and span.name.startswith("tools/call ")
    assert span.attributes["gen_ai.operation.name"] == "execute_tool"
    assert span.attributes["sidegate.mcp.server"] == "alpha" and span.attributes["sidegate.mcp.is_error"] is False
