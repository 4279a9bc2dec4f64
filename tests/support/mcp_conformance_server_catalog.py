"""The conformance upstream's resources, prompts and completions, and its handlers for the 2025-11-25
methods MCPServer has no decorator for (logging/setLevel, resources/subscribe and unsubscribe)."""

from __future__ import annotations

import base64
import json

from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    PromptReference,
    ResourceTemplateReference,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextResourceContents,
    UnsubscribeRequestParams,
)

from tests.support.mcp_conformance_server_mrtr import test_input_required_result_prompt
from tests.support.mcp_conformance_server_tools import PNG, log_levels, session_key, text

# resources/subscribe per 2025-11-25 session: the URIs a client watches (nothing here ever changes them).
subscriptions: dict[str | None, set[str]] = {}

# What completion/complete offers, by argument name; values starting with what the client typed come back.
SUGGESTIONS = {
    "arg1": ["paris", "park", "party", "test", "testing"],
    "arg2": ["world", "wonder", "work"],
    "resourceUri": ["test://static-text", "test://static-binary", "test://watched-resource"],
    "id": ["123", "456", "789"],
}


def static_text() -> str:
    return "This is the content of the static text resource."


def static_binary() -> bytes:
    return base64.b64decode(PNG)


def template_data(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


def watched() -> str:
    return "Watched resource content"


def test_simple_prompt() -> list[Message]:
    return [UserMessage(content=text("This is a simple prompt for testing."))]


def test_prompt_with_arguments(arg1: str, arg2: str) -> list[Message]:
    return [UserMessage(content=text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))]


def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:
    contents = TextResourceContents(uri=resourceUri, mime_type="text/plain",
                                    text="Embedded resource content for testing.")
    return [UserMessage(content=EmbeddedResource(type="resource", resource=contents)),
            UserMessage(content=text("Please process the embedded resource above."))]


def test_prompt_with_image() -> list[Message]:
    return [UserMessage(content=ImageContent(type="image", data=PNG, mime_type="image/png")),
            UserMessage(content=text("Please analyze the image above."))]


async def complete(ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument,
                   context: CompletionContext | None) -> Completion:
    values = [v for v in SUGGESTIONS.get(argument.name, []) if v.startswith(argument.value)]
    return Completion(values=values, total=len(values), has_more=False)


async def set_level(ctx: ServerRequestContext, params: SetLevelRequestParams) -> EmptyResult:
    log_levels[session_key(getattr(ctx.request, "headers", None))] = params.level
    return EmptyResult()


async def subscribe(ctx: ServerRequestContext, params: SubscribeRequestParams) -> EmptyResult:
    subscriptions.setdefault(session_key(getattr(ctx.request, "headers", None)), set()).add(str(params.uri))
    return EmptyResult()


async def unsubscribe(ctx: ServerRequestContext, params: UnsubscribeRequestParams) -> EmptyResult:
    subscriptions.get(session_key(getattr(ctx.request, "headers", None)), set()).discard(str(params.uri))
    return EmptyResult()


async def test_touch_resource(uri: str, ctx: Context) -> str:
    """Announces that `uri` changed (notifications/resources/updated, on the session's own stream)
    when the calling session subscribed to it; not a suite fixture: the gateway's own tests use it."""
    if uri not in subscriptions.get(session_key(ctx.headers), set()):
        return f"not subscribed to {uri}"
    await ctx.session.send_resource_updated(uri)
    return f"announced {uri}"


def register_catalog(server: MCPServer) -> None:
    server.tool(description="Announces an update of a subscribed resource")(test_touch_resource)
    server.resource("test://static-text", name="static-text", mime_type="text/plain",
                    description="A static text resource")(static_text)
    server.resource("test://static-binary", name="static-binary", mime_type="image/png",
                    description="A static binary resource (a 1x1 PNG)")(static_binary)
    server.resource("test://template/{id}/data", name="template-data", mime_type="application/json",
                    description="A resource template: the id is substituted into JSON")(template_data)
    server.resource("test://watched-resource", name="watched-resource", mime_type="text/plain",
                    description="A resource clients may subscribe to")(watched)
    server.prompt(description="A simple prompt without arguments")(test_simple_prompt)
    server.prompt(description="A prompt with two required arguments")(test_prompt_with_arguments)
    server.prompt(description="A prompt that embeds the resource it is given")(test_prompt_with_embedded_resource)
    server.prompt(description="A prompt with an image")(test_prompt_with_image)
    server.prompt(description="A prompt that needs elicited context first (SEP-2322)")(
        test_input_required_result_prompt)
    server.completion()(complete)  # type: ignore[no-untyped-call]  # the SDK's decorator is unannotated
    # MCPServer has no public hook for these three; its low-level server takes them by method name.
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
