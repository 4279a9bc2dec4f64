"""How LiteLLM reads `api_base` and `model` for each provider prefix, made explicit for sidegate.

LiteLLM sends an OpenAI-wire provider's requests to `{api_base}/chat/completions` (the OpenAI
client's base URL, so `/v1` is the user's to write), as sidegate does; the others differ:
- `ollama/` and `ollama_chat/` call Ollama's own API (`{api_base}/api/generate`, `/api/chat`),
  while sidegate's `ollama` type speaks its OpenAI-compatible endpoint under `/v1`;
- `anthropic/` posts to `{api_base}/v1/messages` (a base ending in `/v1/messages` is used as it
  is), while sidegate's base URL is the part before `/messages`;
- `bedrock/converse/<id>` and `bedrock/invoke/<id>` name the Bedrock API in the model string;
  the model id is what follows (sidegate calls Converse for every Bedrock model).
"""

from __future__ import annotations

__all__ = ["BASE_URL_RULES", "base_url", "model_id"]

BASE_URL_RULES = {
    "ollama": ("/api/generate", "/api/chat", "/api"),
    "ollama_chat": ("/api/chat", "/api/generate", "/api"),
    "anthropic": ("/v1/messages", "/messages"),
}
"""LiteLLM prefix -> the path endings LiteLLM adds to (or accepts on) `api_base` for that provider."""
_APPEND = {"ollama": "/v1", "ollama_chat": "/v1", "anthropic": "/v1"}
_BEDROCK_ROUTES = ("converse/", "invoke/", "converse_like/")


def base_url(prefix: str, api_base: str) -> str:
    """sidegate's base URL for a LiteLLM `api_base` of provider `prefix` (a URL; unchanged for the
    OpenAI-wire providers)."""
    url = api_base.rstrip("/")
    for ending in BASE_URL_RULES.get(prefix, ()):
        if url.endswith(ending):
            url = url[: -len(ending)]
            break
    suffix = _APPEND.get(prefix)
    if suffix is not None and not url.endswith(suffix):
        url += suffix
    return url


def model_id(prefix: str, model: str) -> str:
    """The upstream model id of a LiteLLM model string's part after `prefix/`."""
    if prefix == "bedrock":
        for route in _BEDROCK_ROUTES:
            if model.startswith(route):
                return model[len(route) :]
    return model
