"""Provider pass-through routes (`passthrough` in the spec): `<prefix>/<rest>` relayed to the
provider's base URL + `/<rest>` with the client's method, query and body and the gateway's own
credentials for that provider.

The client authenticates with a virtual key as on every route (Bearer, `x-api-key`,
`x-goog-api-key` or `?key=`); its auth headers and the `key` parameter never go upstream. The key's
rate limits and budgets admit the call; the answer (whole or a stream, relayed as it arrives) is
watched for usage in the provider's own shape (`passthrough_usage`) and written to a spend row.
Upstream errors reach the client as they are; sidegate's own (auth, limits, a bad path) are
OpenAI-style envelopes. The path is data: dot segments, empty segments, backslashes and encoded
slashes or dots are refused, so no request climbs out of the provider's base path (only an API
version segment at its end may be the client's own: `upstream_path`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from time import perf_counter
from urllib.parse import parse_qsl, urlencode, urlsplit

import trio

from sidegate.runtime.asgi import ClientGone, Receive, Scope, Send, header, read_body, respond
from sidegate.runtime.errors import BadRequest, UpstreamTimeout, from_exception, openai_body
from sidegate.runtime.governance.gate import Forbidden
from sidegate.runtime.http.access import Access
from sidegate.runtime.http.passthrough_usage import UsageTap
from sidegate.runtime.plan import PassthroughRoute, Price, Provider
from sidegate.runtime.routing.call import Call, cancel_on_disconnect
from sidegate.runtime.routing.state import Runtime
from sidegate.runtime.upstream.headers import redacted_url
from sidegate.runtime.upstream.transport import UpstreamRequest

__all__ = ["Passthrough", "passthrough_route", "upstream_path"]

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_CLIENT_AUTH = frozenset({b"authorization", b"x-api-key", b"x-goog-api-key", b"api-key", b"proxy-authorization"})
_HOP = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                  b"content-length", b"accept-encoding", b"cookie", b"forwarded", b"x-real-ip"})
_ANSWER_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"set-cookie", b"trailer"})
_ESCAPES = re.compile(r"%(2f|5c|2e|00)|[\\\x00-\x20\x7f]", re.IGNORECASE)
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_VERSION = re.compile(r"v[0-9]+(?:(?:alpha|beta)[0-9]*)?")
_MODEL_IN_PATH = re.compile(r"/models/([^/:]+)")
_DEFAULT_WAIT = 600.0
"""First byte and idle bound (seconds) when the provider sets none."""
_JSON = b"application/json"


def passthrough_route(rt: Runtime, path: str) -> PassthroughRoute | None:
    """The route serving `path` (longest prefix first, whole segments only)."""
    for route in rt.plan.passthrough:
        if path == route.prefix or path.startswith(route.prefix + "/"):
            return route
    return None


def upstream_path(raw_path: str, prefix: str, base_path: str) -> str:
    """The upstream path for the client's (still percent-encoded) path: the provider's base path
    followed by what comes after the prefix. 400 for anything that could climb or leave it.

    An SDK pointed at `<sidegate>/<prefix>` sends its API's usual paths, version included: a rest
    that already starts with the whole base path is taken as it is, and one that starts with an API
    version segment (`v1`, `v1beta`, `v2`...) takes the place of the base
    path's last segment when that is a version too (`/v1/messages` under `https://api.anthropic.com/v1`
    is `/v1/messages`; google-genai's `/v1/models/...` under Gemini's `/v1beta` is `/v1/models/...`).
    """
    if raw_path != prefix and not raw_path.startswith(prefix + "/"):
        raise BadRequest("the pass-through prefix must be written plainly (not percent-encoded)", code="invalid_path")
    rest = raw_path[len(prefix):]
    if _ESCAPES.search(rest) or _PERCENT.search(rest):
        raise BadRequest("the pass-through path holds an encoded slash, dot, backslash or control character",
                         code="invalid_path")
    segments = rest.split("/")[1:]
    if any(s in ("", ".", "..") for s in segments[:-1]) or (segments and segments[-1] in (".", "..")):
        raise BadRequest("the pass-through path holds an empty or dot segment", code="invalid_path")
    base = base_path.rstrip("/")
    if base and (rest == base or rest.startswith(base + "/")):
        return rest  # the client already wrote the whole base path (Azure's `/openai/deployments/...`)
    head, _, last = base.rpartition("/")
    if segments and _VERSION.fullmatch(segments[0]) and _VERSION.fullmatch(last):
        base = head
    return base + rest


def _query(scope: Scope, provider: Provider) -> str:
    pairs = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
             if k != "key"]  # Google's key parameter: the client's virtual key, never sent upstream
    if provider.api_version and not any(k == "api-version" for k, _ in pairs):
        pairs.append(("api-version", provider.api_version))
    return urlencode(pairs)


def _headers(scope: Scope, credentials: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    own = {name.lower().encode() for name, _ in credentials}
    kept = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
            if k not in _CLIENT_AUTH and k not in _HOP and k not in own and not k.startswith(b"x-sidegate-")
            and not k.startswith(b"x-forwarded-")]
    return (*kept, ("accept-encoding", "identity"), *credentials)


def _price(rt: Runtime, provider: str, model: str) -> Price | None:
    """The price of `model` at `provider` when a model group of the plan serves it there."""
    for group in rt.plan.models:
        for target in group.targets:
            if target.provider == provider and target.model == model and target.price is not None:
                return target.price
    return None


def _model_of(body: bytes, path: str) -> str:
    """The upstream model the request names (its body's `model`, or `/models/<name>` in the path)."""
    found = re.search(rb'"model"\s*:\s*"([^"\\]{1,200})"', body[:65536])
    if found is not None:
        return found.group(1).decode("utf-8", "replace")
    in_path = _MODEL_IN_PATH.search(path)
    return in_path.group(1) if in_path else ""


class Passthrough:
    """Serves the plan's pass-through routes with the app's access control and accounting."""

    def __init__(self, access: Access, account: Callable[[Call], None], log: Callable[..., None]) -> None:
        self.access = access
        self.account = account
        self.log = log

    async def handle(self, rt: Runtime, route: PassthroughRoute, scope: Scope, receive: Receive, send: Send) -> None:
        """Relay one request, or answer sidegate's own error."""
        rid = (header(scope, b"x-request-id") or b"").decode("latin-1") or uuid.uuid4().hex
        call = Call(request_id=rid, op="passthrough", t0=perf_counter(), log=self.log)
        call.group = call.model = f"passthrough/{route.provider}"
        call.deployment = route.provider
        admission = None
        try:
            grant = await self.access.authenticate(scope, google=True)
            team = self.access.gate.teams.get(grant.team) if grant is not None and grant.team else None
            if grant is not None and not grant.master and (grant.models is not None or
                                                             (team is not None and team.models is not None)):
                raise Forbidden("pass-through routes reach every model of the provider: a key limited to some "
                                "models may not use them", code="passthrough_not_allowed")
            method: str = scope["method"]
            if method not in _METHODS:
                raise BadRequest(f"method {method} is not passed through", code="method_not_allowed")
            provider = rt.plan.provider(route.provider)
            raw = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0].decode("latin-1")
            base = urlsplit(provider.base_url)
            url = f"{base.scheme}://{base.netloc}{upstream_path(raw, route.prefix, base.path)}"
            query = _query(scope, provider)
            if query:
                url += "?" + query
            body = await read_body(scope, receive, rt.plan.server.max_body, rt.plan.server.body_timeout)
            call.extra["upstream_model"] = model = _model_of(body, raw)
            call.price = _price(rt, route.provider, model)
            admission = await self.access.admit(grant, call.group, op="passthrough", request_id=rid)
            assert rt.transport is not None
            request = UpstreamRequest(method, url, _headers(scope, rt.passthrough[route.provider]), body,
                                      provider.connect_timeout, rt.plan.server.max_upstream_answer)
            call.upstream_url = redacted_url(url)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_on_disconnect, receive, nursery.cancel_scope, call)
                try:
                    await self._relay(rt, provider, request, call, send)
                finally:
                    nursery.cancel_scope.cancel()
            if not call.complete:
                call.status, call.error = 499, "client disconnected"
        except ClientGone:
            call.status, call.error = 499, "client disconnected"
        except Exception as exc:
            err = from_exception(exc)
            if err.code == "internal_error":
                self.log("internal_error", request_id=rid, error=repr(exc))
            call.status, call.error = err.status, err.message
            if not call.started:
                await respond(send, err.status, openai_body(err), [*call.headers(), *err.headers()], _JSON)
        finally:
            if admission is not None:
                self.access.settle(admission, call)
            self.account(call)

    async def _relay(self, rt: Runtime, provider: Provider, request: UpstreamRequest, call: Call, send: Send) -> None:
        assert rt.transport is not None
        first = provider.first_byte_timeout or _DEFAULT_WAIT
        idle = provider.idle_timeout or _DEFAULT_WAIT
        t = perf_counter()
        with trio.move_on_after(first) as opening:
            async with rt.transport.stream(request) as upstream:
                call.upstream = perf_counter() - t
                opening.deadline = trio.current_time() + idle
                tap = UsageTap(upstream.headers.get("content-type", ""))
                ours = call.headers()
                names = {k for k, _ in ours} | _ANSWER_HOP
                headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in upstream.headers.multi_items()
                           if k.lower().encode() not in names]
                await send({"type": "http.response.start", "status": upstream.status, "headers": [*headers, *ours]})
                call.started, call.status = True, upstream.status
                if upstream.status >= 400:
                    call.error = f"upstream answered {upstream.status}"
                async for chunk in upstream.iter_bytes():
                    opening.deadline = trio.current_time() + idle
                    tap.feed(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                call.complete = True
                call.usage = tap.finish()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        call.upstream = max(call.upstream, perf_counter() - t)
        if opening.cancelled_caught:
            err = UpstreamTimeout(f"the upstream was silent for {idle if call.started else first:g}s")
            if not call.started:
                raise err
            call.status, call.error = err.status, err.message  # the cut body tells the client


