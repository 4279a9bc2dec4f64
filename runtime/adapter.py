"""The provider adapter seam: how a request in OpenAI's shape becomes an upstream request, and how
the upstream's answer (whole, streamed, or an error) comes back in OpenAI's shape.

One adapter per provider family. The OpenAI family passes bytes through untouched (only the usage
chunk is inspected); native families translate. Adapters are pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx
import orjson

from runtime.errors import GatewayError, UpstreamError
from runtime.openai_wire import SseRelay, Usage, error_from_upstream, request_body, usage_from
from runtime.plan import Family, Provider, Target
from runtime.transport import UpstreamRequest

__all__ = ["ADAPTERS", "Adapter", "OpenAIAdapter", "StreamTranslator"]


class StreamTranslator(Protocol):
    """Turns upstream stream bytes into OpenAI SSE bytes, whole events at a time."""

    usage: Usage | None
    done: bool
    """True once the upstream signalled a complete stream."""

    def feed(self, data: bytes) -> bytes:
        """OpenAI SSE bytes to send for this piece of upstream bytes (may be empty)."""
        ...


class Adapter(Protocol):
    """Translation between OpenAI's shape and one provider family's wire format."""

    stream_content_type: str
    """The content type a successful upstream stream has (checked before relaying)."""

    def request(
        self,
        provider: Provider,
        target: Target,
        url: str,
        headers: tuple[tuple[str, str], ...],
        op: str,
        model: str,
        body: dict[str, Any],
    ) -> UpstreamRequest:
        """The upstream request for an OpenAI-shaped body."""
        ...

    def response(self, op: str, body: bytes) -> tuple[bytes, Usage | None]:
        """The OpenAI-shaped response body and its usage."""
        ...

    def stream(self, op: str, keep_usage: bool) -> StreamTranslator:
        """A translator for one streamed answer."""
        ...

    def error(self, status: int, headers: httpx.Headers, body: bytes) -> GatewayError:
        """The error the client gets for an upstream error response."""
        ...


class OpenAIAdapter:
    """OpenAI, Azure OpenAI, every OpenAI-compatible type and the mock: bytes pass through."""

    stream_content_type = "text/event-stream"

    def request(
        self,
        provider: Provider,
        target: Target,
        url: str,
        headers: tuple[tuple[str, str], ...],
        op: str,
        model: str,
        body: dict[str, Any],
    ) -> UpstreamRequest:
        """POST the client's body with `model` rewritten (see :func:`request_body`)."""
        payload = request_body(body, model, target.extra_body, provider.stream_usage)
        return UpstreamRequest("POST", url, headers, payload, provider.connect_timeout)

    def response(self, op: str, body: bytes) -> tuple[bytes, Usage | None]:
        """The upstream body unchanged, and the usage it reports."""
        try:
            return body, usage_from(orjson.loads(body))
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream answered with invalid JSON") from None

    def stream(self, op: str, keep_usage: bool) -> StreamTranslator:
        """Re-frame SSE events; hide the usage chunk unless the client asked for it."""
        return SseRelay(keep_usage)

    def error(self, status: int, headers: httpx.Headers, body: bytes) -> GatewayError:
        """OpenAI's error envelope mapped by status."""
        return error_from_upstream(status, headers, body)


_OPENAI = OpenAIAdapter()
ADAPTERS: dict[Family, Adapter] = {Family.OPENAI: _OPENAI, Family.AZURE: _OPENAI, Family.MOCK: _OPENAI}
"""The adapter for each family."""
