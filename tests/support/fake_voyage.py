"""A fake Voyage AI upstream (https://docs.voyageai.com/reference/embeddings-api and
https://docs.voyageai.com/reference/reranker-api) speaking its wire format and refusing what it refuses.

`POST /v1/embeddings`: `input` (a string or at most 1,000 strings) and `model` required; the only
fields are `input_type` (null, `query`, `document`), `truncation`, `output_dimension` (256, 512,
1024, 2048), `output_dtype` and `encoding_format` (null or `base64`). `POST /v1/rerank`: `query`,
`documents` (at most 1,000 strings) and `model` required; `top_k` (an integer >= 1),
`return_documents`, `truncation`. Anything else is a 400; errors are `{"detail": "..."}`; a key
other than `key` is a 401; `x-fake-mode: limited` answers 429 with `retry-after`; `x-fake-mode: hold`
answers only once `release` is set. Tokens are
counted as words; a rerank's are Voyage's "query tokens x documents + the documents' tokens"."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from tests.support.fake_base import FakeServer, Seen

_EMBED = {"input", "model", "input_type", "truncation", "output_dimension", "output_dtype", "encoding_format"}
_RERANK = {"query", "documents", "model", "top_k", "return_documents", "truncation"}


def tokens(text: str) -> int:
    return len(text.split())


def vector(text: str, dims: int) -> list[float]:
    """The fake's embedding of `text` (exact in float32: multiples of 1/1024)."""
    return [((len(text) * 7 + i) % 64) / 1024 for i in range(dims)]


@dataclass
class FakeVoyage(FakeServer):
    key: str = "voyage-upstream"
    release: trio.Event = field(default_factory=trio.Event)

    async def answer(self, seen: Seen, send: Any) -> None:
        if seen.headers.get("authorization") != f"Bearer {self.key}":
            await self.json(send, 401, {"detail": "Provided API key is invalid."})
            return
        if seen.headers.get("x-fake-mode") == "limited":
            await self.json(send, 429, {"detail": "You have exceeded your TPM rate limit."},
                            headers=[(b"retry-after", b"7")])
            return
        if seen.headers.get("x-fake-mode") == "hold":
            with trio.fail_after(10):
                await self.release.wait()
        route = {"/v1/embeddings": self.embeddings, "/v1/rerank": self.rerank}.get(seen.path)
        if route is None or seen.method != "POST":
            await self.json(send, 404, {"detail": "Not Found"})
            return
        body = seen.body if isinstance(seen.body, dict) else None
        if body is None:
            await self.json(send, 400, {"detail": "Request body is not a JSON object."})
            return
        problem = await route(body, send)
        if problem is not None:
            await self.json(send, 400, {"detail": problem})

    async def embeddings(self, body: dict[str, Any], send: Any) -> str | None:
        unknown = sorted(set(body) - _EMBED)
        if unknown:
            return f"Unexpected argument: {unknown[0]}"
        if "model" not in body or "input" not in body:
            return "Both 'input' and 'model' are required."
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return "'input' must be a string or a list of strings."
        if len(texts) > 1000:
            return "The length of 'input' cannot exceed 1000."
        dims = body.get("output_dimension") or 1024
        if dims not in (256, 512, 1024, 2048):
            return f"output_dimension {dims} is not supported for model {body['model']}."
        if body.get("encoding_format") not in (None, "base64") or body.get("input_type") not in (
                None, "query", "document"):
            return "Invalid value for 'encoding_format' or 'input_type'."
        data = [{"object": "embedding", "embedding": vector(t, dims), "index": i} for i, t in enumerate(texts)]
        await self.json(send, 200, {"object": "list", "data": data, "model": body["model"],
                                    "usage": {"total_tokens": sum(tokens(t) for t in texts)}})
        return None

    async def rerank(self, body: dict[str, Any], send: Any) -> str | None:
        unknown = sorted(set(body) - _RERANK)
        if unknown:
            return f"Unexpected argument: {unknown[0]}"
        for name in ("query", "documents", "model"):
            if name not in body:
                return f"'{name}' is required."
        docs = body["documents"]
        if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
            return "'documents' must be a list of strings."
        if len(docs) > 1000:
            return "The number of documents cannot exceed 1000."
        top_k = body.get("top_k")
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            return "'top_k' must be a positive integer."
        query = set(body["query"].lower().split())
        scored = sorted(((round(len(query & set(d.lower().split())) / (1 + len(query)), 4), i)
                         for i, d in enumerate(docs)), key=lambda x: (-x[0], x[1]))
        rows = [{"index": i, "relevance_score": s, **({"document": docs[i]} if body.get("return_documents") else {})}
                for s, i in scored[:top_k]]
        total = tokens(body["query"]) * len(docs) + sum(tokens(d) for d in docs)
        await self.json(send, 200, {"object": "list", "data": rows, "model": body["model"],
                                    "usage": {"total_tokens": total}})
        return None
