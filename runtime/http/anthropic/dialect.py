"""The Anthropic Messages dialect (`POST /v1/messages`): the hook through which the routing loop
serves Anthropic clients from any target.

An Anthropic target gets the client's body untouched but for `model` (and a default `max_tokens`),
and its answers and streams go back verbatim. Any other target gets the request translated to
OpenAI's shape for that target's capabilities (`runtime.http.anthropic.request`, by the rules table of
`runtime.upstream.translation`), sent through its own adapter like an OpenAI request, and its answer
translated back into a Messages answer or Anthropic's stream events (`runtime.http.anthropic.messages`). Errors
before the answer starts use Anthropic's envelope (rendered by the app); errors mid-stream its
`error` event.
"""

from __future__ import annotations

from typing import Any

from sidegate.runtime.errors import BadRequest, GatewayError
from sidegate.runtime.http.anthropic.messages import (
    OpenAIToAnthropicStream,
    anthropic_error_event,
    openai_to_anthropic_response,
)
from sidegate.runtime.http.anthropic.request import translate
from sidegate.runtime.plan import Family
from sidegate.runtime.routing.call import Call, json_object
from sidegate.runtime.routing.state import Deployment
from sidegate.runtime.upstream.adapter import ChainedStream, StreamTranslator
from sidegate.runtime.upstream.openai_wire import Usage
from sidegate.runtime.upstream.providers.anthropic import AnthropicRelay, message_usage, passthrough_request
from sidegate.runtime.upstream.providers.common import loads_upstream
from sidegate.runtime.upstream.tokens import REPLY_OVERHEAD
from sidegate.runtime.upstream.translation import TargetView
from sidegate.runtime.upstream.transport import UpstreamRequest
from sidegate.runtime.upstream.urlpath import check_model_name
from sidegate.runtime.upstream.usage_check import or_absent

__all__ = ["CLIENT_HEADERS", "MessagesDialect", "client_headers", "parse_messages"]

CLIENT_HEADERS = (b"anthropic-version", b"anthropic-beta")
"""Client headers an Anthropic target receives as sent."""


def client_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The Anthropic client headers of a request that go along to an Anthropic upstream."""
    return {k.decode(): v.decode("latin-1") for k, v in headers if k in CLIENT_HEADERS}


def parse_messages(body: bytes, *, count: bool = False) -> dict[str, Any]:
    """A Messages request's JSON object, with the fields Anthropic requires checked (`max_tokens`
    is not part of a count_tokens request)."""
    data = json_object(body)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: field required (a non-empty string)", param="model")
    check_model_name(model)
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("messages: field required (an array)", param="messages")
    if count:
        return data
    if not messages:
        raise BadRequest("messages: at least one message is required", param="messages")
    tokens = data.get("max_tokens")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise BadRequest("max_tokens: field required (a positive integer)", param="max_tokens")
    stream = data.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("stream: must be a boolean", param="stream")
    return data


class MessagesDialect:
    """One `/v1/messages` request: its body, the client headers an Anthropic target keeps, and (built
    on the first attempt on each non-Anthropic target) its translation for that target."""

    __slots__ = ("_openai", "body", "call", "dropped", "headers", "model")

    def __init__(self, body: dict[str, Any], headers: dict[str, str], call: Call | None = None) -> None:
        self.body = body
        self.headers = headers
        self.call = call
        """The request's record: its prompt estimate, and where the dropped fields are noted."""
        self.model: str = body["model"]
        self.dropped: tuple[str, ...] = ()
        """Top-level fields the last translated attempt dropped (`x-sidegate-dropped`)."""
        self._openai: dict[str, dict[str, Any]] = {}

    def openai_body(self, dep: Deployment) -> dict[str, Any]:
        """The request in OpenAI's chat shape for `dep`'s target (400 for what it cannot take)."""
        key = dep.target.id
        body = self._openai.get(key)
        if body is None:
            body, dropped = translate(self.body, TargetView.of(dep.target, dep.provider.family))
            # Usage on streams is asked for where the provider type supports it (request_body does).
            body.pop("stream_options", None)
            self._openai[key] = body
            self.dropped = tuple(dropped)
            if self.call is not None:
                self.call.dropped = self.dropped
        return body

    def request(self, dep: Deployment, model: str) -> UpstreamRequest:
        """Pass-through to an Anthropic target; otherwise the target's adapter on the translation."""
        url = dep.url("chat", model)
        if dep.provider.family is Family.ANTHROPIC:
            if self.call is not None:
                self.call.dropped = ()
            return passthrough_request(dep.provider, dep.target, url, dep.headers, model, self.body, self.headers)
        return dep.adapter.request(dep.provider, dep.target, url, dep.headers, "chat", model, self.openai_body(dep))

    def response(self, dep: Deployment, model: str, body: bytes) -> tuple[bytes, Usage | None]:
        """An Anthropic target's answer as it is; any other one's translated to a Messages answer."""
        if dep.provider.family is Family.ANTHROPIC:
            obj = loads_upstream(body)
            usage = obj.get("usage") if isinstance(obj, dict) else None
            if not isinstance(usage, dict):
                return body, None
            found: dict[str, Any] = usage
            return body, or_absent(lambda: message_usage(found))
        openai, usage = dep.adapter.response("chat", body, model=model, request=self.openai_body(dep))
        return openai_to_anthropic_response(openai, self.model), usage

    def stream(self, dep: Deployment, model: str) -> StreamTranslator:
        """Anthropic's events relayed whole, or the target's stream translated into them
        (`message_start` reporting the prompt estimate, `message_delta` the upstream's count)."""
        if dep.provider.family is Family.ANTHROPIC:
            return AnthropicRelay()
        estimate = max(0, self.call.prompt_estimate - REPLY_OVERHEAD) if self.call is not None else 0
        outer = OpenAIToAnthropicStream(self.model, estimate)
        return ChainedStream(dep.adapter.stream("chat", True, model=model), outer)

    def error_event(self, err: GatewayError) -> bytes:
        """Anthropic's `event: error`."""
        return anthropic_error_event(err)

    async def complete(self) -> None:
        """Nothing to keep: Messages answers are not stored."""
