"""Realtime sessions at the protocol's edges, with a plain WebSocket client (websockets) and raw
TCP: a malformed handshake, WebSocket routes that do not exist, fragmented and binary messages and
pings relayed, an upstream that refuses sidegate's own key, failover past an unreachable
deployment, a group without a realtime deployment, a missing model."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import pytest
import trio
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from sidegate.runtime.plan import Auth, Family, Price, StaticKey
from sidegate.runtime.upstream import realtime_ws
from sidegate.runtime.upstream.realtime_ws import realtime_url
from tests.support.fake_realtime import FakeRealtime, open_fake_realtime
from tests.support.gateway import open_gateway
from tests.support.plans import env, group, mock_provider, openai_provider, plan, target

KEY = "sk-edge-client"
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_UPSTREAM_KEY", "sk-upstream-realtime")
    monkeypatch.setenv("EDGE_WRONG_UPSTREAM_KEY", "sk-upstream-not-this-one")
    monkeypatch.setenv("EDGE_CLIENT_KEY", KEY)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plan(fake: FakeRealtime) -> Any:
    dead = openai_provider("dead", f"http://127.0.0.1:{_closed_port()}/v1", "EDGE_UPSTREAM_KEY")
    up = openai_provider("up", fake.base_url, "EDGE_UPSTREAM_KEY")
    wrong = openai_provider("wrong", fake.base_url, "EDGE_WRONG_UPSTREAM_KEY")
    price = Price(input=1e-6, output=2e-6, cached_input=None)
    keys = (StaticKey(name="edge", key=env("EDGE_CLIENT_KEY"), team=None, user=None, models=(), budget=None,
                      limits=None),)
    return plan([dead, up, wrong, mock_provider("fake")], [
        group("voice", target("dead", "gpt-realtime", price=price), target("up", "gpt-realtime", price=price)),
        group("misconfigured", target("wrong", "gpt-realtime")),
        group("chat", target("fake", "demo")),
    ], auth=Auth(master_key=None, keys=keys, refresh=60.0, jwt=None))


async def _in_thread(fn: Callable[[], T]) -> T:
    with trio.fail_after(15):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


def _open(port: int, path: str = "/v1/realtime?model=voice", key: str = KEY) -> ClientConnection:
    return ws_connect(f"ws://127.0.0.1:{port}{path}", additional_headers={"Authorization": f"Bearer {key}"},
                      open_timeout=5)


def _refused(port: int, path: str, key: str = KEY) -> InvalidStatus:
    try:
        _open(port, path, key).close()
    except InvalidStatus as exc:
        return exc
    raise AssertionError(f"{path} opened")


async def test_refusals_before_the_upgrade() -> None:
    async with open_fake_realtime(FakeRealtime()) as fake:
        async with open_gateway(_plan(fake)) as gw:
            missing = await _in_thread(lambda: _refused(gw.port, "/v1/realtime"))
            route = await _in_thread(lambda: _refused(gw.port, "/v1/chat/completions"))
            mock = await _in_thread(lambda: _refused(gw.port, "/v1/realtime?model=chat"))
            upstream = await _in_thread(lambda: _refused(gw.port, "/v1/realtime?model=misconfigured"))

            def raw() -> bytes:
                with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
                    s.sendall(b"GET /v1/realtime?model=voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")  # no key, no version
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                    return data

            handshake = await _in_thread(raw)
    assert missing.response.status_code == 400 and b"'model' is required" in missing.response.body
    assert route.response.status_code == 404
    assert mock.response.status_code == 400 and b'"realtime_unsupported"' in mock.response.body
    assert upstream.response.status_code == 502 and b'"upstream_auth_failed"' in upstream.response.body
    assert b"sk-upstream" not in upstream.response.body
    assert handshake.startswith(b"HTTP/1.1 400 ") and b'"bad_websocket_handshake"' in handshake
    assert fake.sessions == []  # the refused handshake at the upstream opened nothing


async def test_messages_fragments_binary_and_pings_are_relayed_past_a_dead_deployment() -> None:
    async with open_fake_realtime(FakeRealtime()) as fake:
        async with open_gateway(_plan(fake)) as gw:
            def session() -> dict[str, Any]:
                with _open(gw.port) as ws:
                    assert ws.response is not None
                    out: dict[str, Any] = {"deployment": ws.response.headers["x-sidegate-deployment"],
                                           "request_id": ws.response.headers["x-request-id"]}
                    out["created"] = orjson.loads(ws.recv(timeout=5))
                    update = orjson.dumps({"type": "session.update", "session": {"instructions": "fragmented"}})
                    ws.send([update[:10].decode(), update[10:30].decode(), update[30:].decode()])  # three frames
                    out["updated"] = orjson.loads(ws.recv(timeout=5))
                    ws.send(orjson.dumps({"type": "input_audio_buffer.append", "audio": "AAAA"}))  # a binary message
                    ws.send(orjson.dumps({"type": "no.such.event"}).decode())
                    out["error"] = orjson.loads(ws.recv(timeout=5))
                    pong = ws.ping(b"are you there")
                    out["pong"] = pong.wait(timeout=5)
                return out

            out = await _in_thread(session)
            with trio.fail_after(5):
                await fake.sessions[0].closed.wait()
            dead, up = gw.app.runtime.deployments["voice"]
    assert out["deployment"] == "up/gpt-realtime"  # the first deployment's port is closed: passed over
    assert dead.state.breaker.failures_total == 1 and dead.state.breaker.last_error_kind is not None
    assert dead.state.breaker.last_error_kind.value == "connect" and up.state.breaker.failures_total == 0
    assert out["created"]["type"] == "session.created"
    assert out["updated"]["session"]["instructions"] == "fragmented"
    assert out["error"]["type"] == "error" and out["error"]["error"]["code"] == "invalid_value"
    assert out["pong"] is True
    seen = fake.sessions[0]
    assert [e["type"] for e in seen.events] == ["session.update", "input_audio_buffer.append", "no.such.event"]
    assert seen.audio_bytes == 3
    assert seen.close_code == 1000


def _tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and a client context
    that trusts only it."""
    import datetime
    import ipaddress
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake realtime")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.NamedTemporaryFile(suffix=".pem") as f:
        f.write(pem + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        f.flush()
        server.load_cert_chain(f.name)
    client = ssl.create_default_context(cadata=pem.decode())
    return server, client


async def test_wss_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    server, client = _tls_pair()
    # sidegate's client context is the system's trust store; this test's upstream is trusted by its own
    monkeypatch.setattr(realtime_ws, "_TLS", [client])
    fake = FakeRealtime()
    fake.tls = server
    async with open_fake_realtime(fake):
        assert realtime_url(_plan(fake).provider("up"), "gpt-realtime").startswith("wss://127.0.0.1:")
        async with open_gateway(_plan(fake)) as gw:
            def session() -> str:
                with _open(gw.port) as ws:
                    return str(orjson.loads(ws.recv(timeout=5))["type"])

            created = await _in_thread(session)
            monkeypatch.setattr(realtime_ws, "_TLS", [ssl.create_default_context()])  # does not trust it
            untrusted = await _in_thread(lambda: _refused(gw.port, "/v1/realtime?model=voice"))
    assert created == "session.created"
    assert fake.sessions[0].headers["authorization"] == "Bearer sk-upstream-realtime"
    assert untrusted.response.status_code == 503 and b"CERTIFICATE_VERIFY_FAILED" in untrusted.response.body


def test_realtime_urls() -> None:
    openai_up = openai_provider("o", "https://api.openai.com/v1", None)
    azure = openai_provider("a", "https://res.openai.azure.com", None, family=Family.AZURE,
                            api_version="2024-10-01-preview")
    assert realtime_url(openai_up, "gpt-realtime") == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert realtime_url(azure, "my deploy") == \
        "wss://res.openai.azure.com/openai/realtime?api-version=2024-10-01-preview&deployment=my%20deploy"
