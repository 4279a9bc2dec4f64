"""The Gemini-native dialect: `POST /v1beta/models/{model}:generateContent` (and
`:streamGenerateContent?alt=sse`) routed through the plan's model groups to any backend.

The request is translated once to OpenAI's chat shape (`request.gemini_to_openai`) and each attempt's
target gets it through its own adapter, like an OpenAI request; the answer comes back through
`answer` as Gemini's `candidates` / `usageMetadata`. Errors are Google's envelope
(`{"error": {"code", "message", "status"}}`), before the answer and mid-stream alike.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson

from sidegate.runtime.asgi import Scope
from sidegate.runtime.errors import BadRequest, GatewayError, NotFound
from sidegate.runtime.http.gemini.answer import OpenAIToGeminiStream, openai_to_gemini_response
from sidegate.runtime.http.gemini.native import GeminiRelay, is_native, native_request, native_response
from sidegate.runtime.http.gemini.request import gemini_to_openai
from sidegate.runtime.routing.call import Call, json_object
from sidegate.runtime.routing.state import Deployment, Runtime
from sidegate.runtime.upstream.adapter import ChainedStream, StreamTranslator
from sidegate.runtime.upstream.openai_wire import Usage
from sidegate.runtime.upstream.transport import UpstreamRequest
from sidegate.runtime.upstream.urlpath import check_model_name

__all__ = ["GEMINI_PREFIXES", "GeminiDialect", "google_error_body", "google_key", "is_gemini", "parse_gemini"]

GEMINI_PREFIXES = ("/v1beta/models/", "/v1/models/")
_METHODS = {"generateContent": False, "streamGenerateContent": True}
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
           500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def is_gemini(method: str, path: str) -> bool:
    """Whether a request is a Gemini `generateContent` call (`GET /v1/models/x` stays OpenAI's)."""
    return method == "POST" and path.startswith(GEMINI_PREFIXES) and ":" in path


def google_key(scope: Scope) -> str | None:
    """The key google-genai presents: `x-goog-api-key`, or the `key` query parameter."""
    for name, value in scope["headers"]:
        if name == b"x-goog-api-key" and value.strip():
            return str(value.decode("latin-1").strip())
    query: bytes = scope.get("query_string", b"")
    for name, value in parse_qsl(query.decode("latin-1")):
        if name == "key":
            return value
    return None


def _envelope(err: GatewayError) -> dict[str, Any]:
    status = err.status if err.status in _STATUS else (500 if err.status >= 500 else 400)
    return {"error": {"code": status, "message": err.message, "status": _STATUS[status]}}


def google_error_body(err: GatewayError) -> bytes:
    """Google's error envelope: `{"error": {"code": 400, "message": ..., "status": "INVALID_ARGUMENT"}}`."""
    return orjson.dumps(_envelope(err))


def _target(scope: Scope) -> tuple[str, bool]:
    """The model name and whether the answer streams, from the path and `alt`."""
    path: str = scope["path"]
    prefix = next(p for p in GEMINI_PREFIXES if path.startswith(p))
    model, _, method = path[len(prefix):].rpartition(":")
    if method not in _METHODS:
        raise NotFound(f"no route for POST {path} (Gemini methods served: generateContent, streamGenerateContent)")
    if not model:
        raise BadRequest("the model name is missing from the path", param="model")
    check_model_name(model)
    stream = _METHODS[method]
    alt = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get("alt")
    if stream and alt != "sse":
        raise BadRequest("streamGenerateContent is served as server-sent events only: add ?alt=sse", param="alt")
    return model, stream


def _gemini_only(rt: Runtime, model: str) -> bool:
    """Whether every deployment that may serve `model` (its group's and its fallbacks') speaks Gemini."""
    route = rt.routes.resolve(model)
    if route is None:
        return False
    names = (route.group.name, *route.group.fallbacks)
    return all(is_native(d.provider.family, model if d.target.model == "*" else d.target.model)
               for name in names for d in rt.deployments.get(name, ()))


def _text_view(data: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """A request only Gemini can take, seen as OpenAI chat by routing, limits and guardrails: its text."""
    messages: list[dict[str, Any]] = []
    contents = data.get("contents")
    for content in contents if isinstance(contents, list) else ():
        parts = content.get("parts") if isinstance(content, dict) else None
        text = "".join(p["text"] for p in parts or () if isinstance(p, dict) and isinstance(p.get("text"), str))
        role = "assistant" if isinstance(content, dict) and content.get("role") == "model" else "user"
        messages.append({"role": role, "content": text})
    out: dict[str, Any] = {"model": model, "messages": messages or [{"role": "user", "content": ""}]}
    generation = data.get("generationConfig")
    limit = generation.get("maxOutputTokens") if isinstance(generation, dict) else None
    if isinstance(limit, int):
        out["max_tokens"] = limit
    if stream:
        out["stream"] = True
    return out


def parse_gemini(body: bytes, scope: Scope, call: Call, rt: Runtime | None = None) -> tuple[dict[str, Any],
                                                                                              GeminiDialect]:
    """The request in OpenAI's chat shape (what routing, limits and guardrails read) and its dialect.

    What the translation refuses is still served when only Gemini targets may serve the model (they
    get the client's own body): routing then reads the request's text."""
    model, stream = _target(scope)
    data = json_object(body)
    try:
        openai, dropped = gemini_to_openai(data, model, stream)
    except BadRequest as refused:
        if rt is None or not _gemini_only(rt, model):
            raise
        dialect = GeminiDialect(_text_view(data, model, stream), model, data, call)
        dialect.refusal = refused
        return dialect.body, dialect
    call.dropped = dropped
    return openai, GeminiDialect(openai, model, data, call)


class GeminiDialect:
    """One Gemini request: a Gemini target (AI Studio, Google's models on Vertex AI) gets the client's
    own body and its answer goes back as it is; any other gets the OpenAI translation through its own
    adapter."""

    __slots__ = ("body", "call", "dropped", "model", "native", "refusal")

    def __init__(self, body: dict[str, Any], model: str, native: dict[str, Any] | None = None,
                 call: Call | None = None) -> None:
        self.body = body
        self.model = model
        self.native = native
        """The client's Gemini body (None: every target is translated)."""
        self.call = call
        self.dropped = call.dropped if call is not None else ()
        self.refusal: BadRequest | None = None
        """Why the request could not be translated (only Gemini targets may serve it)."""

    def _native(self, dep: Deployment, model: str) -> bool:
        return self.native is not None and is_native(dep.provider.family, model)

    def request(self, dep: Deployment, model: str) -> UpstreamRequest:
        """The client's body to a Gemini target; the target's adapter on the translation otherwise."""
        if self.call is not None:
            self.call.dropped = () if self._native(dep, model) else self.dropped
        if self.native is not None and self._native(dep, model):
            return native_request(dep, model, self.native, self.body.get("stream") is True)
        if self.refusal is not None:
            raise self.refusal
        return dep.adapter.request(dep.provider, dep.target, dep.url("chat", model), dep.headers, "chat", model,
                                   self.body)

    def response(self, dep: Deployment, model: str, body: bytes) -> tuple[bytes, Usage | None]:
        """A Gemini target's answer as it is; any other one's in OpenAI's shape, then as Gemini's."""
        if self._native(dep, model):
            return native_response(body)
        openai, usage = dep.adapter.response("chat", body, model=model, request=self.body)
        return openai_to_gemini_response(openai, self.model), usage

    def stream(self, dep: Deployment, model: str) -> StreamTranslator:
        """A Gemini target's events relayed; any other's as OpenAI chunks (usage kept), then Gemini's."""
        if self._native(dep, model):
            return GeminiRelay()
        return ChainedStream(dep.adapter.stream("chat", True, model=model), OpenAIToGeminiStream(self.model))

    def error_event(self, err: GatewayError) -> bytes:
        """Google's error envelope as the stream's last event."""
        return b"data: " + orjson.dumps(_envelope(err)) + b"\r\n\r\n"

    async def complete(self) -> None:
        """Nothing to keep."""
