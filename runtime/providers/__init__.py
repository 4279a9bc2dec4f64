"""Native provider adapters: Anthropic, Gemini (AI Studio), Vertex AI, Bedrock and Cohere.

Each implements `runtime.adapter.Adapter` (request -> upstream request; response, stream and error
back to OpenAI's shape) as pure translation. Credentials that need more than a static header live
apart: `VertexTokenSource` (OAuth2 bearer token) and `BedrockSigner` (SigV4), both with
`async authorize(UpstreamRequest) -> UpstreamRequest` for the proxy to call just before sending.
"""

from __future__ import annotations

from runtime.providers.anthropic import AnthropicAdapter
from runtime.providers.bedrock import BedrockAdapter, bedrock_base_url
from runtime.providers.cohere import CohereAdapter
from runtime.providers.gemini import GeminiAdapter, vertex_base_url

__all__ = [
    "NATIVE_FAMILIES",
    "AnthropicAdapter",
    "BedrockAdapter",
    "CohereAdapter",
    "GeminiAdapter",
    "NativeAdapter",
    "bedrock_base_url",
    "native_adapter",
    "native_url",
    "vertex_base_url",
]

NativeAdapter = AnthropicAdapter | GeminiAdapter | BedrockAdapter | CohereAdapter

NATIVE_FAMILIES = ("anthropic", "gemini", "vertex", "bedrock", "cohere")
"""The `Family` values these adapters serve."""


def native_adapter(family: str, *, drop_unsupported: bool = False) -> NativeAdapter:
    """The adapter for a native family (`anthropic`, `gemini`, `vertex`, `bedrock`, `cohere`)."""
    if family == "anthropic":
        return AnthropicAdapter(drop_unsupported=drop_unsupported)
    if family in ("gemini", "vertex"):
        return GeminiAdapter(vertex=family == "vertex", drop_unsupported=drop_unsupported)
    if family == "bedrock":
        return BedrockAdapter(drop_unsupported=drop_unsupported)
    if family == "cohere":
        return CohereAdapter(drop_unsupported=drop_unsupported)
    raise KeyError(family)


def native_url(family: str, base_url: str, model: str, op: str) -> str:
    """The non-streaming upstream URL of `op` for `model` (each adapter derives its stream URL)."""
    return native_adapter(family).url(base_url, model, op)
