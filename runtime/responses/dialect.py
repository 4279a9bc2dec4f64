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
from dataclasses import dataclass
from typing import Any

import orjson

from sidegate.runtime.errors import BadRequest, GatewayError
from sidegate.runtime.responses.items import new_id
from sidegate.runtime.responses.output import from_chat, shell, usage_of_response
from sidegate.runtime.responses.request import forced_builtin, to_chat
from sidegate.runtime.responses.stream import ChatToResponsesStream, sse_event
from sidegate.runtime.routing.state import Deployment
from sidegate.runtime.upstream.adapter import ChainedStream, StreamTranslator
from sidegate.runtime.upstream.openai_wire import Usage, request_body, responses_url
from sidegate.runtime.upstream.providers.common import SseParser, loads_upstream
from sidegate.runtime.upstream.transport import UpstreamRequest

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


@dataclass(slots=True)
class _Answer:
    """One attempt's answer: who served it and its response (whole, or made by its stream translator)."""

    provider: str
    passthrough: bool
    final: dict[str, Any] | None = None
    relay: _Relay | None = None
    translator: ChatToResponsesStream | None = None

    def response(self) -> dict[str, Any] | None:
        if self.relay is not None:
            return self.relay.final
        if self.translator is not None:
            return self.translator.final
        return self.final


class ResponsesDialect:
    """One `/v1/responses` request: its body and items, the stored conversation it continues, and
    the response it produced (`finished()`; `provider` and `passthrough` say who served it).

    With hedging, attempts run side by side: each keeps its own answer, and the one that completes
    (the routing loop calls `complete()` for the attempt that answers the client) is the response.
    """

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
        self.on_complete: Callable[[], Awaitable[None]] | None = None
        """Called once the answer is whole, before its last bytes go out (the store keeps it)."""
        self._chat: dict[str, Any] | None = None
        self._answers: list[_Answer] = []
        self._latest: _Answer | None = None
        """The attempt whose whole answer was translated last (the one answering, when it completes)."""
        self._winner: _Answer | None = None

    @property
    def provider(self) -> str | None:
        """The provider that served the answer."""
        return self._winner.provider if self._winner is not None else None

    @property
    def passthrough(self) -> bool:
        """Whether the answer came from an upstream's own Responses API (which holds it too)."""
        return self._winner is not None and self._winner.passthrough

    async def complete(self) -> None:
        """The answering attempt's answer is whole: keep it (once), before the client can ask for it."""
        if self._winner is not None:
            return
        done = [a for a in self._answers if (a.relay or a.translator) is not None and a.response() is not None]
        self._winner = done[0] if done else self._latest
        if self.on_complete is not None:
            await self.on_complete()

    def finished(self) -> dict[str, Any] | None:
        """The response this request produced, once it is complete."""
        return self._winner.response() if self._winner is not None else None

    def chat_body(self) -> dict[str, Any]:
        """The conversation as a chat request (400 for what a chat backend cannot do)."""
        if self._chat is None:
            forced = forced_builtin(self.body)
            if forced is not None:
                raise BadRequest(f"tool_choice requires the built-in tool '{forced}', which runs only on OpenAI "
                                 "and Azure deployments", param="tool_choice")
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
        answer = _Answer(dep.provider.name, dep.provider.type in PASSTHROUGH)
        self._answers.append(answer)
        if answer.passthrough:
            obj = loads_upstream(body)
            answer.final = obj if isinstance(obj, dict) else None
            self._latest = answer
            return body, usage_of_response(obj)
        openai, usage = dep.adapter.response("chat", body, model=model, request=self.chat_body())
        answer.final, _ = from_chat(openai, shell(self.body, self.id, self.model))
        self._latest = answer
        return orjson.dumps(answer.final), usage

    def stream(self, dep: Deployment, model: str) -> StreamTranslator:
        """The upstream's Responses events relayed, or the target's chat stream translated into them."""
        answer = _Answer(dep.provider.name, dep.provider.type in PASSTHROUGH)
        self._answers.append(answer)
        if answer.passthrough:
            answer.relay = _Relay()
            return answer.relay
        answer.translator = ChatToResponsesStream(shell(self.body, self.id, self.model))
        return ChainedStream(dep.adapter.stream("chat", True, model=model), answer.translator)

    def error_event(self, err: GatewayError) -> bytes:
        """`response.failed` for a translated stream; OpenAI's `error` event for a relayed one."""
        for answer in self._answers:
            if answer.translator is not None and answer.translator.started:
                return answer.translator.failed(err)
        return sse_event({"type": "error", "code": err.code, "message": err.message, "param": err.param,
                          "sequence_number": 0})
