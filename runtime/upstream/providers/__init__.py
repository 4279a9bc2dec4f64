"""Native provider adapters: Anthropic, Gemini (AI Studio), Vertex AI, Bedrock, Cohere and Voyage AI.

Each implements `runtime.upstream.adapter.Adapter` (request -> upstream request; response, stream and error
back to OpenAI's shape) as pure translation. Credentials that need more than a static header live
apart: `VertexTokenSource` (OAuth2 bearer token) and `BedrockSigner` (SigV4), both with
`async authorize(UpstreamRequest) -> UpstreamRequest`, which the relay calls just before sending
(`runtime.upstream.providers.auth.authorizer_for` builds the one a provider needs).

May import: the plan, `runtime.errors`, the rest of `runtime.upstream` (transport, adapter seam,
OpenAI wire pieces).
"""

from __future__ import annotations

from sidegate.runtime.upstream.providers.anthropic import AnthropicAdapter
from sidegate.runtime.upstream.providers.bedrock import BedrockAdapter, bedrock_base_url
from sidegate.runtime.upstream.providers.cohere import CohereAdapter
from sidegate.runtime.upstream.providers.gemini import GeminiAdapter, vertex_base_url
from sidegate.runtime.upstream.providers.vertex import VertexAdapter
from sidegate.runtime.upstream.providers.voyage import VoyageAdapter

__all__ = [
    "NATIVE_FAMILIES",
    "AnthropicAdapter",
    "BedrockAdapter",
    "CohereAdapter",
    "GeminiAdapter",
    "NativeAdapter",
    "VertexAdapter",
    "VoyageAdapter",
    "bedrock_base_url",
    "native_adapter",
    "native_stream_url",
    "native_url",
    "vertex_base_url",
]

NativeAdapter = AnthropicAdapter | GeminiAdapter | VertexAdapter | BedrockAdapter | CohereAdapter | VoyageAdapter

NATIVE_FAMILIES = ("anthropic", "gemini", "vertex", "bedrock", "cohere", "voyage")
"""The `Family` values these adapters serve."""


def native_adapter(family: str, *, drop_unsupported: bool = False) -> NativeAdapter:
    """The adapter for a native family (`anthropic`, `gemini`, `vertex`, `bedrock`, `cohere`)."""
    if family == "anthropic":
        return AnthropicAdapter(drop_unsupported=drop_unsupported)
    if family == "gemini":
        return GeminiAdapter(drop_unsupported=drop_unsupported)
    if family == "vertex":
        return VertexAdapter(drop_unsupported=drop_unsupported)
    if family == "bedrock":
        return BedrockAdapter(drop_unsupported=drop_unsupported)
    if family == "cohere":
        return CohereAdapter(drop_unsupported=drop_unsupported)
    if family == "voyage":
        return VoyageAdapter(drop_unsupported=drop_unsupported)
    raise KeyError(family)


def native_url(family: str, base_url: str, model: str, op: str) -> str:
    """The non-streaming upstream URL of `op` for `model` (each adapter derives its stream URL)."""
    return native_adapter(family).url(base_url, model, op)


def native_stream_url(family: str, url: str) -> str:
    """The URL a streamed chat goes to, for the non-streaming chat URL `url` of a native family."""
    if family == "gemini":
        return GeminiAdapter.stream_url(url)
    if family == "vertex":
        return VertexAdapter.stream_url(url)
    if family == "bedrock":
        return BedrockAdapter.stream_url(url)
    return url
