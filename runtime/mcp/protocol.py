"""MCP wire facts shared by the endpoint and the upstream clients: protocol versions, headers,
`_meta` envelope keys, JSON-RPC error codes, header-value coding."""

from __future__ import annotations

import base64
import binascii
from typing import Any

__all__ = [
    "ENVELOPE_KEYS",
    "HANDSHAKE_VERSIONS",
    "LATEST_HANDSHAKE",
    "MODERN_VERSIONS",
    "NAME_PARAMS",
    "McpError",
    "decode_header",
    "encode_header",
    "strip_envelope",
]

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
"""Session-era versions, negotiated by `initialize`."""
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[-1]
MODERN_VERSIONS = ("2026-07-28",)
"""Stateless-era versions: no handshake; every request carries its version in a header and `_meta`."""

META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_CLIENT_CAPS = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
ENVELOPE_KEYS = frozenset({META_VERSION, META_CLIENT_INFO, META_CLIENT_CAPS, META_LOG_LEVEL})
"""`_meta` members that describe one hop's connection, not the request: never relayed."""

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UPSTREAM_UNAVAILABLE = -32000
"""Server-defined: the upstream that owns the name is down, timed out or answered garbage."""
UNAUTHORIZED = -32001
"""Server-defined: the caller's key was refused (sent with the HTTP status 401 or 403)."""
HEADER_MISMATCH = -32020
MISSING_CLIENT_CAPABILITY = -32021
"""A request needs a capability the client did not declare (an upstream's answer, relayed with 400)."""
UNSUPPORTED_PROTOCOL_VERSION = -32022
GUARDRAIL_BLOCKED = -32030
"""Server-defined: a guardrail blocked a tool call's arguments or its result (`data.guardrail` names it)."""
GUARDRAIL_UNAVAILABLE = -32031
"""Server-defined: an external guardrail could not check a tool call and fails closed."""

NAME_PARAMS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""Methods whose target is named in params (mirrored in the `mcp-name` header at 2026-07-28)."""


class McpError(Exception):
    """A JSON-RPC error to answer with (code, message, optional data; HTTP status for the endpoint)."""

    def __init__(self, code: int, message: str, data: Any = None, status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status

    def body(self, rid: Any) -> dict[str, Any]:
        """The JSON-RPC error object."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": rid, "error": error}


def encode_header(value: str) -> str:
    """A name as an HTTP header value: verbatim when plain printable ASCII, else `=?base64?...?=`."""
    if value.isascii() and value.isprintable() and value == value.strip() and not value.startswith("=?base64?"):
        return value
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


def decode_header(value: str) -> str | None:
    """The inverse of :func:`encode_header`; None for a malformed `=?base64?...?=` value."""
    if not (value.startswith("=?base64?") and value.endswith("?=")):
        return value
    try:
        return base64.b64decode(value[9:-2], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def strip_envelope(params: dict[str, Any]) -> dict[str, Any]:
    """`params` without the caller's per-hop `_meta` envelope (other `_meta` members stay)."""
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        return params
    rest = {k: v for k, v in meta.items() if k not in ENVELOPE_KEYS}
    out = {k: v for k, v in params.items() if k != "_meta"}
    if rest:
        out["_meta"] = rest
    return out
