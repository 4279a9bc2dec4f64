"""Plan types of the tool gateways: MCP servers and A2A agents, and the permissions keys and teams
hold on them (re-exported by :mod:`runtime.plan`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sidegate.runtime.plan.values import Header, Secret

__all__ = ["A2A", "A2AAgent", "A2APolicy", "Mcp", "McpAccess", "McpOAuth", "McpServer", "McpStart", "McpTransport"]


@dataclass(frozen=True, slots=True, kw_only=True)
class A2APolicy:
    """Which A2A agents a key or team may call: names matching an `allow` glob (all when `allow`
    is empty) and no `deny` glob."""

    allow: tuple[str, ...]
    deny: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class McpAccess:
    """MCP permissions: glob patterns over namespaced names (`<server><sep><tool>`); deny wins."""

    allow: tuple[str, ...] | None
    """None: every name not denied."""
    deny: tuple[str, ...]


class McpTransport(enum.Enum):
    """How sidegate reaches an upstream MCP server."""

    STREAMABLE_HTTP = "streamable-http"
    SSE = "sse"
    """The legacy HTTP+SSE transport (protocol 2024-11-05)."""
    STDIO = "stdio"


class McpStart(enum.Enum):
    """When a stdio server's subprocess is started."""

    LAZY = "lazy"
    BOOT = "boot"


@dataclass(frozen=True, slots=True, kw_only=True)
class McpOAuth:
    """OAuth 2.0 client credentials: the token endpoint and the client's id and secret."""

    token_url: str
    client_id: Secret
    client_secret: Secret
    scope: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class McpServer:
    """One upstream MCP server."""

    name: str
    transport: McpTransport
    url: str | None
    headers: tuple[Header, ...]
    """Sent with every HTTP request (auth included: `Authorization: Bearer ...` or an API-key header)."""
    oauth: McpOAuth | None
    """Bearer tokens from an OAuth 2.0 client-credentials grant (HTTP transports)."""
    command: tuple[str, ...]
    env: tuple[Header, ...]
    """Environment variables added for a stdio subprocess (name, value)."""
    start: McpStart
    timeout: float
    max_concurrency: int
    start_timeout: float = 30.0
    """Stdio and SSE servers: time allowed from starting the process (or opening the stream) to its
    answer to `initialize`; requests waiting for a start wait this long at most, outside `timeout`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Mcp:
    """The MCP gateway: upstream servers, aggregated at `/mcp`."""

    separator: str
    servers: tuple[McpServer, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class A2AAgent:
    """An upstream A2A agent fronted at `/a2a/{name}`: where its card is, the headers that
    authenticate sidegate to it (secret references), and its deadlines."""

    name: str
    card_url: str
    """The agent card's URL (`{url}/.well-known/agent-card.json` when the spec gives a base URL)."""
    headers: tuple[Header, ...]
    connect_timeout: float
    timeout: float
    """Deadline of a unary call and of the card fetch; streams are bounded by `stream_idle` instead."""
    stream_idle: float
    """The longest wait for the next byte of a stream."""
    refresh: float
    """Seconds between card fetches while the agent is healthy."""


@dataclass(frozen=True, slots=True, kw_only=True)
class A2A:
    """The A2A gateway: the agents the spec declares."""

    agents: tuple[A2AAgent, ...]
