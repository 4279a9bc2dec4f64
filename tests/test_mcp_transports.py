"""MCP upstreams on the legacy HTTP+SSE transport (an mcp 1.x FastMCP server and an mcp 2.x
MCPServer) and behind OAuth 2.0 client credentials, reached through sidegate's `/mcp` by the
official mcp 2.x client."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import httpx2
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan import Plan
from tests.support.fake_base import open_fake
from tests.support.gateway import open_gateway
from tests.support.mcp_oauth import FakeTokenServer
from tests.support.mcp_upstreams import start_http
from tests.support.mcp_venv1 import mcp1_python

T = TypeVar("T")


def compiled(text: str) -> Plan:
    result = compile_text("version: 1\nproviders: {fake: {type: mock}}\n"
                          "models: {demo: {targets: [{provider: fake, model: demo}]}}\n" + text, "mcp.yaml")
    assert result.plan is not None, [d.format_text() for d in result.diagnostics]
    return result.plan


def client_run(url: str, body: Callable[[Client], Awaitable[T]]) -> T:
    async def main() -> T:
        async with httpx2.AsyncClient(timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                return await body(client)

    return asyncio.run(main())


async def whoami_everywhere(client: Client) -> tuple[list[str], dict[str, Any]]:
    tools = (await client.list_tools()).tools
    servers = sorted({t.name.split("__")[0] for t in tools})
    answers = {}
    for s in servers:
        result = await client.call_tool(f"{s}__whoami", {})
        answers[s] = result.content[0].text
        failed = await client.call_tool(f"{s}__fail", {})
        assert failed.is_error
    return sorted(t.name for t in tools), answers


async def test_legacy_sse_upstreams_of_both_sdk_majors() -> None:
    old = start_http("oldsse", python=mcp1_python(), transport="sse")
    new = start_http("newsse", transport="sse")
    try:
        plan = compiled("mcp:\n  servers:\n"
                        f"    oldsse: {{url: 'http://127.0.0.1:{old.port}/sse', transport: sse}}\n"
                        f"    newsse: {{url: 'http://127.0.0.1:{new.port}/sse', transport: sse}}\n")
        async with open_gateway(plan) as gw:
            url = f"http://127.0.0.1:{gw.port}/mcp"
            names, answers = await trio.to_thread.run_sync(lambda: client_run(url, whoami_everywhere))
            assert answers == {"newsse": "newsse", "oldsse": "oldsse"}
            assert len(names) == 14  # 7 tools on each server
            # the stream is re-opened when the server comes back
            old.stop()
            sse = gw.app.mcp.upstreams["oldsse"]
            with trio.fail_after(5):
                while not sse.down:  # type: ignore[attr-defined]
                    await trio.sleep(0.05)
            names, answers = await trio.to_thread.run_sync(lambda: client_run(url, whoami_everywhere))
            assert answers == {"newsse": "newsse"}
    finally:
        old.stop()
        new.stop()


async def test_oauth_client_credentials_token_is_cached_and_refreshed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_CLIENT_SECRET", "s3cret")
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-1\n")
    guarded = start_http("guarded", stateless=True, extra=("--tokens-file", str(tokens)))
    try:
        async with open_fake(FakeTokenServer()) as issuer:
            plan = compiled(
                "mcp:\n  servers:\n    guarded:\n"
                f"      url: {guarded.url}\n"
                f"      auth: {{oauth: {{token_url: '{issuer.root}/oauth/token', client_id: gateway, "
                "client_secret: '${MCP_CLIENT_SECRET}', scope: tools}}\n")
            assert "s3cret" not in json.dumps(str(plan))
            async with open_gateway(plan) as gw:
                url = f"http://127.0.0.1:{gw.port}/mcp"
                for _ in range(2):
                    _, answers = await trio.to_thread.run_sync(lambda: client_run(url, whoami_everywhere))
                    assert answers == {"guarded": "guarded"}
                assert issuer.issued == 1  # cached across requests
                assert all("scope=tools" in s.raw.decode() for s in issuer.seen)
                tokens.write_text("tok-2\n")  # the upstream revokes tok-1: a 401 fetches a new token
                _, answers = await trio.to_thread.run_sync(lambda: client_run(url, whoami_everywhere))
                assert answers == {"guarded": "guarded"}
                assert issuer.issued == 2
    finally:
        guarded.stop()


async def test_wrong_oauth_client_secret_reports_the_server_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_CLIENT_SECRET", "wrong")
    async with open_fake(FakeTokenServer()) as issuer:
        plan = compiled(
            "mcp:\n  servers:\n    guarded:\n      url: http://127.0.0.1:9/mcp\n"
            f"      auth: {{oauth: {{token_url: '{issuer.root}/oauth/token', client_id: gateway, "
            "client_secret: '${MCP_CLIENT_SECRET}'}}\n")
        async with open_gateway(plan) as gw:
            up = gw.app.mcp.upstreams["guarded"]
            from sidegate.runtime.mcp.protocol import McpError

            with pytest.raises(McpError) as failed:
                await up.request("tools/list", {})
    assert failed.value.message == "MCP server 'guarded': OAuth token request failed: HTTP 401 (invalid_client)"
    assert "wrong" not in failed.value.message


async def test_broken_stdio_servers_are_reported_and_the_gateway_stays_up(tmp_path: Path) -> None:
    silent = tmp_path / "silent.py"
    silent.write_text("import time\ntime.sleep(60)\n")
    import sys

    plan = compiled("mcp:\n  servers:\n"
                    f"    silent: {{command: ['{sys.executable}', '{silent}'], timeout: 1s, start_timeout: 1s, "
                    "start: boot}\n"
                    "    missing: {command: [/nonexistent/server], start: boot}\n")
    async with open_gateway(plan) as gw:
        url = f"http://127.0.0.1:{gw.port}/mcp"
        with trio.fail_after(10):
            while not gw.app.mcp.upstreams["silent"].down:  # type: ignore[attr-defined]
                await trio.sleep(0.05)

        async def listing(client: Client) -> tuple[list[Any], Any]:
            page = await client.list_tools()
            return page.tools, page.meta

        tools, meta = await trio.to_thread.run_sync(lambda: client_run(url, listing))
        assert tools == []
        assert meta == {"sidegate.dev/unavailable": ["missing", "silent"]}
        assert gw.app.mcp.upstreams["silent"].last_error == "no answer to initialize"
        assert "FileNotFoundError" in (gw.app.mcp.upstreams["missing"].last_error or "")


async def test_per_server_timeout_and_concurrency_cap() -> None:
    import sys

    from tests.support.mcp_upstreams import stdio_command

    command = json.dumps(stdio_command("files", sys.executable))
    plan = compiled(f"mcp:\n  servers:\n    files: {{command: {command}, timeout: 1s, max_concurrency: 1, start: boot}}\n")
    async with open_gateway(plan) as gw:
        url = f"http://127.0.0.1:{gw.port}/mcp"
        # The subprocess needs its interpreter started before it can answer (seconds on a loaded
        # machine): wait until the gateway says it is ready, as an orchestrator would.
        with trio.fail_after(60):
            await gw.app.mcp.wait_started()
        async with httpx2.AsyncClient() as http:
            ready = await http.get(f"http://127.0.0.1:{gw.port}/health/ready")
        assert ready.status_code == 200 and gw.app.mcp.upstreams["files"].version is not None

        async def naps(client: Client) -> tuple[float, str]:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            first, second = await asyncio.gather(client.call_tool("files__nap", {"seconds": 0.4}),
                                                 client.call_tool("files__nap", {"seconds": 0.4}))
            assert first.content[0].text == second.content[0].text == "rested"
            both = loop.time() - t0
            try:
                await client.call_tool("files__nap", {"seconds": 5})
            except Exception as exc:  # the SDK's MCPError
                return both, str(exc)
            return both, "answered"

        both, slow = await trio.to_thread.run_sync(lambda: client_run(url, naps))
    assert both >= 0.8  # one at a time
    assert slow == "MCP server 'files' timed out"


async def test_readiness_waits_for_boot_servers_to_answer_initialize(tmp_path: Path) -> None:
    import sys

    from tests.support.mcp_upstreams import stdio_command

    gate = tmp_path / "go"
    wrapper = tmp_path / "gated.py"
    # starts the real server only once the test creates `gate`: a start as slow as the test wants
    wrapper.write_text("import os, sys, time\n"
                       f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.02)\n"
                       f"os.execv(sys.executable, {[sys.executable, *stdio_command('gated')[1:]]!r})\n")
    plan = compiled("mcp:\n  servers:\n"
                    f"    gated: {{command: ['{sys.executable}', '{wrapper}'], timeout: 1s, start: boot}}\n")
    async with open_gateway(plan) as gw:
        async with httpx2.AsyncClient() as http:
            ready = f"http://127.0.0.1:{gw.port}/health/ready"
            waiting = await http.get(ready)
            assert waiting.status_code == 503 and waiting.json()["mcp_starting"] == ["gated"]
            gate.write_text("")
            with trio.fail_after(60):
                await gw.app.mcp.wait_started()
            assert (await http.get(ready)).status_code == 200
        url = f"http://127.0.0.1:{gw.port}/mcp"
        _, answers = await trio.to_thread.run_sync(lambda: client_run(url, whoami_everywhere))
    assert answers == {"gated": "gated"}


_SILENT = """import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("method") == "initialize":
        r = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "s", "version": "1"}}
    elif m.get("method") == "tools/list":
        r = {"tools": [{"name": "hi", "inputSchema": {"type": "object"}}]}
    else:
        continue  # a request it does not know (server/discover): never answered
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}), flush=True)
"""


async def test_stdio_servers_are_reached_in_their_era_and_session_clients_get_a_session(tmp_path: Path) -> None:
    """sidegate asks a stdio server `server/discover` first: an mcp 2.x server answers it and is
    spoken to at 2026-07-28 (a session-era client gets a second process of it in the session era),
    an mcp 1.x server refuses it and gets the handshake, a server that ignores it is not asked
    again after a bounded wait."""
    from tests.support.mcp_upstreams import stdio_command
    from tests.test_mcp_endpoint import modern, rpc

    silent = tmp_path / "silent.py"
    silent.write_text(_SILENT)
    servers = {"new": stdio_command("new"), "old": stdio_command("old", mcp1_python()),
               "silent": [sys.executable, str(silent)]}
    spec = "".join(f"    {n}: {{command: {json.dumps(c)}, start_timeout: 4s}}\n" for n, c in servers.items())
    async with open_gateway(compiled("mcp:\n  servers:\n" + spec)) as gw:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}", timeout=30) as http:
            body, headers = modern("tools/call", {"name": "new__whoami", "arguments": {}})
            now = (await http.post("/mcp", json=body, headers=headers)).json()
            opened = await http.post("/mcp", json=rpc("initialize", {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}))
            session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
            then = {n: (await http.post("/mcp", headers=session, json=rpc(
                "tools/call", {"name": f"{n}__whoami", "arguments": {}}))).json() for n in ("new", "old")}
            listed = (await http.post("/mcp", headers=session, json=rpc("tools/list"))).json()["result"]["tools"]
            health = (await http.get("/health/mcp")).json()["servers"]
            hub = gw.app.mcp.upstreams
            twin = hub["new"]._twin  # type: ignore[attr-defined]
            twin_version = twin.version if twin is not None else None
    assert now["result"]["content"][0]["text"] == "new"
    assert [then[n]["result"]["content"][0]["text"] for n in ("new", "old")] == ["new", "old"]
    assert health["new"]["protocol"] == "2026-07-28" and health["old"]["protocol"] != "2026-07-28"
    assert twin_version == "2025-11-25", "the session-era client's own process"
    assert "silent__hi" in {t["name"] for t in listed} and health["silent"]["protocol"] == "2025-06-18"
    assert hub["silent"]._discover_broke and not hub["old"]._discover_broke  # type: ignore[attr-defined]
