"""Hostile clients and connections (issue 15, case 6, the parts built here).

Without `auth`: a cross-site `text/plain` POST gets 415 and a foreign `Host` (DNS rebinding) 403,
in the client's envelope, and nothing is spent; listed hosts and `*.suffix` are accepted; with
`auth` neither check applies. A body dribbled slower than `server.body_timeout` gets 408; a head
over `server.max_header_size` gets 431; JSON nested past `server.max_json_depth` gets 400 (model
calls, MCP and the admin API); the admin API answers a `page` of 10^23 and a store outage in the
envelope, never a bare 500."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import peewee
import pytest
import trio

from sidegate.runtime.plan import Auth
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import env, group, mock_provider, plan, target

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def _plan(**kw: Any) -> Any:
    return plan([mock_provider("fake")], [group("demo", target("fake", "demo"))], **kw)


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


async def test_without_auth_only_local_hosts_and_json_bodies() -> None:
    with trio.fail_after(30):
        async with open_gateway(_plan(allowed_hosts=("sidegate.checkout.svc", "*.internal"))) as gw:
            root = f"http://127.0.0.1:{gw.port}"
            async with httpx.AsyncClient(base_url=root) as http:
                form = await http.post("/v1/chat/completions", content=json.dumps(CHAT),
                                       headers={"content-type": "text/plain"})
                upload = await http.post("/v1/audio/transcriptions", data={"model": "demo"},
                                         files={"file": ("a.wav", b"RIFF", "audio/wav")})
                rebound = await http.post("/v1/chat/completions", json=CHAT, headers={"host": "evil.example:4000"})
                anthropic_shape = await http.post("/v1/messages", headers={"host": "evil.example"},
                                                  json={"model": "demo", "max_tokens": 5, "messages": []})
                mcp = await http.post("/mcp", content=b"{}", headers={"content-type": "text/plain"})
                ok = [await http.post("/v1/chat/completions", json=CHAT, headers={"host": host})
                      for host in ("127.0.0.1:4000", "localhost", "[::1]:4000", "sidegate.checkout.svc",
                                   "api.internal:80", "SIDEGATE.CHECKOUT.SVC")]
                vendor_json = await http.post("/v1/chat/completions", content=json.dumps(CHAT),
                                              headers={"content-type": "application/vnd.api+json; charset=utf-8"})
                get_models = await http.get("/v1/models", headers={"host": "evil.example"})
                metrics = (await http.get("/metrics")).text
    assert form.status_code == 415 and form.json()["error"]["code"] == "unsupported_media_type"
    assert "application/json" in form.json()["error"]["message"]
    assert upload.status_code == 415 and "declare `auth`" in upload.json()["error"]["message"]
    assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "host_not_allowed"
    assert anthropic_shape.status_code == 403 and anthropic_shape.json()["type"] == "error"
    assert mcp.status_code == 415
    assert [r.status_code for r in ok] == [200] * 6 and vendor_json.status_code == 200
    assert get_models.status_code == 200, "GETs (probes, the model list) are not refused"
    assert 'status="200"} 7.0' in metrics and 'status="403"' not in metrics, "refused calls reached nothing"


@pytest.mark.parametrize("with_auth", [False, True])
async def test_browser_requests_from_foreign_origins_are_refused_on_every_route(
        with_auth: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host and Origin both its
    own; a cross-site page sends a foreign Origin. Either is refused (403), keys or not, on the model
    routes, MCP and GETs alike; local origins and allowed hosts pass, and clients that send no
    Origin (SDKs, CLIs) are not affected."""
    monkeypatch.setenv("MASTER", "sk-master-key-for-tests")
    auth = Auth(master_key=env("MASTER"), keys=(), refresh=5.0, jwt=None) if with_auth else None
    key = {"authorization": "Bearer sk-master-key-for-tests"} if with_auth else {}
    rebinding = {"host": "evil.example:4000", "origin": "http://evil.example:4000", **key}
    cross_site = {"origin": "https://evil.example", **key}
    with trio.fail_after(30):
        async with open_gateway(_plan(auth=auth, allowed_hosts=("app.internal",))) as gw, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{gw.port}") as h:
            refused = [await h.post("/v1/chat/completions", json=CHAT, headers=rebinding),
                       await h.post("/v1/chat/completions", json=CHAT, headers=cross_site),
                       await h.post("/v1/chat/completions", json=CHAT, headers={"origin": "null", **key}),
                       await h.get("/v1/models", headers=rebinding),
                       await h.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=cross_site)]
            claude = await h.post("/v1/messages", json={"model": "demo", "max_tokens": 5, "messages": []},
                                  headers=rebinding)
            served = [await h.post("/v1/chat/completions", json=CHAT, headers={"origin": origin, **key})
                      for origin in ("http://localhost:3000", "http://127.0.0.1:8080", "https://app.internal")]
            plain = await h.post("/v1/chat/completions", json=CHAT, headers=key)
    assert [r.status_code for r in refused] == [403] * 5
    assert {r.json()["error"]["code"] for r in refused} == {"origin_not_allowed"}
    assert claude.status_code == 403 and claude.json()["type"] == "error"
    assert [r.status_code for r in served] == [200] * 3 and plain.status_code == 200


async def test_with_auth_any_host_and_content_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER", "sk-master-key-for-tests")
    auth = Auth(master_key=env("MASTER"), keys=(), refresh=5.0, jwt=None)
    with trio.fail_after(30):
        async with open_gateway(_plan(auth=auth)) as gw, httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as h:
            r = await h.post("/v1/chat/completions", content=json.dumps(CHAT), headers={
                "host": "sidegate.example.com", "content-type": "text/plain",
                "authorization": "Bearer sk-master-key-for-tests"})
            anonymous = await h.post("/v1/chat/completions", json=CHAT, headers={"host": "evil.example"})
            master = {"authorization": "Bearer sk-master-key-for-tests"}
            huge_page = await h.get("/spend/logs", params={"page": str(10**23)}, headers=master)
            deep_admin = await h.post("/key/generate", headers=master,
                                      content=json.dumps({"metadata": _nested(300)}))
            admin = gw.app.access.admin
            assert admin is not None

            async def outage(fn: Any) -> Any:
                raise peewee.OperationalError("could not connect to server")

            monkeypatch.setattr(admin.store, "run", outage)
            down = await h.get("/spend/logs", headers=master)
    assert r.status_code == 200 and anonymous.status_code == 401
    assert huge_page.status_code == 400 and huge_page.json()["error"]["param"] == "page"
    assert deep_admin.status_code == 400 and deep_admin.json()["error"]["code"] == "json_too_deep"
    assert down.status_code == 503 and down.json()["error"]["type"] == "service_unavailable"
    assert "could not connect" in down.json()["error"]["message"] or "OperationalError" in down.json()["error"]["message"]
    assert down.headers["retry-after"] == "5"


@pytest.mark.parametrize("depth", [100, 255, 300, 1024])
async def test_deep_json_is_a_400_in_the_envelope(depth: int) -> None:
    deep = "[" * depth + "1" + "]" * depth
    body = f'{{"model": "demo", "messages": [{{"role": "user", "content": "hi"}}], "metadata": {deep}}}'
    with trio.fail_after(30):
        async with open_gateway(_plan()) as gw:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as http:
                refused = await http.post("/v1/chat/completions", content=body,
                                          headers={"content-type": "application/json"})
                claude = await http.post("/v1/messages", headers={"content-type": "application/json"},
                                         content=body.replace('"metadata"', '"max_tokens": 5, "extra"'))
                mcp = await http.post("/mcp", headers={"content-type": "application/json"},
                                      content=f'{{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {deep}}}')
            client = openai.AsyncOpenAI(base_url=base_url(gw), api_key="unused", max_retries=0)
            fine = await client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}],
                                                        extra_body={"metadata": _nested(50)})
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error"
    assert refused.json()["error"]["code"] in ("json_too_deep", None), refused.json()  # orjson stops at 1024
    assert claude.status_code == 400 and claude.json()["type"] == "error"
    assert mcp.status_code == 400 and mcp.json()["error"]["code"] in (-32600, -32700), mcp.json()
    assert fine.choices[0].message.content


async def _raw(port: int, head: bytes, dribble: bytes = b"", every: float = 0.0) -> bytes:
    """Send `head`, then `dribble` one byte each `every` seconds until the server answers; the answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(head)
    answer = b""
    async with trio.open_nursery() as nursery:
        async def slowly() -> None:
            for byte in dribble:
                await trio.sleep(every)
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    return

        nursery.start_soon(slowly)
        while b"\r\n\r\n" not in answer:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            answer += chunk
        nursery.cancel_scope.cancel()
    await stream.aclose()
    return answer


async def test_dribbled_body_gets_408_and_oversized_head_431() -> None:
    body = json.dumps(CHAT).encode()
    with trio.fail_after(30):
        async with open_gateway(_plan(body_timeout=1.0)) as gw:
            t0 = trio.current_time()
            slow = await _raw(gw.port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                              b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body),
                              body, every=0.25)
            waited = trio.current_time() - t0
            big = await _raw(gw.port, b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: "
                             + b"a" * 20_000 + b"\r\n\r\n")
            ok = await _raw(gw.port, b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
    assert slow.startswith(b"HTTP/1.1 408"), slow[:200]
    assert 1.0 <= waited < 10.0, "cut off at body_timeout, long before the body would have arrived"
    assert big.startswith(b"HTTP/1.1 431"), big[:100]
    assert ok.startswith(b"HTTP/1.1 200")
