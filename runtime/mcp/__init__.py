"""The MCP gateway: upstream MCP servers (Streamable HTTP in both protocol eras, stdio subprocesses)
aggregated behind `/mcp`, with per-key tool permissions.

Lives here: the hub of upstream sessions (`hub`), one module per upstream transport
(`http_upstream`, `sse_upstream`, `stdio_upstream`, over `stream_upstream`/`upstream`), the
aggregated view with namespacing and pagination (`aggregate`), the protocol's shapes (`protocol`,
`sse`, the `Mcp-Param-*` headers of `param_headers`), OAuth client credentials (`oauth`) and
permissions. The HTTP endpoint that fronts them is `runtime.http.mcp_endpoint`.
May import: the plan, `runtime.errors`, `runtime.observe`, `runtime.governance` (keys).
"""
