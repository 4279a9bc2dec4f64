"""An upstream MCP server written with the official SDK, run as a subprocess by the MCP tests.

    python tests/support/mcp_server.py NAME stdio
    python tests/support/mcp_server.py NAME http PORT [--stateless] [--tokens-file PATH]
    python tests/support/mcp_server.py NAME sse PORT

Works with mcp 2.x (`MCPServer`) and mcp 1.x (`FastMCP`), whichever is installed. Every server has
tools `add`, `fail` (raises: an `isError` result), `whoami`, `caps` (the client's declared
capabilities), `regional` (its argument marked `x-mcp-header`) and `drop_table` (the permission tests
deny it), a prompt `greet` (its `who` argument completes to ada, alan, grace) and a resource
`data://NAME/info`.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import anyio
from pydantic import Field

try:
    from mcp.server.mcpserver import Context
    from mcp.server.mcpserver import MCPServer as Server
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import Context  # type: ignore[no-redef]
    from mcp.server.fastmcp import FastMCP as Server  # type: ignore[no-redef]


def build(name: str, **settings: object) -> Server:
    server = Server(name, **settings)

    @server.tool(description=f"Add two integers ({name}).")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Always fails.")
    def fail(reason: str = "boom") -> str:
        raise ValueError(f"{name} failed: {reason}")

    @server.tool(description="Names this server.")
    def whoami() -> str:
        return name

    @server.tool(description="Answers for a region (mirrored in the Mcp-Param-Region header at 2026-07-28).")
    def regional(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        return f"served in {region}"

    @server.tool(description="The capabilities the calling client declared, by name.")
    def caps(ctx: Context) -> str:
        declared = ctx.client_capabilities if hasattr(ctx, "client_capabilities") else \
            ctx.request_context.session.client_params.capabilities  # mcp 1.x
        return ",".join(sorted((declared.model_dump(exclude_none=True) if declared else {}).keys()))

    @server.tool(description="Sleeps, then answers.")
    async def nap(seconds: float) -> str:
        await anyio.sleep(seconds)
        return "rested"

    @server.tool(description="A dangerous tool that restricted keys must never see.")
    def drop_table(table: str) -> str:
        return f"dropped {table}"

    @server.prompt(description="A greeting.")
    def greet(who: str) -> str:
        return f"Hello {who} from {name}"

    @server.resource(f"data://{name}/info", description="About this server.")
    def info() -> str:
        return f"{name} info"

    @server.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> Any:
        from mcp.types import Completion

        if getattr(ref, "name", None) == "greet" and argument.name == "who":
            people = ["ada", "alan", "grace"]
            return Completion(values=[p for p in people if p.startswith(argument.value)])
        return None

    return server


def guarded(app: Any, tokens_file: str) -> Any:
    """Answer 401 unless the request's bearer token is one of the file's lines (re-read each time)."""

    async def guard(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            with open(tokens_file) as f:
                allowed = {"Bearer " + line.strip() for line in f if line.strip()}
            given = dict(scope["headers"]).get(b"authorization", b"").decode()
            if given not in allowed:
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"error":"invalid_token"}'})
                return
        await app(scope, receive, send)

    return guard


def main() -> None:
    name, transport = sys.argv[1], sys.argv[2]
    if transport == "stdio":
        build(name).run("stdio")
        return
    port = int(sys.argv[3])
    stateless = "--stateless" in sys.argv
    modern = Server.__name__ != "FastMCP"
    if "--tokens-file" in sys.argv:
        import uvicorn

        server = build(name)
        app = server.streamable_http_app(stateless_http=stateless, json_response=stateless)
        uvicorn.run(guarded(app, sys.argv[sys.argv.index("--tokens-file") + 1]), host="127.0.0.1", port=port,
                    log_level="warning")
    elif transport == "sse":
        if modern:
            build(name).run("sse", host="127.0.0.1", port=port)
        else:
            build(name, host="127.0.0.1", port=port).run("sse")
    elif modern:
        build(name).run("streamable-http", host="127.0.0.1", port=port, stateless_http=stateless,
                        json_response=stateless)
    else:
        server = build(name, host="127.0.0.1", port=port, stateless_http=stateless, json_response=stateless)
        server.run("streamable-http")


if __name__ == "__main__":
    main()
