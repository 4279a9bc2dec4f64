"""The conformance upstream's fixtures that ask the client for something: elicitation, sampling, roots.

Each is written once, in the 2026-07-28 multi-round-trip style (SEP-2322): it answers an
`InputRequiredResult` until it is called again with the `inputResponses` (and echoed `requestState`) it asked
for. The SDK seals `requestState` on the way out and rejects a tampered echo before a handler runs, so the
handlers see their own plaintext state. `bridged` carries the same handlers over the 2025-11-25 wire: there
each input request goes to the client as a server-to-client request on the call's own stream, and the handler
is run again with the answers, so the client sees a plain result.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.shared.message import ServerMessageMetadata
from mcp.types import (
    CallToolResult,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequest,
    InputRequiredResult,
    InputResponse,
    InputResponseRequestParams,
    ListRootsRequest,
    ListRootsResult,
    Result,
    SamplingMessage,
    TextContent,
)

from tests.support.mcp_conformance_server_tools import failure, is_modern

MAX_ROUNDS = 4  # how many times `bridged` re-runs a handler at 2025-11-25 before it gives up
ANSWER_TYPES: dict[str, type[Result]] = {
    "elicitation/create": ElicitResult, "sampling/createMessage": CreateMessageResult, "roots/list": ListRootsResult,
}
R = TypeVar("R")


def bridged(handler: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """At 2025-11-25, fulfil the handler's input requests with real server-to-client requests and run it again
    (up to MAX_ROUNDS times); at 2026-07-28 its InputRequiredResult goes to the client as it is."""

    @functools.wraps(handler)
    async def run(ctx: Context, **arguments: Any) -> Any:
        result: Any = await handler(ctx=ctx, **arguments)
        for _ in range(MAX_ROUNDS):
            if is_modern(ctx) or not isinstance(result, InputRequiredResult):
                return result
            metadata = ServerMessageMetadata(related_request_id=ctx.request_id)
            answers = {key: await ctx.session.send_request(request, ANSWER_TYPES[request.method], metadata=metadata)
                       for key, request in (result.input_requests or {}).items()}
            params = InputResponseRequestParams(input_responses=answers, request_state=result.request_state)
            ctx = Context(request_context=ctx.request_context, mcp_server=ctx.mcp_server, input_params=params)
            result = await handler(ctx=ctx, **arguments)
        return result if not isinstance(result, InputRequiredResult) else failure("the client never gave the input")

    return run


def form(message: str, properties: dict[str, Any], required: list[str] | None = None) -> ElicitRequest:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def ask(message: str, field: str, kind: str = "string") -> ElicitRequest:
    return form(message, {field: {"type": kind}}, [field])


def sample(prompt: str, max_tokens: int) -> CreateMessageRequest:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
    return CreateMessageRequest(params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens))


def response(ctx: Context, key: str) -> InputResponse | None:
    return (ctx.input_responses or {}).get(key)


def field(answer: InputResponse | None, name: str) -> Any:
    """The named field of an accepted elicitation answer, else None."""
    if isinstance(answer, ElicitResult) and answer.action == "accept" and answer.content:
        return answer.content.get(name)
    return None


def described(answer: ElicitResult) -> str:
    return f"action={answer.action}, content={json.dumps(answer.content or {}, sort_keys=True)}"


def needs(requests: Mapping[str, InputRequest], state: str | None = None) -> InputRequiredResult:
    return InputRequiredResult(input_requests=dict(requests), request_state=state)


# --- the 2025-11-25 interactive tools (sampling, elicitation, SEP-1034, SEP-1330) --------------------------

@bridged
async def test_sampling(prompt: str, ctx: Context) -> str | CallToolResult | InputRequiredResult:
    """Asks the client's model to answer `prompt` (sampling/createMessage, maxTokens 100)."""
    if ctx.client_capabilities is None or ctx.client_capabilities.sampling is None:
        return failure("The client did not declare the sampling capability")
    answer = response(ctx, "reply")
    if not isinstance(answer, CreateMessageResult):
        return needs({"reply": sample(prompt, 100)})
    said = answer.content.text if isinstance(answer.content, TextContent) else f"<{answer.content.type}>"
    return f"LLM response: {said}"


@bridged
async def test_elicitation(message: str, ctx: Context) -> str | CallToolResult | InputRequiredResult:
    """Asks the user for a username and an email (elicitation/create)."""
    if ctx.client_capabilities is None or ctx.client_capabilities.elicitation is None:
        return failure("The client did not declare the elicitation capability")
    answer = response(ctx, "user")
    if isinstance(answer, ElicitResult):
        return f"User response: {described(answer)}"
    properties = {"username": {"type": "string", "description": "User's response"},
                  "email": {"type": "string", "description": "User's email address"}}
    return needs({"user": form(message, properties, ["username", "email"])})


@bridged
async def test_elicitation_sep1034_defaults(ctx: Context) -> str | InputRequiredResult:
    """Elicits one field of each primitive type, each with a default (SEP-1034)."""
    answer = response(ctx, "profile")
    if isinstance(answer, ElicitResult):
        return f"Elicitation completed: {described(answer)}"
    properties = {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {"type": "string", "description": "User status", "enum": ["active", "inactive", "pending"],
                   "default": "active"},
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    }
    return needs({"profile": form("Please review your profile", properties)})


def _titled(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"const": value, "title": title} for value, title in pairs]


@bridged
async def test_elicitation_sep1330_enums(ctx: Context) -> str | InputRequiredResult:
    """Elicits the five enum shapes of SEP-1330: untitled, titled (oneOf), legacy enumNames, and the untitled
    and titled (items.anyOf) multi-selects."""
    answer = response(ctx, "choices")
    if isinstance(answer, ElicitResult):
        return f"Elicitation completed: {described(answer)}"
    options = ["option1", "option2", "option3"]
    properties = {
        "untitledSingle": {"type": "string", "description": "Pick one", "enum": options},
        "titledSingle": {"type": "string", "description": "Pick one (titled)",
                         "oneOf": _titled(("value1", "First Option"), ("value2", "Second Option"),
                                          ("value3", "Third Option"))},
        "legacyEnum": {"type": "string", "description": "Pick one (legacy titles)", "enum": ["opt1", "opt2", "opt3"],
                       "enumNames": ["Option One", "Option Two", "Option Three"]},
        "untitledMulti": {"type": "array", "description": "Pick any", "items": {"type": "string", "enum": options}},
        "titledMulti": {"type": "array", "description": "Pick any (titled)",
                        "items": {"anyOf": _titled(("value1", "First Choice"), ("value2", "Second Choice"),
                                                   ("value3", "Third Choice"))}},
    }
    return needs({"choices": form("Choose your options", properties)})


@bridged
async def test_streaming_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Reports progress, then asks for a name: never as an independent request on a 2026-07-28 response stream
    (server-stateless probes that), only as an InputRequiredResult."""
    await ctx.report_progress(0, 1, "asking for a name")
    name = field(response(ctx, "name"), "name")
    return needs({"name": ask("What is your name?", "name")}) if name is None else f"Hello, {name}!"


# --- the 2026-07-28 InputRequiredResult scenarios (SEP-2322) -----------------------------------------------

@bridged
async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Asks for a name (key user_name), then greets it."""
    name = field(response(ctx, "user_name"), "name")
    return needs({"user_name": ask("What is your name?", "name")}) if name is None else f"Hello, {name}!"


@bridged
async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
    """Asks the client's model a question (key capital_question), then repeats the answer."""
    answer = response(ctx, "capital_question")
    if not isinstance(answer, CreateMessageResult):
        return needs({"capital_question": sample("What is the capital of France?", 100)})
    said = answer.content.text if isinstance(answer.content, TextContent) else f"<{answer.content.type}>"
    return f"The model answered: {said}"


@bridged
async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
    """Asks for the client's roots (key client_roots), then lists them."""
    answer = response(ctx, "client_roots")
    if not isinstance(answer, ListRootsResult):
        return needs({"client_roots": ListRootsRequest()})
    return f"The client has {len(answer.roots)} root(s): {', '.join(str(root.uri) for root in answer.roots)}"


@bridged
async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
    """Asks for a confirmation with requestState "awaiting-confirm"; completes only when both come back."""
    if ctx.request_state == "awaiting-confirm" and isinstance(response(ctx, "confirm"), ElicitResult):
        return "state-ok: the confirmation arrived with the requestState this server issued"
    return needs({"confirm": ask("Please confirm", "ok", "boolean")}, "awaiting-confirm")


@bridged
async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
    """Asks for an elicitation, a sampling and the roots at once; completes when all three are answered."""
    requests: dict[str, InputRequest] = {
        "user_name": ask("What is your name?", "name"),
        "greeting": sample("Generate a greeting", 50),
        "client_roots": ListRootsRequest(),
    }
    if ctx.request_state == "three-inputs" and all(response(ctx, key) is not None for key in requests):
        return f"All inputs received, {field(response(ctx, 'user_name'), 'name')}."
    return needs(requests, "three-inputs")


@bridged
async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
    """Three rounds: a name (step1), then a colour (step2), then the answer; requestState carries the round."""
    state = json.loads(ctx.request_state) if ctx.request_state else {}
    colour_question = {"step2": ask("Step 2: What is your favorite color?", "color")}
    if state.get("round") == 2:
        colour = field(response(ctx, "step2"), "color")
        return needs(colour_question, ctx.request_state) if colour is None else f"{state.get('name')} likes {colour}."
    name = field(response(ctx, "step1"), "name") if state.get("round") == 1 else None
    if name is None:
        return needs({"step1": ask("Step 1: What is your name?", "name")}, json.dumps({"round": 1}))
    return needs(colour_question, json.dumps({"round": 2, "name": name}))


@bridged
async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
    """Issues requestState "untampered"; an altered echo never reaches this handler (the SDK rejects it)."""
    if ctx.request_state is None:
        return needs({"confirm": ask("Please confirm", "ok", "boolean")}, "untampered")
    return f"state-ok: {ctx.request_state}"


@bridged
async def test_input_required_result_capabilities(ctx: Context) -> str | InputRequiredResult:
    """Asks only for what the client declared in _meta clientCapabilities: sampling, elicitation, roots."""
    caps = ctx.client_capabilities
    requests: dict[str, InputRequest] = {}
    if caps is not None and caps.sampling is not None:
        requests["sample"] = sample("Say hello", 50)
    if caps is not None and caps.elicitation is not None:
        requests["ask"] = ask("What is your name?", "name")
    if caps is not None and caps.roots is not None:
        requests["roots"] = ListRootsRequest()
    if not requests:
        return "The client declared none of sampling, elicitation or roots, so there is nothing to ask"
    if all(response(ctx, key) is not None for key in requests):
        return "Every input the client could give arrived."
    return needs(requests)


@bridged
async def test_input_required_result_prompt(ctx: Context) -> list[Message] | InputRequiredResult:
    """A prompt that asks for its context (key user_context) before rendering."""
    context = field(response(ctx, "user_context"), "context")
    if context is None:
        return needs({"user_context": ask("What context should the prompt use?", "context")})
    return [UserMessage(content=f"Use the following context: {context}")]


ASKING_TOOLS = (test_sampling, test_elicitation, test_elicitation_sep1034_defaults, test_elicitation_sep1330_enums,
                test_streaming_elicitation, test_input_required_result_elicitation,
                test_input_required_result_sampling, test_input_required_result_list_roots,
                test_input_required_result_request_state, test_input_required_result_multiple_inputs,
                test_input_required_result_multi_round, test_input_required_result_tampered_state,
                test_input_required_result_capabilities)
