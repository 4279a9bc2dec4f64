"""The Responses dialect (`POST /v1/responses`): the hook through which the routing loop serves
Responses clients from any target, with the same routing, retries, limits and spend as chat.

An OpenAI or Azure target gets the client's body with `model` rewritten (built-in tools,
`previous_response_id` and all), and its answer and stream go back as they arrive. Any other target
gets the conversation (the stored turns of `previous_response_id`, then this input) as a chat
request through its own adapter, and its answer translated into a response object or the Responses
event sequence. Either way the finished response is kept (`final`) for the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from runtime.errors import BadRequest, GatewayError
from runtime.responses.items import new_id
from runtime.responses.output import from_chat, shell, usage_of_response
from runtime.responses.request import builtin_tools, to_chat
from runtime.responses.stream import ChatToResponsesStream, sse_event
from runtime.routing.state import Deployment
from runtime.upstream.adapter import StreamTranslator
from runtime.upstream.openai_wire import Usage, request_body, responses_url
from runtime.upstream.providers.common import SseParser, loads_upstream
from runtime.upstream.transport import UpstreamRequest

__all__ = ["PASSTHROUGH", "ResponsesDialect"]

PASSTHROUGH = frozenset({"openai", "azure"})
"""Provider types that serve `/responses` themselves (OpenAI-compatible servers get chat completions)."""
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class _Relay:
    """A pass-through stream: bytes relayed untouched; the terminal event read for usage and the
    finished response."""

    __slots__ = ("_parser", "done", "final", "usage")

    def __init__(self) -> None:
        self._parser = SseParser()
        self.usage: Usage | None = None
        self.done = False
        self.final: dict[str, Any] | None = None

    def feed(self, data: bytes) -> bytes:
        for event in self._parser.feed(data):
            if event.event in _TERMINAL or not event.event:
                try:
                    obj = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict) and obj.get("type") in _TERMINAL:
                    response = obj.get("response")
                    self.final = response if isinstance(response, dict) else None
                    self.usage = usage_of_response(response)
                    self.done = True
        return data


class _Chained:
    """The target adapter's stream translator (upstream -> OpenAI chunks), then chunks -> Responses events."""

    __slots__ = ("_inner", "done", "outer", "usage")

    def __init__(self, inner: StreamTranslator, outer: ChatToResponsesStream) -> None:
        self._inner = inner
        self.outer = outer
        self.usage: Usage | None = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        chunks = self._inner.feed(data)
        out = self.outer.feed(chunks) if chunks else b""
        self.usage = self._inner.usage or self.outer.usage
        self.done = self._inner.done and self.outer.done
        return out


class ResponsesDialect:
    """One `/v1/responses` request: its body and items, the stored conversation it continues, and
    the response it produced (`final`, with `provider`: who served it)."""

    def __init__(self, body: dict[str, Any], items: list[dict[str, Any]], history: list[dict[str, Any]],
                 previous_provider: str | None = None) -> None:
        self.body = body
        self.items = items
        self.history = history
        """Items of the stored turns before this one (oldest first)."""
        self.previous_provider = previous_provider
        """The provider that holds `previous_response_id` upstream (a pass-through answer), if any."""
        self.id = new_id("resp")
        self.model: str = body["model"]
        self.final: dict[str, Any] | None = None
        self.provider: str | None = None
        self._chat: dict[str, Any] | None = None
        self._stream: ChatToResponsesStream | None = None
        self._relay: _Relay | None = None
        self.on_complete: Callable[[], Awaitable[None]] | None = None
        """Called once the answer is whole, before its last bytes go out (the store keeps it)."""

        self.passthrough = False
        """Whether the answer came from an upstream's own Responses API (which holds it too)."""
        self._completed = False

    async def complete(self) -> None:
        """The answer is whole: keep it (once), before the client can ask for it."""
        if self.on_complete is not None and not self._completed:
            self._completed = True
            await self.on_complete()

    def chat_body(self) -> dict[str, Any]:
        """The conversation as a chat request (400 for what a chat backend cannot do)."""
        if self._chat is None:
            tools = builtin_tools(self.body)
            if tools:
                raise BadRequest(f"the built-in tool '{tools[0]}' runs only on OpenAI and Azure deployments",
                                 param="tools")
            body = to_chat(self.body, [*self.history, *self.items])
            body.pop("stream_options", None)  # usage on streams is asked for by the adapter where it can be
            self._chat = body
        return self._chat

    def _passthrough_body(self, dep: Deployment, model: str) -> dict[str, Any]:
        body = {**self.body, "model": model}
        if body.get("previous_response_id") and self.previous_provider != dep.provider.name:
            # The upstream does not hold the earlier turns: send them as input instead.
            body.pop("previous_response_id")
            body["input"] = [*self.history, *self.items]
        return body

    def request(self, dep: Deployment, model: str) -> UpstreamRequest:
        """Pass-through to OpenAI and Azure targets; otherwise the target's adapter on the chat form."""
        if dep.provider.type in PASSTHROUGH:
            payload = request_body(self._passthrough_body(dep, model), model, dep.target.extra_body, False)
            return UpstreamRequest("POST", responses_url(dep.provider), dep.headers, payload,
                                   dep.provider.connect_timeout)
        return dep.adapter.request(dep.provider, dep.target, dep.url("chat", model), dep.headers, "chat", model,
                                   self.chat_body())

    def response(self, dep: Deployment, model: str, body: bytes) -> tuple[bytes, Usage | None]:
        """A pass-through answer as it is; any other one translated into a response object."""
        self.provider = dep.provider.name
        self.passthrough = dep.provider.type in PASSTHROUGH
        if self.passthrough:
            obj = loads_upstream(body)
            self.final = obj if isinstance(obj, dict) else None
            return body, usage_of_response(obj)
        openai, usage = dep.adapter.response("chat", body, model=model, request=self.chat_body())
        self.final, _ = from_chat(openai, shell(self.body, self.id, self.model))
        return orjson.dumps(self.final), usage

    def stream(self, dep: Deployment, model: str) -> StreamTranslator:
        """The upstream's Responses events relayed, or the target's chat stream translated into them."""
        self.provider = dep.provider.name
        self.passthrough = dep.provider.type in PASSTHROUGH
        if self.passthrough:
            self._relay = _Relay()
            self._stream = None
            return self._relay
        self._relay = None
        self._stream = ChatToResponsesStream(shell(self.body, self.id, self.model))
        return _Chained(dep.adapter.stream("chat", True, model=model), self._stream)

    def finished(self) -> dict[str, Any] | None:
        """The response this request produced, once it is complete."""
        if self._relay is not None:
            return self._relay.final
        if self._stream is not None:
            return self._stream.final
        return self.final

    def error_event(self, err: GatewayError) -> bytes:
        """`response.failed` for a translated stream; OpenAI's `error` event for a relayed one."""
        if self._stream is not None:
            return self._stream.failed(err)
        return sse_event({"type": "error", "code": err.code, "message": err.message, "param": err.param,
                          "sequence_number": 0})
