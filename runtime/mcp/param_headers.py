"""`Mcp-Param-*` headers (MCP 2026-07-28, custom headers from tool parameters).

A tool may mark properties of its `inputSchema` with `x-mcp-header: <Name>`; a client calling it
over Streamable HTTP mirrors each marked argument into an `Mcp-Param-<Name>` header, so that
intermediaries can route on it without reading the body, and the server refuses a call whose
headers are missing or disagree (-32020). sidegate is that client towards its upstreams: it
learns the markings from the tools lists it relays (and again when a server says its headers
disagree) and mirrors the client's arguments.

Only the statically reachable properties count: chains of `properties` from the schema's root.
A value is mirrored when present and not null: `true`/`false` for booleans, the decimal text of
numbers, strings as they are, each through the header value encoding (`=?base64?...?=` when not
plain ASCII); other values have no header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sidegate.runtime.mcp.protocol import decode_header, encode_header

__all__ = ["Bindings", "bindings_of", "check_param_headers", "param_headers"]

Bindings = tuple[tuple[str, tuple[str, ...]], ...]
"""(header token, property path) for each marked property of one tool."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_MAX_DEPTH = 16


def bindings_of(schema: Any) -> Bindings:
    """The markings of a tool's `inputSchema` (invalid tokens are ignored: such a tool is the
    server's error, and it would refuse the call itself)."""
    out: list[tuple[str, tuple[str, ...]]] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        props = node.get("properties") if isinstance(node, dict) else None
        if not isinstance(props, dict) or len(path) >= _MAX_DEPTH:
            return
        for key, sub in props.items():
            if not isinstance(sub, dict):
                continue
            token = sub.get("x-mcp-header")
            if isinstance(token, str) and _TOKEN.fullmatch(token):
                out.append((token, (*path, str(key))))
            walk(sub, (*path, str(key)))

    walk(schema, ())
    return tuple(out)


def _rendered(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        try:
            return str(value)
        except ValueError:  # an int past CPython's digit limit
            return None
    return None


def _values(bindings: Bindings, arguments: Any) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for token, path in bindings:
        node: Any = arguments
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        out.append((token, None if node is None else _rendered(node)))
    return out


def param_headers(bindings: Bindings, arguments: Any) -> dict[str, str]:
    """The `Mcp-Param-*` headers for a call with `arguments`."""
    return {f"Mcp-Param-{token}": encode_header(text) for token, text in _values(bindings, arguments)
            if text is not None}


def check_param_headers(bindings: Bindings, arguments: Any, sent: Mapping[str, str]) -> str | None:
    """Why a client's call disagrees with the tool's markings, or None: each marked argument the
    body carries must come with its header, well encoded and equal to it; a header for an
    argument the body lacks disagrees too. `sent` maps lower-cased header names to values."""
    for token, text in _values(bindings, arguments):
        name = f"mcp-param-{token.lower()}"
        value = sent.get(name)
        if value is None:
            if text is not None:
                return f"the Mcp-Param-{token} header is required for this tool's '{token}' argument"
            continue
        decoded = decode_header(value) if value.isascii() and value.isprintable() else None
        if decoded is None:
            return f"the Mcp-Param-{token} header is not a valid =?base64?...?= value"
        if text is None or decoded != text:
            return f"the Mcp-Param-{token} header does not match the body's argument"
    return None
