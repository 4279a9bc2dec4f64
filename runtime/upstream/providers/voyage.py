"""Voyage AI (https://docs.voyageai.com/reference/embeddings-api): OpenAI embeddings requests to
Voyage's `POST {base_url}/embeddings`, its answers and `{"detail": ...}` errors back to OpenAI's
shape. Voyage has no chat or completions API (those are refused); its rerank API is served by the
media route (`runtime.upstream.media_wire`), which uses this adapter's errors too.

What differs from OpenAI's embeddings: `dimensions` is Voyage's `output_dimension`; Voyage's own
`input_type` (`query`, `document`) and `truncation` pass through; the vectors are asked for as
floats and encoded here when the client wants base64 (OpenAI's `encoding_format`, which the `openai`
SDK sends by default); token arrays, `user` and other OpenAI fields Voyage has no equivalent of are
refused (or dropped with `drop_unsupported`). The answer's `usage.total_tokens` are its input tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import httpx
import orjson

from sidegate.runtime.errors import GatewayError
from sidegate.runtime.plan import Provider, Target
from sidegate.runtime.upstream.openai_wire import Usage, thaw
from sidegate.runtime.upstream.providers.common import (
    NativeAdapterBase,
    embedding_inputs,
    embeddings_body,
    json_body,
    loads_upstream,
    retry_after_seconds,
    unsupported,
    upstream_error,
)
from sidegate.runtime.upstream.transport import UpstreamRequest
from sidegate.runtime.upstream.usage_check import or_absent, token_count

__all__ = ["VoyageAdapter", "error_from_voyage"]

_PASSED = frozenset({"input_type", "truncation"})
"""Voyage's own embeddings fields a client may send (`extra_body`), passed on as they are."""
_HANDLED = frozenset({"model", "input", "dimensions", "encoding_format"})


def error_from_voyage(status: int, headers: httpx.Headers | Mapping[str, str], body: bytes) -> GatewayError:
    """Voyage's `{"detail": "..."}` error (a list of field errors on a malformed body) mapped by status."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    detail = obj.get("detail") if isinstance(obj, dict) else None
    if isinstance(detail, list):
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    message = str(detail or "") or body[:300].decode("utf-8", "replace") or "no message"
    return upstream_error("voyage", status, message[:1000], retry_after=retry_after_seconds(headers))


class VoyageAdapter(NativeAdapterBase):
    """OpenAI embeddings <-> Voyage AI."""

    @staticmethod
    def url(base_url: str, model: str, op: str) -> str:
        """`{base_url}/embeddings` (the only operation of the adapter family; others are refused)."""
        return f"{base_url.rstrip('/')}/embeddings"

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
        """POST the embeddings request in Voyage's shape to `url`."""
        if op != "embeddings":
            raise unsupported("voyage", f"the '{op}' operation (Voyage serves embeddings and rerank)", param="model")
        texts = embedding_inputs(body, "voyage")
        fmt = body.get("encoding_format")
        if fmt not in (None, "float", "base64"):
            raise unsupported("voyage", f"encoding_format {str(fmt)[:40]!r}", param="encoding_format")
        extra = sorted(set(body) - _HANDLED - _PASSED)
        if extra and not self.drop_unsupported:
            raise unsupported("voyage", f"the '{extra[0]}' field of embeddings", param=extra[0])
        payload: dict[str, Any] = {k: thaw(v) for k, v in target.extra_body.items()}
        payload.update({k: body[k] for k in _PASSED if k in body})
        payload.update(model=model, input=texts)
        if "dimensions" in body:
            payload["output_dimension"] = body["dimensions"]
        return UpstreamRequest("POST", url, headers, json_body(payload), provider.connect_timeout)

    def response(
        self, op: str, body: bytes, *, model: str = "", request: Mapping[str, Any] | None = None
    ) -> tuple[bytes, Usage | None]:
        """Voyage's embeddings list as OpenAI's (vectors in index order, base64 when asked)."""
        obj = loads_upstream(body)
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise upstream_error("voyage", 502, "answer has no embeddings list")
        try:
            ordered = sorted(data, key=lambda d: int(d.get("index", 0)))
            vectors = [[float(v) for v in d["embedding"]] for d in ordered]
        except (KeyError, TypeError, ValueError):
            raise upstream_error("voyage", 502, "answer has an unreadable embedding") from None
        tokens = (obj.get("usage") or {}).get("total_tokens")
        usage = or_absent(lambda: Usage(prompt=token_count(tokens)))
        fmt = (request or {}).get("encoding_format")
        out = embeddings_body(vectors, str(obj.get("model") or model), usage.prompt if usage else 0,
                              fmt if isinstance(fmt, str) else None)
        return out, usage

    def stream(self, op: str, keep_usage: bool, *, model: str = "") -> NoReturn:
        """Voyage streams nothing (embeddings are answered whole; chat is refused by `request`)."""
        raise unsupported("voyage", "streaming", param="stream")

    def error(self, status: int, headers: httpx.Headers, body: bytes) -> GatewayError:
        """Voyage's error answer mapped by status."""
        return error_from_voyage(status, headers, body)
