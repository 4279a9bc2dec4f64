"""The Realtime API's upstream side: the WebSocket URL of an OpenAI or Azure deployment, and the
client handshake (h11 for the upgrade, wsproto after it, over trio's TCP or TLS stream).

OpenAI: `wss://<base_url>/realtime?model=<model>` with the provider's key
(`Authorization: Bearer`). Azure: `wss://<resource>/openai/realtime?api-version=<v>&deployment=<model>`
with `api-key`. An upstream that refuses the upgrade raises a `GatewayError` with its status (a 401
from the upstream is sidegate's misconfiguration: 502), so the client's own handshake is answered
with an error before it is accepted.
"""

from __future__ import annotations

import base64
import os
import ssl
from urllib.parse import quote, urlsplit

import h11
import orjson
import trio
from wsproto.utilities import generate_accept_token

from sidegate.runtime.errors import GatewayError, Overloaded, RateLimited, UpstreamError, UpstreamTimeout, describe
from sidegate.runtime.plan import Family, Provider
from sidegate.runtime.websocket import BROKEN, Socket

__all__ = ["REALTIME_FAMILIES", "connect_realtime", "realtime_url"]

REALTIME_FAMILIES = frozenset({Family.OPENAI, Family.AZURE})
"""Provider families whose deployments serve the Realtime API."""
_MAX_REFUSAL = 65536
_TLS: list[ssl.SSLContext] = []


def realtime_url(provider: Provider, model: str) -> str:
    """The `ws://` or `wss://` URL of the realtime endpoint for upstream model (Azure: deployment) `model`."""
    base = provider.base_url.rstrip("/")
    if provider.family is Family.AZURE:
        url = f"{base}/openai/realtime?api-version={quote(provider.api_version or '', safe='')}" \
              f"&deployment={quote(model, safe='')}"
    else:
        url = f"{base}/realtime?model={quote(model, safe='')}"
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):]
    if url.startswith("http://"):
        return "ws://" + url[len("http://"):]
    return url


async def _tls() -> ssl.SSLContext:
    if not _TLS:
        _TLS.append(await trio.to_thread.run_sync(ssl.create_default_context))  # reads the CA bundle: off the loop
    return _TLS[0]


async def _open(url: str, connect_timeout: float) -> tuple[trio.abc.Stream, str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UpstreamError(f"the realtime upstream URL is not ws:// or wss:// ({parts.scheme}://)")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname
    try:
        with trio.fail_after(connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
            if secure:
                tls = trio.SSLStream(stream, await _tls(), server_hostname=host, https_compatible=True)
                await tls.do_handshake()
                stream = tls
    except trio.TooSlowError:
        raise UpstreamTimeout(f"the realtime upstream did not accept a connection within {connect_timeout:g}s",
                              code="upstream_connect_timeout") from None
    except (*BROKEN, ssl.SSLError) as exc:
        raise Overloaded(f"cannot connect to the realtime upstream: {describe(exc)}",
                         code="upstream_connect_error") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = host if parts.port is None else f"{host}:{port}"
    return stream, netloc, target


def _refusal(status: int, body: bytes) -> GatewayError:
    message = ""
    try:
        detail = orjson.loads(body)
        if isinstance(detail, dict) and isinstance(detail.get("error"), dict):
            message = str(detail["error"].get("message") or "")[:300]
    except orjson.JSONDecodeError:
        message = body[:200].decode("utf-8", "replace")
    text = f"the realtime upstream refused the session with {status}" + (f": {message}" if message else "")
    err: GatewayError
    if status == 429:
        err = RateLimited(text, code="upstream_rate_limited")
    elif status in (400, 404, 422):
        err = GatewayError(text, status=status, code="upstream_refused")
        err.type = "invalid_request_error"
    elif status >= 500:
        err = Overloaded(text)
    else:  # 401 / 403: sidegate's own credentials are wrong, which the client cannot fix
        err = UpstreamError(text, code="upstream_auth_failed")
    err.upstream_status = status
    return err


async def connect_realtime(url: str, headers: list[tuple[str, str]], *, connect_timeout: float,
                           handshake_timeout: float, max_message: int) -> Socket:
    """An open WebSocket to `url` (its handshake answered within `handshake_timeout`)."""
    stream, netloc, target = await _open(url, connect_timeout)
    try:
        key = base64.b64encode(os.urandom(16))
        machine = h11.Connection(h11.CLIENT, max_incomplete_event_size=65536)
        head = [("host", netloc), ("upgrade", "websocket"), ("connection", "Upgrade"),
                ("sec-websocket-key", key.decode()), ("sec-websocket-version", "13"), *headers]
        request = h11.Request(method="GET", target=target, headers=head)
        with trio.fail_after(handshake_timeout):
            await stream.send_all(machine.send(request) or b"")
            machine.send(h11.EndOfMessage())
            while True:
                event = machine.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    machine.receive_data(bytes(data))
                    continue
                if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                    accept = dict(event.headers).get(b"sec-websocket-accept", b"")
                    if accept != generate_accept_token(key):
                        raise UpstreamError("the realtime upstream answered the upgrade with a wrong "
                                            "Sec-WebSocket-Accept", code="bad_upstream_handshake")
                    return Socket(stream, client=True, trailing=bytes(machine.trailing_data[0]),
                                  max_message=max_message)
                if isinstance(event, h11.Response):
                    body = await _body(machine, stream)
                    raise _refusal(event.status_code, body)
                if isinstance(event, h11.ConnectionClosed):
                    raise Overloaded("the realtime upstream closed the connection during the handshake")
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise UpstreamTimeout(f"the realtime upstream did not answer the upgrade within {handshake_timeout:g}s") \
            from None
    except (h11.ProtocolError, *BROKEN) as exc:
        await trio.aclose_forcefully(stream)
        raise UpstreamError(f"the realtime upstream's handshake failed: {describe(exc)}",
                            code="bad_upstream_handshake") from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def _body(machine: h11.Connection, stream: trio.abc.Stream) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < _MAX_REFUSAL:
        event = machine.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            machine.receive_data(bytes(data))
        elif isinstance(event, h11.Data):
            parts.append(bytes(event.data))
            size += len(event.data)
        else:
            break
    return b"".join(parts)[:_MAX_REFUSAL]
