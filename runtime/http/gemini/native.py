"""Gemini targets of the Gemini-native ingress (Google AI Studio, and Google's models on Vertex AI):
the client's own body goes to `generateContent` (or `streamGenerateContent?alt=sse`) at the target's
URL with only the model changed (Vertex's OAuth token added by the deployment's authorizer, as for
every request), and the answer and its events come back as Gemini sent them (usage read from
`usageMetadata`)."""

from __future__ import annotations

from typing import Any

from sidegate.runtime.errors import GatewayError
from sidegate.runtime.http.passthrough_usage import usage_in
from sidegate.runtime.plan import Family
from sidegate.runtime.routing.state import Deployment
from sidegate.runtime.upstream.openai_wire import Usage, thaw
from sidegate.runtime.upstream.providers.common import SseParser, json_body, loads_upstream, upstream_error
from sidegate.runtime.upstream.providers.gemini import GeminiAdapter
from sidegate.runtime.upstream.providers.vertex import is_claude
from sidegate.runtime.upstream.transport import UpstreamRequest
from sidegate.runtime.upstream.usage_check import InvalidUsage

__all__ = ["GeminiRelay", "is_native", "native_request", "native_response"]


def is_native(family: Family, model: str) -> bool:
    """Whether a target speaks Gemini's own wire: AI Studio, or a Google model on Vertex AI."""
    return family is Family.GEMINI or (family is Family.VERTEX and not is_claude(model))


def native_request(dep: Deployment, model: str, body: dict[str, Any], stream: bool) -> UpstreamRequest:
    """The client's body (the target's `extra_body` under it) to the target's generateContent URL."""
    url = dep.url("chat", model)
    if stream:
        url = GeminiAdapter.stream_url(url)
    payload = {**{k: thaw(v) for k, v in dep.target.extra_body.items()}, **body}
    payload.pop("model", None)
    return UpstreamRequest("POST", url, dep.headers, json_body(payload), dep.provider.connect_timeout)


def _usage(obj: Any) -> Usage | None:
    try:
        return usage_in(obj)
    except InvalidUsage:
        return None


def native_response(body: bytes) -> tuple[bytes, Usage | None]:
    """A Gemini answer as it is, and its usage."""
    return body, _usage(loads_upstream(body))


class GeminiRelay:
    """Gemini's `?alt=sse` events relayed whole; done at the event with a `finishReason`; an error
    object in the stream goes to the client as Google sent it and fails the call."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.done = False
        self.failure: GatewayError | None = None
        self._parser = SseParser()

    def feed(self, data: bytes) -> bytes:
        """The whole events completed by these bytes."""
        out: list[bytes] = []
        for text, obj in self._parser.objects(data, "gemini", lambda: self.done):
            out.append(b"data: " + text.encode() + b"\r\n\r\n")
            if not isinstance(obj, dict):
                continue
            if isinstance(obj.get("error"), dict):
                err = obj["error"]
                self.failure = upstream_error("gemini", int(err.get("code") or 500), str(err.get("message") or ""))
                self.done = True
                break
            self.usage = _usage(obj) or self.usage
            candidates = obj.get("candidates")
            if isinstance(candidates, list) and any(isinstance(c, dict) and c.get("finishReason") for c in candidates):
                self.done = True
        return b"".join(out)
