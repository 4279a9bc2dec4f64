"""The provider adapter seam: how a request in OpenAI's shape becomes an upstream request, and how
the upstream's answer (whole, streamed, or an error) comes back in OpenAI's shape.

One adapter per provider family. The OpenAI family passes bytes through untouched (only the usage
chunk is inspected); native families (`runtime.upstream.providers`) translate, one adapter instance per
provider (it carries the provider's `drop_unsupported`). Adapters are pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import httpx
import orjson

from sidegate.runtime.errors import GatewayError, UpstreamError
from sidegate.runtime.plan import Family, Provider, Target
from sidegate.runtime.upstream.openai_wire import (
    SseRelay,
    Usage,
    error_from_upstream,
    request_body,
    upstream_url,
    valid_usage,
)
from sidegate.runtime.upstream.providers import native_adapter
from sidegate.runtime.upstream.transport import UpstreamRequest

__all__ = ["ADAPTERS", "Adapter", "ChainedStream", "OpenAIAdapter", "StreamTranslator", "adapter_for", "url_for"]


class StreamTranslator(Protocol):
    """Turns upstream stream bytes into OpenAI SSE bytes, whole events at a time."""

    usage: Usage | None
    done: bool
    """True once the upstream signalled a complete stream."""

    def feed(self, data: bytes) -> bytes:
        """OpenAI SSE bytes to send for this piece of upstream bytes (may be empty)."""
        ...


class ChainedStream:
    """A target adapter's translator (upstream -> OpenAI chunks) followed by one from OpenAI chunks to
    a client dialect's events (Anthropic's, the Responses API's): usage from whichever knows it."""

    __slots__ = ("_inner", "_outer", "done", "usage")

    def __init__(self, inner: StreamTranslator, outer: StreamTranslator) -> None:
        self._inner = inner
        self._outer = outer
        self.usage: Usage | None = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The dialect's events for this piece of upstream bytes."""
        chunks = self._inner.feed(data)
        out = self._outer.feed(chunks) if chunks else b""
        self.usage = self._inner.usage or self._outer.usage
        self.done = self._inner.done
        return out


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

    def response(
        self, op: str, body: bytes, *, model: str = "", request: Mapping[str, Any] | None = None
    ) -> tuple[bytes, Usage | None]:
        """The OpenAI-shaped response body and its usage; `model` is the upstream model name and
        `request` the client's body (some translations need them: embeddings' encoding format)."""
        ...

    def stream(self, op: str, keep_usage: bool, *, model: str = "") -> StreamTranslator:
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
        """POST the client's body with `model` rewritten (see :func:`request_body`); `max_tokens` goes
        as `max_completion_tokens` to a model that takes only that (OpenAI's reasoning models)."""
        if op == "chat" and target.caps.max_completion_tokens and "max_tokens" in body:
            body = dict(body)
            limit = body.pop("max_tokens")
            body.setdefault("max_completion_tokens", limit)
        payload = request_body(body, model, target.extra_body, provider.stream_usage)
        return UpstreamRequest("POST", url, headers, payload, provider.connect_timeout)

    def response(
        self, op: str, body: bytes, *, model: str = "", request: Mapping[str, Any] | None = None
    ) -> tuple[bytes, Usage | None]:
        """The upstream body unchanged, and the usage it reports."""
        try:
            return body, valid_usage(orjson.loads(body))
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream answered with invalid JSON") from None

    def stream(self, op: str, keep_usage: bool, *, model: str = "") -> StreamTranslator:
        """Re-frame SSE events; hide the usage chunk unless the client asked for it."""
        return SseRelay(keep_usage)

    def error(self, status: int, headers: httpx.Headers, body: bytes) -> GatewayError:
        """OpenAI's error envelope mapped by status."""
        return error_from_upstream(status, headers, body)


_OPENAI = OpenAIAdapter()
ADAPTERS: dict[Family, Adapter] = {Family.OPENAI: _OPENAI, Family.AZURE: _OPENAI, Family.MOCK: _OPENAI}
"""The shared adapter of each OpenAI-wire family (native families get one per provider)."""


def adapter_for(provider: Provider) -> Adapter:
    """The adapter serving `provider` (built at start: native adapters keep `drop_unsupported`)."""
    shared = ADAPTERS.get(provider.family)
    if shared is not None:
        return shared
    return native_adapter(provider.family.value, drop_unsupported=provider.drop_unsupported)


def url_for(provider: Provider, model: str, op: str) -> str:
    """The upstream URL of `op` for `model` (a native stream's URL is derived from it by the adapter)."""
    if provider.family in ADAPTERS:
        return upstream_url(provider, model, op)
    return native_adapter(provider.family.value).url(provider.base_url, model, op)
