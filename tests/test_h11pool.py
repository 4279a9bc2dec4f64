"""The h11 keep-alive pool behind the transport seam: connection reuse, a stale pooled connection
left for a fresh one, cancellation closing the connection, connect failures."""

from __future__ import annotations

import json
from functools import partial

import pytest
import trio

from sidegate.runtime.errors import UpstreamError
from sidegate.runtime.upstream.h11pool import H11Transport
from sidegate.runtime.upstream.transport import UpstreamRequest
from tests.support.upstream import open_fake_openai


def _chat(url: str, model: str = "ok", stream: bool = False) -> UpstreamRequest:
    body = json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]}).encode()
    return UpstreamRequest("POST", url, (("content-type", "application/json"),), body, 5.0)


async def test_sequential_requests_reuse_one_connection() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake:
            t = H11Transport()
            for _ in range(5):
                r = await t.send(_chat(fake.base_url + "/chat/completions"))
                assert r.status == 200 and json.loads(r.body)["choices"][0]["message"]["content"] == "Hi there!"
            async with t.stream(_chat(fake.base_url + "/chat/completions", stream=True)) as s:
                body = await s.read()
            await t.aclose()
    assert body.endswith(b"data: [DONE]\n\n")
    assert len({seen.client for seen in fake.seen}) == 1


async def test_stale_pooled_connection_is_retried_on_a_fresh_one() -> None:
    answered = 0
    hung_up = trio.Event()

    async def once_then_close(stream: trio.SocketStream) -> None:
        nonlocal answered
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += await stream.receive_some(4096)
        answered += 1
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        await stream.aclose()  # keep-alive was implied, but the server hangs up anyway
        hung_up.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, once_then_close, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            t = H11Transport()
            req = UpstreamRequest("GET", f"http://127.0.0.1:{port}/v1/models", (), b"", 5.0)
            assert (await t.send(req)).status == 200
            await hung_up.wait()
            assert (await t.send(req)).status == 200
            nursery.cancel_scope.cancel()
    assert answered == 2


async def test_cancelled_request_closes_its_connection() -> None:
    with trio.fail_after(10):
        async with open_fake_openai() as fake:
            t = H11Transport()
            with trio.move_on_after(0.2):
                await t.send(_chat(fake.base_url + "/chat/completions", model="hang"))
            for _ in range(50):
                if fake.cancelled:
                    break
                await trio.sleep(0.02)
            assert fake.cancelled == 1
            r = await t.send(_chat(fake.base_url + "/chat/completions"))
            assert r.status == 200
            await t.aclose()


async def test_connect_failure_is_an_upstream_connect_error() -> None:
    with pytest.raises(UpstreamError) as info:
        await H11Transport().send(UpstreamRequest("GET", "http://127.0.0.1:9/v1/models", (), b"", 2.0))
    assert info.value.code == "upstream_connect_error"


async def test_stale_check_sees_a_closed_peer_through_tls_too() -> None:
    import ssl

    from sidegate.runtime.upstream.h11pool import _Conn, _stale

    async def idle(stream: trio.SocketStream) -> None:
        await closing.wait()
        await stream.aclose()
        closed.set()

    closing, closed = trio.Event(), trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, idle, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            plain = await trio.open_tcp_stream("127.0.0.1", port)
            tls = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), ssl.create_default_context(),
                                 server_hostname="localhost")
            assert not _stale(_Conn(plain)) and not _stale(_Conn(tls)), "idle and open: usable"
            closing.set()
            await closed.wait()
            with trio.fail_after(5):  # the FIN is on its way over loopback
                while not (_stale(_Conn(plain)) and _stale(_Conn(tls))):
                    await trio.sleep(0.01)
            await plain.aclose()
            await trio.aclose_forcefully(tls)
            nursery.cancel_scope.cancel()


async def _answer_once(stream: trio.SocketStream, seen: list[int]) -> None:
    seen.append(1)
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(4096)
    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
async def test_ip_literals_and_names_connect(host: str) -> None:
    """An IP literal (v4 or v6) is connected to directly, a name through trio's resolver and
    happy eyeballs: each reaches the server, with Nagle off on our side."""
    bind = "::1" if host == "::1" else "127.0.0.1"
    try:
        listeners = await trio.open_tcp_listeners(0, host=bind)
    except OSError:
        pytest.skip(f"no {bind} on this machine")
    port = listeners[0].socket.getsockname()[1]
    served: list[int] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.serve_listeners, partial(_answer_once, seen=served), listeners))
            t = H11Transport()
            netloc = f"[{host}]" if ":" in host else host
            r = await t.send(UpstreamRequest("GET", f"http://{netloc}:{port}/v1/models", (), b"", 5.0))
            assert r.status == 200 and r.body == b"ok"
            conn = next(c for idle in t._idle.values() for c in idle)
            assert conn.stream.socket.getsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY)
            await t.aclose()
            nursery.cancel_scope.cancel()
    assert served


async def test_a_tls_handshake_that_never_finishes_times_out_and_closes_its_socket() -> None:
    """An upstream that accepts the TCP connection and then says nothing: the connect timeout
    covers the TLS handshake, the error names it, and the half-open socket is closed (the server
    reads its end), not left for the garbage collector."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    closed = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        while await stream.receive_some(4096):  # the ClientHello, then nothing until our close
            pass
        closed.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.serve_listeners, silent, listeners))
            t0 = trio.current_time()
            with pytest.raises(UpstreamError) as info:
                await H11Transport().send(UpstreamRequest("GET", f"https://127.0.0.1:{port}/v1/models", (), b"", 0.3))
            assert info.value.code == "upstream_connect_error" and "timed out connecting" in info.value.message
            assert trio.current_time() - t0 < 5
            await closed.wait()
            nursery.cancel_scope.cancel()
