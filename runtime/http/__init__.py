"""The HTTP surfaces: the ASGI app and its OpenAI routes (`app`), the governance glue that admits
and settles calls (`access`), the admin API (`admin`), the Anthropic surface (`anthropic/`), the
Gemini-native surface (`gemini/`), provider pass-through routes (`passthrough`, `passthrough_usage`),
the MCP and A2A endpoints (`mcp_endpoint`, `a2a_endpoint`), the media routes (`media`: images,
audio, moderations, rerank) and uploads (`multipart_form`). Errors become responses here.

May import: every room below it (everything but `runtime.server`).
"""
