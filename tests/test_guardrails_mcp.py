"""Guardrails on MCP tool calls end to end: sidegate in front of an upstream MCP server built with the
official SDK (a subprocess), called with the official `mcp` client through `/mcp` in both protocol
eras. A key's guardrails check the arguments (a block never reaches the tool; a mask reaches it
masked: the tool echoes what it got) and the result (blocked or masked before the client sees it);
a block is a JSON-RPC error naming the guardrail, never the text."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx2
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.mcp.protocol import GUARDRAIL_BLOCKED
from tests.support.gateway import open_gateway
from tests.support.mcp_upstreams import Running, start_http

T = TypeVar("T")
SPEC = """\
version: 1
providers: {{fake: {{type: mock}}}}
models: {{demo: {{targets: [{{provider: fake, model: demo}}]}}}}
guardrails:
  plans: {{kind: keywords, words: [secret plan]}}
  pii: {{kind: pii, action: mask, entities: [email]}}
  drops: {{kind: keywords, mode: post_call, words: [dropped]}}
  results: {{kind: pii, mode: post_call, action: mask, entities: [credit_card]}}
auth:
  master_key: ${{MCP_MASTER}}
  keys:
    - {{name: agent, key: "${{MCP_AGENT}}", guardrails: [plans, pii, drops, results]}}
    - {{name: free, key: "${{MCP_FREE}}"}}
mcp:
  servers:
    alpha: {server}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[Running]:
    server = start_http("alpha", stateless=True)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_MASTER", "sk-mcp-master")
    monkeypatch.setenv("MCP_AGENT", "sk-mcp-agent-01")
    monkeypatch.setenv("MCP_FREE", "sk-mcp-free-02")


def run_client(url: str, key: str, mode: str, body: Callable[[Client], Awaitable[T]]) -> T:
    async def main() -> T:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                return await body(client)

    return asyncio.run(main())


def texts(result: Any) -> list[str]:
    return [c.text for c in result.content if isinstance(c, TextContent)]


async def session(client: Client) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with pytest.raises(MCPError) as blocked:
        await client.call_tool("alpha__regional", {"region": "the secret plan"})
    out["pre"] = blocked.value.error
    masked = await client.call_tool("alpha__regional", {"region": "ask bob@example.com"})
    out["masked"] = texts(masked)
    with pytest.raises(MCPError) as dropped:
        await client.call_tool("alpha__drop_table", {"table": "users"})
    out["post"] = dropped.value.error
    card = await client.call_tool("alpha__regional", {"region": "card 4111 1111 1111 1111"})
    out["card"] = texts(card)
    out["structured"] = json.dumps(card.structured_content)
    out["fine"] = texts(await client.call_tool("alpha__add", {"a": 2, "b": 3}))
    return out


async def unguarded(client: Client) -> list[str]:
    result = await client.call_tool("alpha__regional", {"region": "the secret plan, bob@example.com"})
    return texts(result)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_keys_guardrails_check_tool_arguments_and_results(upstream: Running, mode: str) -> None:
    plan = compile_text(SPEC.format(server=json.dumps({"url": upstream.url})), "mcp.yaml").plan
    assert plan is not None
    with trio.fail_after(60):
        async with open_gateway(plan) as gw:
            url = f"http://127.0.0.1:{gw.port}/mcp"
            out = await trio.to_thread.run_sync(run_client, url, "sk-mcp-agent-01", mode, session)
            free = await trio.to_thread.run_sync(run_client, url, "sk-mcp-free-02", mode, unguarded)
    pre, post = out["pre"], out["post"]
    assert pre.code == GUARDRAIL_BLOCKED and pre.data == {"code": "guardrail_blocked", "guardrail": "plans"}
    assert "arguments" in pre.message and "secret plan" not in pre.message
    assert out["masked"] == ["served in ask [EMAIL]"], "the tool got the masked argument"
    assert post.code == GUARDRAIL_BLOCKED and post.data["guardrail"] == "drops" and "result" in post.message
    assert "users" not in str(post)
    assert out["card"] == ["served in card [CARD ****1111]"]
    assert "4111" not in out["structured"] and "[CARD ****1111]" in out["structured"], "structured copy masked too"
    assert out["fine"] == ["5"]
    assert free == ["served in the secret plan, bob@example.com"], "guardrails are the key's: not another key's"
