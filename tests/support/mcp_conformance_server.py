"""A reference upstream for the MCP conformance suite (`@modelcontextprotocol/conformance`), built on the
official SDK (mcp 2.x from PyPI), for running the suite's server scenarios through the gateway.

    python -m tests.support.mcp_conformance_server --port N [--host 127.0.0.1]
    python -m tests.support.mcp_conformance_server --stdio

Over HTTP it serves Streamable HTTP at http://HOST:PORT/mcp and, once the socket is bound and the app has
started, prints one line to stdout, `listening on http://HOST:PORT/mcp` (flushed); `--port 0` picks a free
port and the line carries the real one. Over stdio it prints nothing but the protocol. One process answers
both protocol eras: a 2025-11-25 client does the initialize handshake and gets an Mcp-Session-Id, a
2026-07-28 client sends self-contained requests carrying the reserved `_meta` keys.

It carries every fixture the suite's server scenarios name (`conformance list --server`):
`mcp_conformance_server_tools` the tools that ask the client nothing (content, logging, progress, SSE
polling, the server-stateless diagnostics, the JSON Schema 2020-12 tool), `mcp_conformance_server_mrtr` the
ones that ask for elicitation, sampling or roots (InputRequiredResult at 2026-07-28, server-to-client
requests at 2025-11-25), `mcp_conformance_server_catalog` the resources, prompts, completion,
logging/setLevel and resources/subscribe, and `mcp_conformance_server_tasks` the tasks extension (SEP-2663).
This module adds SSE resumption (an in-memory event store, 100 ms retry) and the caching hints.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import warnings
from dataclasses import dataclass, field

import anyio
from mcp.server.caching import CacheableMethod, CacheHint
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import JSONRPCMessage

from tests.support.mcp_conformance_server_catalog import register_catalog
from tests.support.mcp_conformance_server_mrtr import ASKING_TOOLS
from tests.support.mcp_conformance_server_tasks import TasksExtension
from tests.support.mcp_conformance_server_tools import CONTENT_TOOLS, DIAGNOSTIC_TOOLS, json_schema_2020_12_tool

NAME = "sidegate-conformance-upstream"
VERSION = "1.0.0"
RETRY_MS = 100  # the `retry:` field of the priming event: how soon a client reconnects after a closed stream

# What the 2026-07-28 caching scenario asks of every cacheable result (SEP-2549). Short and private: the
# fixtures are per-process and the gateway tests must never see one client's list served to another.
CACHED: tuple[CacheableMethod, ...] = (
    "tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read")
CACHE_HINTS = {method: CacheHint(ttl_ms=1000, scope="private") for method in CACHED}


@dataclass
class MemoryEventStore(EventStore):
    """Every SSE event of the process, in order, so a client that reconnects with Last-Event-ID is replayed the
    rest of its stream (SEP-1699 polling: the server closes a stream mid-call and the client resumes it)."""

    events: list[tuple[str, JSONRPCMessage | None]] = field(default_factory=list)

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        self.events.append((stream_id, message))
        return str(len(self.events))

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        if not last_event_id.isdigit() or not 0 < int(last_event_id) <= len(self.events):
            return None
        seen = int(last_event_id)
        stream_id = self.events[seen - 1][0]
        for index, (stream, message) in enumerate(self.events[seen:], start=seen + 1):
            if stream == stream_id and message is not None:  # None is a priming event: nothing to resend
                await send_callback(EventMessage(message, str(index)))
        return stream_id


def build() -> MCPServer:
    """The server with every fixture. Tools go in by list so the 2020-12 tool can carry a hand-written
    inputSchema; `test_simple_text` comes first (header-validation calls the first listed tool with `{}`)."""
    functions = (*CONTENT_TOOLS, *ASKING_TOOLS, *DIAGNOSTIC_TOOLS)
    tools = [Tool.from_function(fn, structured_output=False) for fn in functions]
    tools.append(json_schema_2020_12_tool())
    tasks = TasksExtension()
    server: MCPServer = MCPServer(
        NAME, version=VERSION, instructions="Fixtures for the MCP conformance suite's server scenarios.",
        tools=tools, cache_hints=CACHE_HINTS, log_level="WARNING", extensions=[tasks], lifespan=tasks.lifespan,
    )
    register_catalog(server)
    return server


def bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve_http(host: str, port: int) -> bool:
    """Serve until stopped (SIGINT or SIGTERM); False if the app never started."""
    import uvicorn

    app = build().streamable_http_app(event_store=MemoryEventStore(), retry_interval=RETRY_MS, host=host)
    sock = bound_socket(host, port)
    real_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False,
                                           timeout_graceful_shutdown=1))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        while not server.started:
            if server.should_exit:
                return False
            await anyio.sleep(0.005)
        shown = f"[{host}]" if ":" in host else host
        print(f"listening on http://{shown}:{real_port}/mcp", flush=True)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.mcp_conformance_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001, help="0 picks a free port (printed when listening)")
    parser.add_argument("--stdio", action="store_true", help="serve the same fixtures over stdin/stdout")
    args = parser.parse_args(argv)
    # The fixtures exercise logging and sampling, which the SDK marks deprecated as of 2026-07-28.
    warnings.simplefilter("ignore", MCPDeprecationWarning)
    if args.stdio:
        build().run("stdio")
        return
    with contextlib.suppress(KeyboardInterrupt):
        if not anyio.run(serve_http, args.host, args.port):
            raise SystemExit("the server did not start")


if __name__ == "__main__":
    main()
