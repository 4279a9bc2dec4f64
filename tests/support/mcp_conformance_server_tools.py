"""The conformance upstream's tools that ask the client nothing: fixed content, logging and progress, SSE
polling, the diagnostics the 2026-07-28 scenarios probe, and the JSON Schema 2020-12 tool.

Tools are plain functions; `mcp_conformance_server.build` turns them into SDK `Tool`s in list order.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp.types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    LoggingLevel,
    TextContent,
    TextResourceContents,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"  # 1x1 red
WAV = "UklGRjQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YRAAAAAAAAAAAAAAAAAAAAAAAAAA"  # 8 samples of silence

LEVELS: tuple[LoggingLevel, ...] = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
# logging/setLevel per 2025-11-25 session (keyed by Mcp-Session-Id; None on stdio). At 2026-07-28 the SDK
# gates log delivery itself on the request's `_meta` log level, so nothing is kept for that era.
log_levels: dict[str | None, LoggingLevel] = {}


def session_key(headers: Any) -> str | None:
    return headers.get("mcp-session-id") if headers is not None else None


async def log(ctx: Context, message: str, level: LoggingLevel = "info") -> None:
    threshold = log_levels.get(session_key(ctx.headers), "debug")
    if LEVELS.index(level) >= LEVELS.index(threshold):
        await ctx.log(level, message, logger_name="conformance")


def is_modern(ctx: Context) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def text(value: str) -> TextContent:
    return TextContent(type="text", text=value)


def failure(message: str) -> CallToolResult:
    return CallToolResult(content=[text(message)], is_error=True)


# --- fixed content ---------------------------------------------------------------------------------------

def test_simple_text() -> str:
    """Returns one fixed text block."""
    return "This is a simple text response for testing."


def test_image_content() -> list[ContentBlock]:
    """Returns a 1x1 PNG image block."""
    return [ImageContent(type="image", data=PNG, mime_type="image/png")]


def test_audio_content() -> list[ContentBlock]:
    """Returns a short WAV audio block."""
    return [AudioContent(type="audio", data=WAV, mime_type="audio/wav")]


def test_embedded_resource() -> list[ContentBlock]:
    """Returns an embedded text resource."""
    contents = TextResourceContents(uri="test://embedded-resource", mime_type="text/plain",
                                    text="This is an embedded resource content.")
    return [EmbeddedResource(type="resource", resource=contents)]


def test_multiple_content_types() -> list[ContentBlock]:
    """Returns a text, an image and an embedded JSON resource, in that order."""
    contents = TextResourceContents(uri="test://mixed-content-resource", mime_type="application/json",
                                    text=json.dumps({"test": "data", "value": 123}))
    return [text("Multiple content types test:"), ImageContent(type="image", data=PNG, mime_type="image/png"),
            EmbeddedResource(type="resource", resource=contents)]


def test_error_handling() -> CallToolResult:
    """Always fails: an isError result."""
    return failure("This tool intentionally returns an error for testing")


async def test_tool_with_logging(ctx: Context) -> str:
    """Sends three info log notifications, 50 ms apart, while it runs."""
    await log(ctx, "Tool execution started")
    await anyio.sleep(0.05)
    await log(ctx, "Tool processing data")
    await anyio.sleep(0.05)
    await log(ctx, "Tool execution completed")
    return "Tool with logging executed successfully"


async def test_logging_tool(ctx: Context) -> str:
    """Logs at every level from debug to error; at 2026-07-28 only what the request's _meta log level allows."""
    for level in LEVELS[:5]:
        await log(ctx, f"{level} message from test_logging_tool", level)
    return "Logged at debug, info, notice, warning and error"


async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0, 50 and 100 of 100 against the request's progress token, 50 ms apart."""
    for step in (0, 50, 100):
        if step:
            await anyio.sleep(0.05)
        await ctx.report_progress(step, 100, f"Completed step {step} of 100")
    return "Progress reported: 0, 50, 100 of 100"


def test_x_mcp_header(
    region: Annotated[str, Field(description="Mirrored in the Mcp-Param-Region header (SEP-2243)",
                                 json_schema_extra={"x-mcp-header": "Region"})],
) -> str:
    """Echoes a parameter that 2026-07-28 clients also send as the Mcp-Param-Region header."""
    return f"region={region}"


async def test_reconnection(ctx: Context) -> str:
    """Closes its own SSE stream mid-call; the client resumes it with Last-Event-ID (SEP-1699)."""
    await log(ctx, "Before disconnect")
    await ctx.close_sse_stream()
    await anyio.sleep(0.2)
    await log(ctx, "After reconnect")
    return "Reconnection test completed"


CONTENT_TOOLS = (test_simple_text, test_image_content, test_audio_content, test_embedded_resource,
                 test_multiple_content_types, test_error_handling, test_tool_with_logging, test_logging_tool,
                 test_tool_with_progress, test_x_mcp_header, test_reconnection)


# --- diagnostics the 2026-07-28 server-stateless scenario probes ---------------------------------------

async def test_missing_capability(ctx: Context) -> str:
    """Needs the client's sampling capability; without it, a -32021 MissingRequiredClientCapability error."""
    caps = ctx.client_capabilities
    if caps is None or caps.sampling is None:
        raise MCPError(MISSING_REQUIRED_CLIENT_CAPABILITY, "This tool requires the client's sampling capability",
                       {"requiredCapabilities": {"sampling": {}}})
    return "The client declared sampling"


def _dynamic() -> str:
    """Registered and removed again by the list-changed triggers."""
    return "dynamic"


async def test_trigger_tool_change(ctx: Context) -> str:
    """Adds and removes a tool, then announces tools/list_changed to subscriptions/listen streams."""
    ctx.mcp_server.add_tool(_dynamic, name="test_dynamic_tool")
    ctx.mcp_server.remove_tool("test_dynamic_tool")
    await ctx.notify_tools_changed()
    return "tools changed"


async def test_trigger_prompt_change(ctx: Context) -> str:
    """Adds and removes a prompt, then announces prompts/list_changed to subscriptions/listen streams."""
    ctx.mcp_server.prompt(name="test_dynamic_prompt")(_dynamic)
    ctx.mcp_server.remove_prompt("test_dynamic_prompt")
    await ctx.notify_prompts_changed()
    return "prompts changed"


DIAGNOSTIC_TOOLS = (test_missing_capability, test_trigger_tool_change, test_trigger_prompt_change)


# --- SEP-1613 / SEP-2106 ----------------------------------------------------------------------------------

ADDRESS = {"$anchor": "addressDef", "type": "object",
           "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}
SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"address": ADDRESS},
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def _contact() -> str:
    """Tool with JSON Schema 2020-12 features."""
    return "contact details accepted"


def json_schema_2020_12_tool() -> Tool:
    """A tool whose inputSchema is the 2020-12 document above, verbatim ($schema, $defs with $anchor, $ref,
    allOf/anyOf, if/then/else, additionalProperties)."""
    tool = Tool.from_function(_contact, name="json_schema_2020_12_tool", structured_output=False)
    return tool.model_copy(update={"parameters": SCHEMA_2020_12})
