"""The MCP gateway: upstream MCP servers (Streamable HTTP in both protocol eras, stdio subprocesses)
aggregated behind `/mcp`, with per-key tool permissions."""
