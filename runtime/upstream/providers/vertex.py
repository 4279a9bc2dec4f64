"""Vertex AI: Google's publisher models (Gemini's wire) and Anthropic's Claude models, which Vertex
serves with the Messages API under `publishers/anthropic` (`:rawPredict` / `:streamRawPredict`).

For Claude the body is Anthropic's with two documented differences: no `model` (it is in the URL)
and `anthropic_version: vertex-2023-10-16` in the body instead of a header. Answers, streams and
model errors are Anthropic's; errors raised by Vertex itself (auth, quota) are Google's envelope.
A target's model id picks the publisher: ids starting with `claude` are Anthropic's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from sidegate.runtime.errors import GatewayError
from sidegate.runtime.plan import Provider, Target
from sidegate.runtime.upstream.openai_wire import Usage
from sidegate.runtime.upstream.providers.anthropic import AnthropicAdapter, AnthropicStream, error_from_anthropic
from sidegate.runtime.upstream.providers.common import json_body, loads_upstream
from sidegate.runtime.upstream.providers.gemini import GeminiAdapter, GeminiStream, error_from_gemini
from sidegate.runtime.upstream.transport import UpstreamRequest
from sidegate.runtime.upstream.urlpath import path_segment

__all__ = ["VERTEX_ANTHROPIC_VERSION", "VertexAdapter", "is_claude"]

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"


def is_claude(model: str) -> bool:
    """Whether a Vertex model id is one of Anthropic's (`claude-sonnet-4-5@20250929`, ...)."""
    return model.startswith("claude")


class VertexAdapter(GeminiAdapter):
    """Gemini's translation for Google's models; Anthropic's, re-addressed, for Claude."""

    def __init__(self, *, drop_unsupported: bool = False) -> None:
        super().__init__(vertex=True, drop_unsupported=drop_unsupported)
        self._claude = AnthropicAdapter(drop_unsupported=drop_unsupported)

    def url(self, base_url: str, model: str, op: str) -> str:
        """Claude: `.../publishers/anthropic/models/{model}:rawPredict`; otherwise Gemini's URL."""
        if not is_claude(model):
            return super().url(base_url, model, op)
        base = base_url.rstrip("/")
        if base.endswith("/publishers/google"):
            base = base[: -len("/google")] + "/anthropic"
        return f"{base}/models/{path_segment(model)}:rawPredict"

    @staticmethod
    def stream_url(url: str) -> str:
        """`:streamRawPredict` for Claude, `:streamGenerateContent?alt=sse` otherwise."""
        if url.endswith(":rawPredict"):
            return url[: -len(":rawPredict")] + ":streamRawPredict"
        return GeminiAdapter.stream_url(url)

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
        """The Gemini request, or for Claude Anthropic's body without `model` and with the version."""
        if not is_claude(model):
            return super().request(provider, target, url, headers, op, model, body)
        req = self._claude.request(provider, target, url, headers, op, model, body)
        payload = orjson.loads(req.body)
        del payload["model"]
        payload["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
        if payload.get("stream"):
            url = self.stream_url(url)
        kept = tuple((k, v) for k, v in req.headers if k.lower() != "anthropic-version")
        return UpstreamRequest("POST", url, kept, json_body(payload), req.connect_timeout)

    def response(
        self, op: str, body: bytes, *, model: str = "", request: Mapping[str, Any] | None = None
    ) -> tuple[bytes, Usage | None]:
        if is_claude(model):
            return self._claude.response(op, body, model=model, request=request)
        return super().response(op, body, model=model, request=request)

    def stream(self, op: str, keep_usage: bool, *, model: str = "") -> GeminiStream | AnthropicStream:  # type: ignore[override]
        if is_claude(model):
            return self._claude.stream(op, keep_usage, model=model)
        return super().stream(op, keep_usage, model=model)

    def error(self, status: int, headers: httpx.Headers, body: bytes) -> GatewayError:
        """Anthropic's envelope when the model answered the error, Google's when Vertex did."""
        try:
            obj = loads_upstream(body)
        except GatewayError:
            obj = None
        if isinstance(obj, dict) and obj.get("type") == "error":
            return error_from_anthropic(status, headers, body)
        return error_from_gemini(status, headers, body)
