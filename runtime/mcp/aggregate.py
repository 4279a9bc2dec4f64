"""One caller's view of the upstream servers: `/mcp` merges them all under namespaced names
(`<server><sep><name>`, resource URIs `<server>+<uri>`), `/mcp/<server>` shows one as it is.
Lists page across servers with an opaque cursor; calls are routed to the owning server; names the
caller may not use are absent from lists and refused like unknown ones."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson

from runtime.mcp.hub import Hub
from runtime.mcp.permissions import Permissions
from runtime.mcp.protocol import INVALID_PARAMS, METHOD_NOT_FOUND, UPSTREAM_UNAVAILABLE, McpError
from runtime.mcp.upstream import Upstream

__all__ = ["LISTS", "ROUTED", "UNAVAILABLE_META", "View"]

LISTS = {
    "tools/list": ("tools", "name"),
    "prompts/list": ("prompts", "name"),
    "resources/list": ("resources", "uri"),
    "resources/templates/list": ("resourceTemplates", "uriTemplate"),
}
"""List method -> (result member, the item field that names it)."""
ROUTED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
UNAVAILABLE_META = "sidegate.dev/unavailable"
"""`_meta` member of a list result naming the servers that could not be reached for it."""


class View:
    """What one request sees: all servers (namespaced) or a single one."""

    def __init__(self, hub: Hub, only: str | None, permissions: Permissions,
                 on_down: Callable[[str, str], None]) -> None:
        self.hub = hub
        self.only = only
        self.permissions = permissions
        self.sep = hub.separator
        self.names = [only] if only is not None else sorted(hub.upstreams)
        self._on_down = on_down

    def _public(self, server: str, field: str, value: str) -> str:
        if self.only is not None:
            return value
        return f"{server}+{value}" if field in ("uri", "uriTemplate") else f"{server}{self.sep}{value}"

    def _split(self, field: str, value: str) -> tuple[str, str] | None:
        if self.only is not None:
            return self.only, value
        server, mark, rest = value.partition("+" if field == "uri" else self.sep)
        return (server, rest) if mark and server in self.hub.upstreams else None

    def permits(self, server: str, value: str) -> bool:
        """Whether the caller may use `value` of `server` (rules see `<server><sep><value>`)."""
        return self.permissions.permits(f"{server}{self.sep}{value}")

    async def list(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One page of the merged list; `nextCursor` while any server has more."""
        member, field = LISTS[method]
        position = self._cursor(params.get("cursor"))
        items: list[Any] = []
        down: list[str] = []
        while position is not None and not items:
            index, cursor = position
            server = self.names[index]
            follow = None
            try:
                result = await self.hub.upstreams[server].request(method, {"cursor": cursor} if cursor else {})
            except McpError as err:
                if err.code == UPSTREAM_UNAVAILABLE:
                    down.append(server)
                    self._on_down(server, err.message)
                result = {}
            for item in result.get(member, ()):
                if isinstance(item, dict) and isinstance(item.get(field), str) and self.permits(server, item[field]):
                    items.append({**item, field: self._public(server, field, item[field])})
            follow = result.get("nextCursor")
            if isinstance(follow, str) and follow:
                position = (index, follow)
            else:
                position = (index + 1, None) if index + 1 < len(self.names) else None
        out: dict[str, Any] = {member: items}
        if position is not None:
            out["nextCursor"] = base64.urlsafe_b64encode(orjson.dumps([self.names[position[0]], position[1]])).decode()
        if down:
            out["_meta"] = {UNAVAILABLE_META: down}
        return out

    def _cursor(self, raw: Any) -> tuple[int, str | None] | None:
        if not self.names:
            return None
        if raw is None:
            return 0, None
        try:
            server, cursor = orjson.loads(base64.urlsafe_b64decode(str(raw).encode()))
            return self.names.index(server), cursor if isinstance(cursor, str) else None
        except (ValueError, TypeError):
            raise McpError(INVALID_PARAMS, "invalid cursor") from None

    def route(self, method: str, params: dict[str, Any]) -> tuple[Upstream, str, dict[str, Any]]:
        """The upstream, its own name for the target, and the params to send it."""
        field = ROUTED[method]
        value = params.get(field)
        if not isinstance(value, str):
            raise McpError(INVALID_PARAMS, f"params.{field} must be a string")
        found = self._split(field, value)
        what = {"tools/call": "tool", "prompts/get": "prompt", "resources/read": "resource"}[method]
        if found is None or found[0] not in self.hub.upstreams or not self.permits(*found):
            raise McpError(INVALID_PARAMS, f"Unknown {what}: {value}")
        server, name = found
        return self.hub.upstreams[server], name, {**params, field: name}

    async def read(self, params: dict[str, Any]) -> dict[str, Any]:
        """`resources/read`, with the contents' URIs namespaced back."""
        upstream, _, forward = self.route("resources/read", params)
        result = await upstream.request("resources/read", forward)
        contents = result.get("contents")
        if isinstance(contents, list):
            result = {**result, "contents": [
                {**c, "uri": self._public(upstream.name, "uri", c["uri"])}
                if isinstance(c, dict) and isinstance(c.get("uri"), str) else c for c in contents]}
        return result

    def unknown(self, method: str) -> McpError:
        """The error for a method the gateway does not relay."""
        return McpError(METHOD_NOT_FOUND, f"Method not found: {method}")
