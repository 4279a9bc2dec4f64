"""The MCP gateway end to end: sidegate in-process with the `mcp` section compiled from YAML,
upstream servers built with the official SDK as subprocesses (2.x MCPServer in stateless and in
session mode, a 1.x FastMCP server, a 2.x stdio server), and the official clients through `/mcp`:
mcp 2.x in auto (2026-07-28, stateless) and legacy (session) modes, and mcp 1.x."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import httpx2
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan import Plan
from tests.support.gateway import open_gateway
from tests.support.mcp_upstreams import Running, start_http, stdio_command
from tests.support.mcp_venv1 import mcp1_python

CLIENT1 = str(Path(__file__).parent / "support" / "mcp_client1.py")
SERVERS = ("alpha", "beta", "files", "old")
TOOLS = ("add", "caps", "drop_table", "fail", "nap", "regional", "whoami")

T = TypeVar("T")


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Running]]:
    servers = {"alpha": start_http("alpha", stateless=True), "beta": start_http("beta"),
               "old": start_http("old", python=mcp1_python())}
    yield servers
    for s in servers.values():
        s.stop()


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_MASTER", "sk-mcp-master")
    monkeypatch.setenv("MCP_RESTRICTED", "sk-mcp-restricted")
    monkeypatch.setenv("MCP_TEAMMATE", "sk-mcp-teammate")
    monkeypatch.setenv("UPSTREAM_TOKEN", "upstream-secret")


def spec(servers: dict[str, str], extra: str = "") -> Plan:
    lines = ["version: 1", "providers: {fake: {type: mock}}", "models: {demo: {targets: [{provider: fake, model: demo}]}}",
             "mcp:", "  servers:"]
    for name, body in servers.items():
        lines.append(f"    {name}: {body}")
    result = compile_text("\n".join(lines) + "\n" + extra, "mcp.yaml")
    assert result.plan is not None, [d.format_text() for d in result.diagnostics]
    return result.plan


AUTH = """
auth:
  master_key: ${MCP_MASTER}
  keys:
    - name: restricted
      key: ${MCP_RESTRICTED}
      mcp: {allow: ["alpha__*", "files__*"], deny: ["*__drop_*"]}
    - name: teammate
      key: ${MCP_TEAMMATE}
      team: readers
teams:
  readers:
    mcp: {allow: ["beta__whoami"]}
"""


def run_client(url: str, body: Callable[[Client], Awaitable[T]], mode: str = "auto", key: str | None = None) -> T:
    """Run an mcp SDK client session (asyncio, in this worker thread) and return what `body` returns."""

    async def main() -> T:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                return await body(client)

    return asyncio.run(main())


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


async def all_tools(client: Client) -> list[Any]:
    tools, cursor = [], None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


async def tour(client: Client) -> dict[str, Any]:
    """List the merged tools, call one per server, a failing one, a prompt and a resource."""
    tools = await all_tools(client)
    calls = {}
    for server in SERVERS:
        result = await client.call_tool(f"{server}__add", {"a": 2, "b": 3})
        calls[server] = (result.is_error, [c.text for c in result.content])
    failed = await client.call_tool("beta__fail", {"reason": "on purpose"})
    prompt = await client.get_prompt("alpha__greet", {"who": "Ada"})
    resource = await client.read_resource("files+data://files/info")
    return {
        "names": sorted(t.name for t in tools),
        "schemas": {t.name: t.input_schema for t in tools},
        "descriptions": {t.name: t.description for t in tools},
        "calls": calls,
        "failed": failed.is_error,
        "prompt": prompt.messages[0].content.text,
        "resource": [(str(c.uri), c.text) for c in resource.contents],
        "version": client.protocol_version,
    }


def four(upstreams: dict[str, Running]) -> dict[str, str]:
    return {
        "alpha": json.dumps({"url": upstreams["alpha"].url}),
        "old": json.dumps({"url": upstreams["old"].url, "timeout": "10s", "max_concurrency": 4}),
        "beta": json.dumps({"url": upstreams["beta"].url, "auth": {"bearer": "${UPSTREAM_TOKEN}"}}),
        "files": json.dumps({"command": stdio_command("files"), "start": "boot"}),
    }


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sdk_client_lists_and_calls_tools_of_http_and_stdio_upstreams(
    upstreams: dict[str, Running], mode: str
) -> None:
    async with open_gateway(spec(four(upstreams))) as gw:
        seen = await in_thread(lambda: run_client(f"http://127.0.0.1:{gw.port}/mcp", tour, mode))
    expected = sorted(f"{s}__{t}" for s in SERVERS for t in TOOLS)
    assert seen["names"] == expected
    assert seen["descriptions"]["beta__add"] == "Add two integers (beta)."
    assert seen["schemas"]["alpha__add"]["required"] == ["a", "b"]
    assert seen["calls"] == {s: (False, ["5"]) for s in SERVERS}
    assert seen["failed"] is True
    assert seen["prompt"] == "Hello Ada from alpha"
    assert seen["resource"] == [("files+data://files/info", "files info")]
    assert seen["version"] == ("2026-07-28" if mode == "auto" else "2025-11-25")


async def test_mcp1_client_lists_and_calls_through_the_gateway(upstreams: dict[str, Running]) -> None:
    python = mcp1_python()
    async with open_gateway(spec(four(upstreams))) as gw:
        run = await trio.run_process([python, CLIENT1, f"http://127.0.0.1:{gw.port}/mcp"], capture_stdout=True,
                                     capture_stderr=True, check=False)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    seen = json.loads(run.stdout)
    assert seen["version"] == "2025-11-25"
    assert seen["names"] == sorted(f"{s}__{t}" for s in SERVERS for t in TOOLS)
    assert seen["calls"] == {s: [False, ["42"]] for s in SERVERS}
    assert seen["failed"] is True


async def test_single_server_endpoint_is_not_namespaced(upstreams: dict[str, Running]) -> None:
    async def body(client: Client) -> tuple[list[str], str]:
        tools = await all_tools(client)
        result = await client.call_tool("whoami", {})
        return sorted(t.name for t in tools), result.content[0].text

    async with open_gateway(spec(four(upstreams))) as gw:
        names, who = await in_thread(lambda: run_client(f"http://127.0.0.1:{gw.port}/mcp/beta", body))
    assert names == sorted(TOOLS)
    assert who == "beta"


async def test_killing_one_upstream_leaves_the_others_working(upstreams: dict[str, Running]) -> None:
    doomed = start_http("doomed")
    plan = spec({"doomed": json.dumps({"url": doomed.url}), "files": json.dumps({"command": stdio_command("files")}),
                 "old": json.dumps({"url": upstreams["old"].url})})
    try:
        async with open_gateway(plan) as gw:
            url = f"http://127.0.0.1:{gw.port}/mcp"
            before = await in_thread(lambda: run_client(url, all_tools))
            assert {t.name.split("__")[0] for t in before} == {"doomed", "files", "old"}
            doomed.stop()

            async def after(client: Client) -> tuple[list[str], list[Any], str, list[str]]:
                page = await client.list_tools()
                names, reported = [t.name for t in page.tools], [(page.meta or {}).get("sidegate.dev/unavailable")]
                while page.next_cursor:
                    page = await client.list_tools(cursor=page.next_cursor)
                    names.extend(t.name for t in page.tools)
                    reported.append((page.meta or {}).get("sidegate.dev/unavailable"))
                with pytest.raises(MCPError) as refused:
                    await client.call_tool("doomed__add", {"a": 1, "b": 1})
                answers = [(await client.call_tool(f"{s}__whoami", {})).content[0].text for s in ("files", "old")]
                return names, reported, refused.value.error.message, answers

            names, reported, refused, answers = await in_thread(lambda: run_client(url, after))
            assert {n.split("__")[0] for n in names} == {"files", "old"}
            assert ["doomed"] in reported
            assert refused == "MCP server 'doomed' is unavailable"
            assert answers == ["files", "old"]
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"http://127.0.0.1:{gw.port}/metrics")).text
                health = (await http.get(f"http://127.0.0.1:{gw.port}/health/mcp")).json()["servers"]
            assert 'sidegate_mcp_tool_calls_total{server="doomed",status="unavailable",tool="add"} 1.0' in metrics
            assert 'sidegate_mcp_tool_calls_total{server="files",status="ok",tool="whoami"} 1.0' in metrics
            assert health["doomed"]["state"] == "down" and "ConnectError" in health["doomed"]["error"]
            assert health["old"] == {"transport": "streamable-http", "state": "up", "protocol": "2025-11-25",
                                     "error": None}

            # the stdio supervisor restarts a server process that dies
            files = gw.app.mcp.upstreams["files"]
            first = files.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            with trio.fail_after(10):
                while files.pid == first or not files.ready.is_set():  # type: ignore[attr-defined]
                    await trio.sleep(0.05)
            again = await in_thread(lambda: run_client(url, lambda c: c.call_tool("files__whoami", {})))
            assert again.content[0].text == "files"
            assert files.restarts == 1  # type: ignore[attr-defined]
        assert files.pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(files.pid, 0)  # killed with the gateway
    finally:
        doomed.stop()


async def test_restricted_keys_see_and_call_only_their_tools(upstreams: dict[str, Running]) -> None:
    plan = spec(four(upstreams), AUTH)

    async def probe(client: Client) -> tuple[list[str], list[str]]:
        names = sorted(t.name for t in await all_tools(client))
        prompts = (await client.list_prompts()).prompts
        assert sorted(p.name for p in prompts) == ["alpha__greet", "files__greet"]
        resources = (await client.list_resources()).resources
        assert sorted(str(r.uri) for r in resources) == ["alpha+data://alpha/info", "files+data://files/info"]
        with pytest.raises(MCPError):
            await client.get_prompt("beta__greet", {"who": "x"})
        with pytest.raises(MCPError):
            await client.read_resource("beta+data://beta/info")
        refusals = []
        for name in ("alpha__drop_table", "beta__add", "files__drop_table"):
            with pytest.raises(MCPError) as refused:
                await client.call_tool(name, {"table": "users", "a": 1, "b": 2})
            refusals.append(refused.value.error.message)
        return names, refusals

    async with open_gateway(plan) as gw:
        url = f"http://127.0.0.1:{gw.port}/mcp"
        names, refusals = await in_thread(lambda: run_client(url, probe, key="sk-mcp-restricted"))
        assert names == sorted(f"{s}__{t}" for s in ("alpha", "files") for t in TOOLS if t != "drop_table")
        assert refusals == [f"Unknown tool: {n}" for n in ("alpha__drop_table", "beta__add", "files__drop_table")]
        team = await in_thread(lambda: run_client(url, all_tools, key="sk-mcp-teammate"))
        assert [t.name for t in team] == ["beta__whoami"]
        every = await in_thread(lambda: run_client(url, all_tools, "legacy", key="sk-mcp-master"))
        assert len(every) == 4 * len(TOOLS)
        # a virtual key made through the admin API carries its MCP permission in metadata
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as http:
            made = await http.post("/key/generate", json={"metadata": {"mcp": {"allow": ["beta__w*"]}}},
                                   headers={"Authorization": "Bearer sk-mcp-master"})
            virtual = made.json()["key"]
            anonymous = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == -32001
        names = await in_thread(lambda: run_client(url, all_tools, key=virtual))
        assert [t.name for t in names] == ["beta__whoami"]
