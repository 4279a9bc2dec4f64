"""Voyage AI's wire, unit by unit: OpenAI embeddings -> Voyage's and back, Cohere-v2 rerank -> Voyage's
and back, Voyage's `{"detail"}` errors (a string, or FastAPI's list of field errors) by status."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import orjson
import pytest

from sidegate.runtime.errors import BadRequest, RateLimited, UpstreamError
from sidegate.runtime.upstream.media_wire import voyage_rerank_answer, voyage_rerank_body
from sidegate.runtime.upstream.providers.voyage import VoyageAdapter, error_from_voyage
from tests.support.fake_base import native_provider
from tests.support.plans import target

BASE = "https://api.voyageai.com/v1"


def embed(body: dict[str, Any], adapter: VoyageAdapter | None = None, op: str = "embeddings",
          **target_kw: Any) -> Any:
    req = (adapter or VoyageAdapter()).request(
        native_provider(), target("voyage", "v", **target_kw), VoyageAdapter.url(BASE, "voyage-3.5", op),
        (("authorization", "Bearer k"),), op, "voyage-3.5", {"model": "public", **body})
    assert req.url == f"{BASE}/embeddings"
    return json.loads(req.body)


def test_embeddings_request() -> None:
    assert embed({"input": "hi", "dimensions": 512, "encoding_format": "base64"}) == {
        "model": "voyage-3.5", "input": ["hi"], "output_dimension": 512}
    assert embed({"input": ["a", "b"], "input_type": "document", "truncation": False}) == {
        "model": "voyage-3.5", "input": ["a", "b"], "input_type": "document", "truncation": False}
    assert embed({"input": "x"}, extra_body={"input_type": "query"})["input_type"] == "query"
    with pytest.raises(BadRequest) as user:
        embed({"input": "x", "user": "u"})
    assert user.value.param == "user" and user.value.code == "unsupported_parameter"
    assert "user" not in embed({"input": "x", "user": "u"}, VoyageAdapter(drop_unsupported=True))
    with pytest.raises(BadRequest) as fmt:
        embed({"input": "x", "encoding_format": "int8"})
    assert fmt.value.param == "encoding_format"
    with pytest.raises(BadRequest) as ids:
        embed({"input": [1, 2]})
    assert ids.value.param == "input"
    with pytest.raises(BadRequest, match="voyage"):
        embed({"messages": [{"role": "user", "content": "hi"}]}, op="chat")


def test_embeddings_answer_in_openais_shape() -> None:
    answer = orjson.dumps({"object": "list", "model": "voyage-3.5", "usage": {"total_tokens": 9}, "data": [
        {"object": "embedding", "embedding": [0.5, -1.0], "index": 1},
        {"object": "embedding", "embedding": [0.25, 2.0], "index": 0}]})
    out, usage = VoyageAdapter().response("embeddings", answer, model="voyage-3.5", request={})
    obj = json.loads(out)
    assert [d["embedding"] for d in obj["data"]] == [[0.25, 2.0], [0.5, -1.0]] and [d["index"] for d in obj["data"]] == [0, 1]
    assert obj["usage"] == {"prompt_tokens": 9, "total_tokens": 9} and usage is not None and usage.prompt == 9
    packed, _ = VoyageAdapter().response("embeddings", answer, request={"encoding_format": "base64"})
    first = json.loads(packed)["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(first)) == (0.25, 2.0)
    with pytest.raises(UpstreamError):
        VoyageAdapter().response("embeddings", b'{"detail": "no"}')
    with pytest.raises(UpstreamError):
        VoyageAdapter().response("embeddings", b'{"data": [{"index": 0, "embedding": "abc="}]}')


def test_rerank_request_and_answer() -> None:
    body = voyage_rerank_body({"model": "m", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 1,
                               "return_documents": True})
    assert body == {"model": "m", "query": "q", "documents": ["a", "b"], "top_k": 1, "return_documents": True}
    with pytest.raises(BadRequest) as cap:
        voyage_rerank_body({"query": "q", "documents": ["a"], "max_tokens_per_doc": 10})
    assert cap.value.param == "max_tokens_per_doc"
    with pytest.raises(BadRequest) as fields:
        voyage_rerank_body({"query": "q", "documents": [{"text": "a", "title": "t"}]})
    assert fields.value.param == "documents"

    out, usage = voyage_rerank_answer(orjson.dumps({"object": "list", "model": "m", "usage": {"total_tokens": 26},
                                                    "data": [{"index": 1, "relevance_score": 0.9, "document": "b"},
                                                             {"index": 0, "relevance_score": 0.1, "document": "a"}]}))
    obj = json.loads(out)
    assert obj["results"] == [{"index": 1, "relevance_score": 0.9, "document": {"text": "b"}},
                              {"index": 0, "relevance_score": 0.1, "document": {"text": "a"}}]
    assert obj["meta"]["billed_units"] == {"input_tokens": 26} and obj["id"] and usage.prompt == 26
    for bad in (b"[]", b'{"data": [{"index": "0", "relevance_score": 1}]}', b"not json"):
        with pytest.raises(UpstreamError):
            voyage_rerank_answer(bad)


def test_errors_by_status() -> None:
    bad = error_from_voyage(400, httpx.Headers(), b'{"detail": "The number of documents cannot exceed 1000."}')
    assert isinstance(bad, BadRequest) and "cannot exceed 1000" in bad.message
    fields = error_from_voyage(422, httpx.Headers(), orjson.dumps({"detail": [
        {"loc": ["body", "query"], "msg": "field required", "type": "value_error.missing"}]}))
    assert isinstance(fields, BadRequest) and "field required" in fields.message
    limited = error_from_voyage(429, httpx.Headers({"retry-after": "7"}), b'{"detail": "slow down"}')
    assert isinstance(limited, RateLimited) and limited.retry_after == 7
    auth = error_from_voyage(401, httpx.Headers(), b'{"detail": "Provided API key is invalid."}')
    assert auth.status == 502 and auth.code == "upstream_auth_error"
    down = error_from_voyage(503, httpx.Headers(), b"<html>unavailable</html>")
    assert isinstance(down, UpstreamError) and "unavailable" in down.message
