"""Upstream response headers relayed to clients: rate-limit state (so clients can pace themselves) and
the upstream's request id (as `x-upstream-request-id`, for support tickets with the provider).

Only these names are relayed, never the upstream's other headers (cookies, server details). Values
are bounded and stripped of control characters: they are upstream data.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

import httpx

__all__ = ["REQUEST_ID_HEADERS", "redacted_url", "relayed_headers"]

_PREFIXES = (b"x-ratelimit-", b"anthropic-ratelimit-")
_EXACT = frozenset({b"retry-after-ms"})
REQUEST_ID_HEADERS = (b"x-request-id", b"request-id", b"apim-request-id", b"x-amzn-requestid", b"x-amzn-request-id",
                      b"x-goog-request-id", b"cf-ray")
"""Where upstreams put their request id, in order of preference."""
_IDS = frozenset(REQUEST_ID_HEADERS)
_MAX_VALUE = 256
_MAX_HEADERS = 32


def _clean(value: bytes) -> bytes:
    value = value[:_MAX_VALUE]
    if value.isascii() and value.decode("ascii").isprintable():
        return value
    return bytes(c for c in value if 0x20 <= c <= 0x7E)


def relayed_headers(
    headers: httpx.Headers | Mapping[str, str] | Iterable[tuple[str, str]],
) -> list[tuple[bytes, bytes]]:
    """The headers of an upstream answer that go along to the client (names in lower case).
    Works on the raw bytes (~2 us for a typical answer's headers): it runs for every answer."""
    raw: Iterable[tuple[bytes, bytes]]
    if isinstance(headers, httpx.Headers):
        raw = headers.raw
    else:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
    out: list[tuple[bytes, bytes]] = []
    ids: dict[bytes, bytes] | None = None
    for name, value in raw:
        key = name.lower()
        if key in _IDS:
            if ids is None:
                ids = {}
            ids.setdefault(key, value)
        elif (key.startswith(_PREFIXES) or key in _EXACT) and len(out) < _MAX_HEADERS and len(key) <= 64:
            cleaned = _clean(value)
            if cleaned:
                out.append((key, cleaned))
    if ids:
        for key in REQUEST_ID_HEADERS:
            if key in ids:
                cleaned = _clean(ids[key])
                if cleaned:
                    out.append((b"x-upstream-request-id", cleaned))
                break
    return out


@functools.lru_cache(maxsize=512)
def redacted_url(url: str) -> str:
    """`url` without credentials or query string (a key may ride in either), for logs (cached: a
    deployment's URL repeats, and parsing it was a percent of a request)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{netloc}{parts.path}"
