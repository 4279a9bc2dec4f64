"""The `mcp` section: upstream MCP servers (HTTP or stdio), their credentials as secret references,
and the `mcp` permission rules of keys and teams checked against the declared servers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sidegate.compiler.diagnostics import Collector, did_you_mean, join_pointer
from sidegate.runtime.plan import (
    Header,
    Mcp,
    McpAccess,
    McpOAuth,
    McpServer,
    McpStart,
    McpTransport,
    Secret,
    SecretPart,
    SecretSource,
)

__all__ = ["access", "check_mcp", "resolve_mcp"]

_GLOB = set("*?[")


def access(raw: Mapping[str, Any] | None) -> McpAccess | None:
    """A key's or team's `mcp: {allow, deny}` rule."""
    if raw is None:
        return None
    allow = raw.get("allow")
    return McpAccess(allow=None if allow is None else tuple(allow), deny=tuple(raw.get("deny", ())))


def resolve_mcp(
    spec: Mapping[str, Any], secret: Callable[[Any, str], Secret | None], seconds: Callable[[str], float],
    out: Collector,
) -> Mcp | None:
    """Lower the `mcp` section (auth values must be references, never literal tokens)."""
    raw_mcp = spec.get("mcp")
    if raw_mcp is None:
        return None
    servers = []
    for name, raw in raw_mcp["servers"].items():
        pointer = join_pointer("/mcp/servers", name)
        headers = [Header(name=h, value=secret(v, join_pointer(pointer, "headers", h)) or Secret(parts=()))
                   for h, v in raw.get("headers", {}).items()]
        auth = raw.get("auth")
        oauth = None
        if auth is not None and "oauth" in auth:
            o = auth["oauth"]
            oauth = McpOAuth(
                token_url=o["token_url"], client_id=secret(o["client_id"], f"{pointer}/auth/oauth/client_id")
                or Secret(parts=()), client_secret=_reference(secret, o["client_secret"],
                                                              f"{pointer}/auth/oauth/client_secret", out),
                scope=o.get("scope"))
        elif auth is not None:
            field = "bearer" if "bearer" in auth else "key"
            value = _reference(secret, auth[field], f"{pointer}/auth/{field}", out)
            if field == "bearer":
                bearer = SecretPart(source=SecretSource.TEXT, value="Bearer ")
                headers.append(Header(name="Authorization", value=Secret(parts=(bearer, *value.parts))))
            else:
                headers.append(Header(name=auth["header"], value=value))
        transport = McpTransport(raw.get("transport", "streamable-http" if "url" in raw else "stdio"))
        if (transport is McpTransport.STDIO) != ("command" in raw):
            out.error("mcp.transport", pointer, f"transport {transport.value} needs "
                      f"{'command' if transport is McpTransport.STDIO else 'url'}", at_key=True)
        elif transport is McpTransport.STDIO and auth is not None:
            out.error("mcp.stdio-auth", f"{pointer}/auth", "a stdio server takes no auth: pass credentials in env",
                      at_key=True)
        env = tuple(Header(name=k, value=secret(v, join_pointer(pointer, "env", k)) or Secret(parts=()))
                    for k, v in raw.get("env", {}).items())
        servers.append(McpServer(
            name=name, transport=transport, url=raw.get("url"), headers=tuple(headers), oauth=oauth,
            command=tuple(raw.get("command", ())), env=env, start=McpStart(raw.get("start", "lazy")),
            timeout=seconds(raw.get("timeout", "30s")), max_concurrency=raw.get("max_concurrency", 16),
            start_timeout=seconds(raw.get("start_timeout", "30s")),
        ))
    return Mcp(separator=raw_mcp.get("separator", "__"), servers=tuple(sorted(servers, key=lambda s: s.name)))


def _reference(secret: Callable[[Any, str], Secret | None], value: Any, pointer: str, out: Collector) -> Secret:
    """A credential that must be a reference (a literal would be written into the plan)."""
    found = secret(value, pointer) or Secret(parts=())
    if found.parts and all(p.source is SecretSource.TEXT for p in found.parts):
        out.error("secret.literal", pointer, "upstream credentials must be references "
                  "(${ENV}, {env: ...} or {file: ...}); literal secrets would be written into the plan")
    return found


def check_mcp(mcp: Mcp | None, rules: list[tuple[McpAccess, str]], out: Collector) -> None:
    """Server names do not contain the separator; permission patterns name declared servers."""
    names = {s.name for s in mcp.servers} if mcp is not None else set()
    sep = mcp.separator if mcp is not None else "__"
    for name in sorted(names):
        if sep in name:
            out.error("mcp.server-name", join_pointer("/mcp/servers", name),
                      f"server name '{name}' contains the separator '{sep}'", at_key=True)
    for rule, pointer in rules:
        for kind, patterns in (("allow", rule.allow or ()), ("deny", rule.deny)):
            for i, pattern in enumerate(patterns):
                server = pattern.split(sep, 1)[0]
                if _GLOB & set(server):
                    continue
                if mcp is None:
                    out.error("ref.unknown-mcp-server", f"{pointer}/{kind}/{i}",
                              f"'{pattern}' names MCP server '{server}' but the spec has no mcp section")
                elif server not in names:
                    out.error("ref.unknown-mcp-server", f"{pointer}/{kind}/{i}",
                              f"'{pattern}' names MCP server '{server}', which is not declared under mcp.servers"
                              f"{did_you_mean(server, names)}")
