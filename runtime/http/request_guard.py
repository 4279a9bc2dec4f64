"""Checks on what clients send before any of it is acted on.

- Without `auth`, a POST must carry a JSON body (`Content-Type: application/json`) and a `Host`
  that is localhost, the listen address or one of `server.allowed_hosts`. A web page can make a
  victim's browser send a `text/plain` cross-site POST, or re-point its own name at 127.0.0.1 (DNS
  rebinding); neither gets through. With `auth` the key is the defence, and both are accepted.
- JSON bodies nested deeper than `server.max_json_depth` are refused (400) before anything
  re-serialises them (orjson refuses to write past 254 levels: that was a 500).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sidegate.runtime.asgi import Scope, header
from sidegate.runtime.errors import BadRequest
from sidegate.runtime.plan import Plan

__all__ = ["HostRule", "check_browser_origin", "check_depth", "check_head_size", "check_unauthenticated_post"]

_LOCAL = frozenset({"localhost", "127.0.0.1", "::1"})
_ANY = frozenset({"0.0.0.0", "::", ""})


class HostRule:
    """The `Host` names one plan accepts for unauthenticated POSTs and browser requests (precomputed
    per plan)."""

    __slots__ = ("_exact", "_suffixes")

    def __init__(self, plan: Plan) -> None:
        names = set(_LOCAL) | {h for h in plan.server.allowed_hosts if not h.startswith("*.")}
        if plan.server.host.lower() not in _ANY:
            names.add(plan.server.host.lower())
        self._exact = frozenset(names)
        self._suffixes = tuple(h[1:] for h in plan.server.allowed_hosts if h.startswith("*."))

    def allows(self, host: str) -> bool:
        """Whether `host` (the Host header's name, port stripped, lower case) is accepted."""
        return host in self._exact or any(host.endswith(s) for s in self._suffixes)


def _host_name(value: bytes) -> str:
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):  # [::1]:4000
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _origin_host(value: bytes) -> str | None:
    """The host of an `Origin` header (`scheme://host[:port]`), lower case; None for `null` or junk."""
    text = value.decode("latin-1").strip().lower()
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme or not rest:
        return None
    return _host_name(rest.split("/", 1)[0].encode("latin-1")) or None


def check_browser_origin(scope: Scope, rule: HostRule) -> None:
    """Refuse (403) a browser's request (it carries `Origin`) unless its origin and its `Host` are
    local or in `server.allowed_hosts`, with or without `auth`, on every route: a page on another
    site, or one reaching this port by DNS rebinding (Host and Origin both its own name), is not a
    client of a sidecar. Clients that are not browsers send no `Origin` and are not affected."""
    origin = header(scope, b"origin")
    if origin is None:
        return
    host = header(scope, b"host")
    origin_host = _origin_host(origin)
    if origin_host is None or not rule.allows(origin_host) or (host is not None and not rule.allows(_host_name(host))):
        raise BadRequest(
            "a browser request from an origin this sidecar does not serve (Origin and Host must be localhost, "
            "its listen address or in server.allowed_hosts: a defence against DNS rebinding)", status=403,
            code="origin_not_allowed")


def check_unauthenticated_post(scope: Scope, rule: HostRule) -> None:
    """For a spec without `auth`: refuse a POST whose Host is not local or allowed (403) or whose
    body is not declared JSON (415)."""
    host = header(scope, b"host")
    # Browsers, the threat here, always send Host (h11 refuses an HTTP/1.1 request without one).
    if host is not None and not rule.allows(_host_name(host)):
        raise BadRequest(
            "this sidecar has no auth: it takes POSTs only for localhost, its listen address and "
            "server.allowed_hosts (a defence against DNS rebinding)", status=403, code="host_not_allowed")
    content_type = (header(scope, b"content-type") or b"").split(b";", 1)[0].strip().lower()
    if content_type == b"multipart/form-data":
        raise BadRequest(
            "this sidecar has no auth, so it takes no multipart uploads (a web page could post one "
            "cross-site): declare `auth` in the spec (a master key or keys) to upload audio, images or files",
            status=415, code="unsupported_media_type")
    if content_type != b"application/json" and not content_type.endswith(b"+json"):
        raise BadRequest(
            "this sidecar has no auth: request bodies must be sent as Content-Type: application/json "
            "(a defence against cross-site requests from web pages)", status=415, code="unsupported_media_type")


def check_head_size(scope: Scope, limit: int) -> None:
    """Refuse (431) a request whose target and headers together are over `limit` bytes. (h11 bounds
    only a head that arrives in pieces; one that arrives whole is counted here.)"""
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    for name, value in scope["headers"]:
        size += len(name) + len(value) + 4
    if size > limit:
        raise BadRequest(f"the request's headers are over {limit:,} bytes (server.max_header_size)", status=431,
                         code="request_header_fields_too_large")


def check_depth(data: Any, limit: int, raw: bytes) -> None:
    """Refuse (400) JSON nested deeper than `limit` arrays/objects. `raw` is the body it was parsed
    from: with no more brackets in it than `limit`, it cannot be deeper (a C-speed count), so the
    iterative walk runs only for bodies with many containers."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    stack: list[tuple[Iterable[Any], int]] = []
    if isinstance(data, dict):
        stack.append((data.values(), 1))
    elif isinstance(data, list):
        stack.append((data, 1))
    while stack:
        items, depth = stack.pop()
        if depth > limit:
            raise BadRequest(f"the request JSON is nested more than {limit} levels deep (server.max_json_depth)",
                             code="json_too_deep")
        for item in items:
            if isinstance(item, dict):
                stack.append((item.values(), depth + 1))
            elif isinstance(item, list):
                stack.append((item, depth + 1))
