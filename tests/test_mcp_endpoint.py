"""The `/mcp` endpoint's wire rules with a plain HTTP client: sessions, notifications, eras and
their headers, malformed requests, logging of bodies, `/health/mcp`."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan import Plan
from tests.support.gateway import open_gateway
from tests.support.mcp_upstreams import start_http, stdio_command

MODERN = "2026-07-28"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
ENVELOPE = {META_VERSION: MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


def plan(bodies: bool = False) -> Plan:
    text = ("version: 1\nproviders: {fake: {type: mock}}\nmodels: {demo: {targets: [{provider: fake, model: demo}]}}\n"
            f"observability: {{logs: {{bodies: {str(bodies).lower()}}}}}\n"
            f"mcp:\n  servers:\n    files: {json.dumps({'command': stdio_command('files')})}\n")
    result = compile_text(text, "mcp.yaml")
    assert result.plan is not None, [d.format_text() for d in result.diagnostics]
    return result.plan


def rpc(method: str, params: dict[str, Any] | None = None, rid: int | None = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params or {}}
    if rid is not None:
        message["id"] = rid
    return message


def modern(method: str, params: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request and its standard headers (Mcp-Name when the body names a target)."""
    headers = {"mcp-protocol-version": MODERN, "mcp-method": method}
    named = (params or {}).get("uri" if method == "resources/read" else "name")
    if named is not None and method in ("tools/call", "prompts/get", "resources/read"):
        headers["mcp-name"] = named
    return rpc(method, {**(params or {}), "_meta": ENVELOPE}), headers


async def test_session_era_rules() -> None:
    async with open_gateway(plan()) as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as http:
        assert (await http.get("/mcp")).status_code == 405
        missing = await http.post("/mcp", json=rpc("tools/list"))
        assert missing.status_code == 400 and missing.json()["error"]["code"] == -32600
        unknown = await http.post("/mcp", json=rpc("tools/list"), headers={"mcp-session-id": "nope"})
        assert unknown.status_code == 404
        init = await http.post("/mcp", json=rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                                               "clientInfo": {"name": "t", "version": "1"}}))
        session = init.headers["mcp-session-id"]
        assert init.json()["result"]["protocolVersion"] == "2025-06-18"
        assert "resultType" not in init.json()["result"]
        assert "<server>__<tool>" in init.json()["result"]["instructions"]
        one = await http.post("/mcp/files", json=rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                                                    "clientInfo": {"name": "t", "version": "1"}}))
        assert "__" not in one.json()["result"]["instructions"], "one server's tools keep their own names"
        headers = {"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
        note = await http.post("/mcp", json=rpc("notifications/initialized", rid=None), headers=headers)
        assert note.status_code == 202 and note.content == b""
        listed = await http.post("/mcp", json=rpc("tools/list"), headers=headers)
        assert listed.headers["content-type"] == "application/json"
        assert "files__add" in [t["name"] for t in listed.json()["result"]["tools"]]
        assert "cacheScope" not in listed.json()["result"]
        nomethod = await http.post("/mcp", json=rpc("sampling/createMessage"), headers=headers)
        assert nomethod.status_code == 200 and nomethod.json()["error"]["code"] == -32601
        badcursor = await http.post("/mcp", json=rpc("tools/list", {"cursor": "x"}), headers=headers)
        assert badcursor.json()["error"] == {"code": -32602, "message": "invalid cursor"}
        assert (await http.delete("/mcp", headers=headers)).status_code == 200
        assert (await http.post("/mcp", json=rpc("tools/list"), headers=headers)).status_code == 404
        nosuch = await http.post("/mcp/nosuch", json=rpc("ping"))
        assert nosuch.status_code == 404


async def test_stateless_era_rules() -> None:
    async with open_gateway(plan()) as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as http:
        body, headers = modern("server/discover")
        found = (await http.post("/mcp", json=body, headers=headers)).json()["result"]
        assert found["supportedVersions"] == [MODERN]
        assert found["resultType"] == "complete" and found["cacheScope"] == "private"
        body, headers = modern("tools/call", {"name": "files__add", "arguments": {"a": 1, "b": 2}})
        called = await http.post("/mcp", json=body, headers={**headers, "mcp-name": "files__add"})
        assert called.json()["result"]["content"][0]["text"] == "3"
        assert called.json()["result"]["resultType"] == "complete"
        mismatch = await http.post("/mcp", json=body, headers={**headers, "mcp-method": "tools/list"})
        assert mismatch.status_code == 400 and mismatch.json()["error"]["code"] == -32020
        wrong_name = await http.post("/mcp", json=body, headers={**headers, "mcp-name": "files__fail"})
        assert wrong_name.status_code == 400 and wrong_name.json()["error"]["code"] == -32020
        encoded = await http.post("/mcp", json=body, headers={**headers, "mcp-name": "=?base64?ZmlsZXNfX2FkZA==?="})
        assert encoded.json()["result"]["content"][0]["text"] == "3"
        future = await http.post("/mcp", json=body, headers={**headers, "mcp-protocol-version": "2099-01-01"})
        assert future.status_code == 400
        assert future.json()["error"]["code"] == -32022
        assert future.json()["error"]["data"]["supported"] == [MODERN]
        # the standard headers are required, and checked before the versions they mirror
        no_method = await http.post("/mcp", json=body, headers={"mcp-protocol-version": MODERN, "mcp-name": "files__add"})
        no_name = await http.post("/mcp", json=body, headers={"mcp-protocol-version": MODERN, "mcp-method": "tools/call"})
        assert [r.status_code for r in (no_method, no_name)] == [400, 400]
        assert [r.json()["error"]["code"] for r in (no_method, no_name)] == [-32020, -32020]
        assert "Mcp-Method" in no_method.json()["error"]["message"] and "Mcp-Name" in no_name.json()["error"]["message"]
        older = {**body, "params": {**body["params"], "_meta": {**ENVELOPE, META_VERSION: "2099-01-01"}}}
        disagree = await http.post("/mcp", json=older, headers=headers)
        assert disagree.status_code == 400 and disagree.json()["error"]["code"] == -32020, "a mismatch, not -32022"
        for meta in ({}, {META_VERSION: MODERN}):  # no version; no client capabilities
            bare = {**body, "params": {"name": "files__add", "arguments": {}, "_meta": meta}}
            invalid = await http.post("/mcp", json=bare, headers=headers)
            assert invalid.status_code == 400 and invalid.json()["error"]["code"] == -32602, invalid.text
        body, ping_headers = modern("ping")
        gone = await http.post("/mcp", json=body, headers=ping_headers)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == -32601, "ping was removed in 2026-07-28"
        body, headers = modern("tools/call", {"name": "files__add", "arguments": {"a": 1, "b": 2}})
        body, headers = modern("tools/call", {"name": "nosuch__add"})
        unknown = await http.post("/mcp", json=body, headers=headers)
        assert unknown.status_code == 400 and unknown.json()["error"]["message"] == "Unknown tool: nosuch__add"
        body, headers = modern("tools/call", {"name": "files__nope"})
        upstream_says = await http.post("/mcp", json=body, headers=headers)  # the server's own answer
        assert upstream_says.json()["result"]["isError"] is True
        metrics = (await http.get("/metrics")).text
        assert 'sidegate_mcp_tool_calls_total{server="files",status="tool_error",tool="other"} 1.0' in metrics
        assert 'sidegate_mcp_tool_calls_total{server="-",status="denied",tool="-"} 1.0' in metrics
        body, headers = modern("tools/frobnicate")
        assert (await http.post("/mcp", json=body, headers=headers)).status_code == 404
        json_type = {"content-type": "application/json"}  # the spec has no auth: only JSON bodies are taken
        assert (await http.post("/mcp", content=b"{not json", headers=json_type)).json()["error"]["code"] == -32700
        too_big = await http.post("/mcp", content=b"x" * (9 * 1024 * 1024), headers=json_type)
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == -32600
        batch = await http.post("/mcp", json=[rpc("ping")])
        assert batch.status_code == 400 and "batches" in batch.json()["error"]["message"]
        health = (await http.get("/health/mcp")).json()["servers"]["files"]
        # (the stdio server answered `server/discover`: sidegate speaks 2026-07-28 on its channel)
        assert health == {"transport": "stdio", "state": "up", "protocol": "2026-07-28", "error": None}


@pytest.mark.parametrize("bodies", [False, True])
async def test_tool_calls_are_logged_with_arguments_only_when_asked(
    bodies: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    async with open_gateway(plan(bodies)) as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as http:
        body, headers = modern("tools/call", {"name": "files__add", "arguments": {"a": 40, "b": 2}})
        assert (await http.post("/mcp", json=body, headers=headers)).status_code == 200
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if '"mcp_call"' in line]
    assert len(lines) == 1
    line = lines[0]
    assert (line["server"], line["tool"], line["status"]) == ("files", "add", "ok")
    assert ("arguments" in line) is bodies
    if bodies:
        assert line["arguments"] == {"a": 40, "b": 2}
        assert line["result"]["content"][0]["text"] == "42"


async def test_reload_keeps_unchanged_servers_and_replaces_changed_ones() -> None:
    first = plan()
    current = [first]
    async with open_gateway(first, load_plan=lambda: current[0]) as gw:
        files = gw.app.mcp.upstreams["files"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as http:
            body, headers = modern("tools/call", {"name": "files__whoami"})
            assert (await http.post("/mcp", json=body, headers=headers)).json()["result"]["content"][0]["text"] == "files"
            old_pid = files.pid  # type: ignore[attr-defined]
            current[0] = plan(bodies=True)  # a different plan, the same server
            await gw.reload().wait()
            assert gw.app.mcp.upstreams["files"] is files
            text = ("version: 1\nproviders: {fake: {type: mock}}\n"
                    "models: {demo: {targets: [{provider: fake, model: demo}]}}\n"
                    f"mcp:\n  servers:\n    files: {json.dumps({'command': stdio_command('files'), 'env': {'X': '1'}})}\n")
            changed = compile_text(text, "mcp.yaml").plan
            assert changed is not None
            current[0] = changed
            await gw.reload().wait()
            replaced = gw.app.mcp.upstreams["files"]
            assert replaced is not files
            answer = await http.post("/mcp", json=body, headers=headers)
            assert answer.json()["result"]["content"][0]["text"] == "files"
            assert replaced.pid != old_pid  # type: ignore[attr-defined]
            with pytest.raises(ProcessLookupError):
                os.kill(old_pid, 0)  # the retired server's process was killed


async def test_an_upstreams_missing_capability_error_is_relayed_with_400_at_2026_07_28(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sidegate.runtime.mcp.protocol import MISSING_CLIENT_CAPABILITY, McpError

    async def needs_elicitation(method: str, params: dict[str, Any], exchange: Any = None) -> dict[str, Any]:
        raise McpError(MISSING_CLIENT_CAPABILITY, "this tool needs the elicitation capability")

    async with open_gateway(plan()) as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as http:
        body, headers = modern("tools/list")
        assert (await http.post("/mcp", json=body, headers=headers)).status_code == 200  # the upstream is up
        monkeypatch.setattr(gw.app.mcp.upstreams["files"], "request", needs_elicitation)
        body, headers = modern("tools/call", {"name": "files__add", "arguments": {"a": 1, "b": 2}})
        refused = await http.post("/mcp", json=body, headers=headers)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == -32021, refused.text


async def test_completions_reach_the_server_that_owns_the_prompt() -> None:
    async with open_gateway(plan()) as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as http:
        body, headers = modern("server/discover")
        caps = (await http.post("/mcp", json=body, headers=headers)).json()["result"]["capabilities"]
        ask = {"ref": {"type": "ref/prompt", "name": "files__greet"}, "argument": {"name": "who", "value": "a"}}
        body, headers = modern("completion/complete", ask)
        done = await http.post("/mcp", json=body, headers=headers)
        body, headers = modern("completion/complete", {**ask, "ref": {"type": "ref/prompt", "name": "nosuch__greet"}})
        unknown = await http.post("/mcp", json=body, headers=headers)
        body, headers = modern("completion/complete", {**ask, "ref": {"type": "ref/tool"}})
        bad_ref = await http.post("/mcp", json=body, headers=headers)
    assert "completions" in caps
    assert done.status_code == 200 and done.json()["result"]["completion"]["values"] == ["ada", "alan"], done.text
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == -32602
    assert bad_ref.status_code == 400 and bad_ref.json()["error"]["code"] == -32602


async def test_a_2026_client_s_capabilities_reach_a_2026_upstream() -> None:
    """The upstream gates tools and requests on what the client declared: sidegate forwards the
    client's own capabilities (it sent `{}` before, so capability-gated tools were withheld)."""
    alpha = start_http("alpha", stateless=True)
    try:
        text = ("version: 1\nproviders: {fake: {type: mock}}\nmodels: {demo: {targets: [{provider: fake, model: demo}]}}\n"
                f"mcp:\n  servers:\n    alpha: {{url: \"{alpha.url}\"}}\n")
        result = compile_text(text, "mcp.yaml")
        assert result.plan is not None, [d.format_text() for d in result.diagnostics]
        async with open_gateway(result.plan) as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as http:
            body, headers = modern("tools/call", {"name": "alpha__caps", "arguments": {}})
            body["params"]["_meta"] = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities":
                                       {"elicitation": {}, "roots": {"listChanged": True}}}
            answer = await http.post("/mcp", json=body, headers=headers)
    finally:
        alpha.stop()
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["content"][0]["text"] == "elicitation,roots"


async def test_marked_tool_arguments_are_mirrored_in_mcp_param_headers_upstream() -> None:
    """A 2026-07-28 server refuses a call to a tool with `x-mcp-header` arguments unless the
    `Mcp-Param-*` headers mirror them: called cold (no list seen), sidegate learns the markings from
    the server's refusal and retries once; after a list it sends them on the first try. Towards its
    own clients sidegate is that server: once it knows the markings, a call whose headers are
    missing, badly encoded or disagree with the body is refused (-32020, HTTP 400) before any
    upstream sees it."""
    alpha = start_http("alpha", stateless=True)
    try:
        text = ("version: 1\nproviders: {fake: {type: mock}}\nmodels: {demo: {targets: [{provider: fake, model: demo}]}}\n"
                f"mcp:\n  servers:\n    alpha: {{url: \"{alpha.url}\"}}\n")
        result = compile_text(text, "mcp.yaml")
        assert result.plan is not None
        async with open_gateway(result.plan) as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as http:
            answers = []
            for region, sent in (("eu-west", "eu-west"), ("zürich", "=?base64?esO8cmljaA==?=")):
                body, headers = modern("tools/call", {"name": "alpha__regional", "arguments": {"region": region}})
                answers.append(await http.post("/mcp", json=body, headers={**headers, "mcp-param-region": sent}))
            bindings = gw.app.mcp.upstreams["alpha"].param_bindings
            refused = {}
            for why, sent in (("missing", None), ("mismatch", "us-east"), ("bad base64", "=?base64?ZXUtd2VzdA?="),
                              ("raw non-ascii", "zürich")):
                region = "zürich" if why == "raw non-ascii" else "eu-west"  # right value, not encoded
                body, headers = modern("tools/call", {"name": "alpha__regional", "arguments": {"region": region}})
                extra = {} if sent is None else {"mcp-param-region": sent.encode()}
                refused[why] = await http.post("/mcp", json=body, headers={**headers, **extra})
    finally:
        alpha.stop()
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    assert [a.json()["result"]["content"][0]["text"] for a in answers] == ["served in eu-west", "served in zürich"]
    assert bindings == {"regional": (("Region", ("region",)),)}
    for why, answer in refused.items():
        assert answer.status_code == 400 and answer.json()["error"]["code"] == -32020, (why, answer.text)
    assert "required" in refused["missing"].json()["error"]["message"]


def test_param_header_markings_and_values() -> None:
    from sidegate.runtime.mcp.param_headers import bindings_of, param_headers

    schema = {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "opts": {"type": "object", "properties": {"dry": {"type": "boolean", "x-mcp-header": "Dry-Run"},
                                                  "n": {"type": "integer", "x-mcp-header": "Count"}}},
        "bad": {"type": "string", "x-mcp-header": "not a token"},
        "items": {"type": "array", "items": {"properties": {"x": {"x-mcp-header": "Unreachable"}}}}}}
    marked = bindings_of(schema)
    assert marked == (("Region", ("region",)), ("Dry-Run", ("opts", "dry")), ("Count", ("opts", "n")))
    assert param_headers(marked, {"region": " padded ", "opts": {"dry": True, "n": 3}}) == {
        "Mcp-Param-Region": "=?base64?IHBhZGRlZCA=?=", "Mcp-Param-Dry-Run": "true", "Mcp-Param-Count": "3"}
    assert param_headers(marked, {"region": None, "opts": "not an object"}) == {}, "absent or null: no header"
