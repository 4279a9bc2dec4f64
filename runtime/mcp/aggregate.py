"""One caller's view of the upstream servers: `/mcp` merges them all under namespaced names
(`<server><sep><name>`, resource URIs `<server>+<uri>`), `/mcp/<server>` shows one as it is.
A list page merges the next page of every server (fetched concurrently); the opaque cursor
holds the servers' own cursors; calls are routed to the owning server; names the
caller may not use are absent from lists and refused like unknown ones."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
import trio

from sidegate.runtime.mcp.exchange import Exchange
from sidegate.runtime.mcp.hub import Hub
from sidegate.runtime.mcp.permissions import Permissions
from sidegate.runtime.mcp.protocol import INVALID_PARAMS, METHOD_NOT_FOUND, UPSTREAM_UNAVAILABLE, McpError
from sidegate.runtime.mcp.upstream import Upstream

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
        self.exchange: Exchange | None = None
        """The calling request's side channel, given to every upstream request it makes."""

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
        """One page of the merged list: the next page of every server that has one, fetched at once;
        `nextCursor` while any server has more."""
        member, field = LISTS[method]
        todo = self._cursor(params.get("cursor"))
        pages: dict[str, dict[str, Any]] = {}
        down: list[str] = []

        async def fetch(server: str, cursor: str | None) -> None:
            try:
                pages[server] = await self.hub.upstreams[server].request(
                    method, {"cursor": cursor} if cursor else {}, self.exchange)
            except McpError as err:
                if err.code == UPSTREAM_UNAVAILABLE:
                    down.append(server)
                    self._on_down(server, self.hub.upstreams[server].last_error or err.message)

        async with trio.open_nursery() as nursery:
            for server, cursor in todo.items():
                nursery.start_soon(fetch, server, cursor)
        items: list[Any] = []
        more: dict[str, str] = {}
        for server in self.names:
            result = pages.get(server)
            if result is None:
                continue
            upstream = self.hub.upstreams[server]
            for item in result.get(member, ()):
                if method == "tools/list":
                    upstream.learn_tool(item)
                if isinstance(item, dict) and isinstance(item.get(field), str) and self.permits(server, item[field]):
                    items.append({**item, field: self._public(server, field, item[field])})
            follow = result.get("nextCursor")
            if isinstance(follow, str) and follow:
                more[server] = follow
        out: dict[str, Any] = {member: items}
        if more:
            out["nextCursor"] = base64.urlsafe_b64encode(orjson.dumps(more)).decode()
        if down:
            out["_meta"] = {UNAVAILABLE_META: sorted(down)}
        return out

    def _cursor(self, raw: Any) -> dict[str, str | None]:
        if raw is None:
            return dict.fromkeys(self.names)
        try:
            todo = orjson.loads(base64.urlsafe_b64decode(str(raw).encode()))
        except ValueError:
            todo = None
        if not isinstance(todo, dict) or not all(s in self.names and isinstance(c, str) for s, c in todo.items()):
            raise McpError(INVALID_PARAMS, "invalid cursor")
        return todo

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
        result = await upstream.request("resources/read", forward, self.exchange)
        contents = result.get("contents")
        if isinstance(contents, list):
            result = {**result, "contents": [
                {**c, "uri": self._public(upstream.name, "uri", c["uri"])}
                if isinstance(c, dict) and isinstance(c.get("uri"), str) else c for c in contents]}
        return result

    async def complete(self, params: dict[str, Any]) -> dict[str, Any]:
        """`completion/complete` for an argument of a prompt (`ref/prompt`, by name) or a resource
        template (`ref/resource`, by URI), sent to the server that owns it under its own name."""
        ref = params.get("ref")
        kind = ref.get("type") if isinstance(ref, dict) else None
        if kind not in ("ref/prompt", "ref/resource") or not isinstance(ref, dict):
            raise McpError(INVALID_PARAMS, "params.ref must be a ref/prompt or ref/resource reference")
        method, field = ("prompts/get", "name") if kind == "ref/prompt" else ("resources/read", "uri")
        upstream, own, _ = self.route(method, {field: ref.get(field)})
        return await upstream.request("completion/complete", {**params, "ref": {**ref, field: own}}, self.exchange)

    def unknown(self, method: str) -> McpError:
        """The error for a method the gateway does not relay."""
        return McpError(METHOD_NOT_FOUND, f"Method not found: {method}")
