"""The media routes' upstream wire: images, audio, moderations and rerank.

Which provider family serves which route and at what URL, the upstream request (JSON, or a
multipart upload built with :mod:`runtime.upstream.multipart`), the units an answer is priced by
(images, seconds of audio, characters of speech input, rerank search units) and the relay of a
speech answer's audio bytes as they arrive. Pure: no I/O, no clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from sidegate.runtime.errors import BadRequest, UpstreamError
from sidegate.runtime.plan import Family, Provider
from sidegate.runtime.upstream.multipart import Upload, encode
from sidegate.runtime.upstream.openai_wire import Usage
from sidegate.runtime.upstream.transport import UpstreamRequest
from sidegate.runtime.upstream.urlpath import path_segment

__all__ = ["PATHS", "ByteRelay", "TranscriptRelay", "json_request", "media_url", "multipart_request", "units",
           "voyage_rerank_answer", "voyage_rerank_body", "wav_seconds"]

PATHS = {"images": "images/generations", "image_edits": "images/edits", "speech": "audio/speech",
         "transcriptions": "audio/transcriptions", "translations": "audio/translations",
         "moderations": "moderations", "rerank": "rerank"}
"""Media operation -> its path under an OpenAI-wire provider's base URL."""

_SERVED: dict[Family, frozenset[str]] = {
    Family.OPENAI: frozenset(PATHS),
    Family.AZURE: frozenset(PATHS) - {"moderations", "rerank"},
    Family.COHERE: frozenset({"rerank"}),
    Family.VOYAGE: frozenset({"rerank"}),
}
"""What each family serves: OpenAI and every OpenAI-compatible server (Jina, vLLM and Infinity
serve rerank at `/rerank` in Cohere's shape), Azure OpenAI (no moderations, no rerank), Cohere's
v2 API (rerank), Voyage AI (rerank at `/rerank`, in its own shape: :func:`voyage_rerank_body`)."""


def media_url(provider: Provider, model: str, op: str) -> str:
    """The upstream URL of media operation `op` on `provider`; a 400 when its family has no such API."""
    if op not in _SERVED.get(provider.family, frozenset()):
        raise BadRequest(f"provider '{provider.name}' ({provider.type}) has no {PATHS[op]} API: route this model "
                         "to an OpenAI, Azure OpenAI" + (", Cohere or Voyage" if op == "rerank" else "")
                         + " deployment",
                         code="unsupported_by_provider")
    if provider.family is Family.AZURE:
        return (f"{provider.base_url}/openai/deployments/{path_segment(model)}/{PATHS[op]}"
                f"?api-version={provider.api_version}")
    return f"{provider.base_url}/{PATHS[op]}"


def json_request(url: str, headers: tuple[tuple[str, str], ...], body: Mapping[str, Any], model: str,
                 connect_timeout: float) -> UpstreamRequest:
    """A JSON POST of the client's fields with `model` rewritten to the deployment's."""
    payload = orjson.dumps({**body, "model": model})
    return UpstreamRequest("POST", url, headers, payload, connect_timeout)


def multipart_request(url: str, headers: tuple[tuple[str, str], ...], fields: list[tuple[str, str]],
                      files: list[Upload], model: str, connect_timeout: float) -> UpstreamRequest:
    """A multipart upload: the client's text fields (`model` rewritten) and files, re-encoded."""
    fields = [("model", model), *((k, v) for k, v in fields if k != "model")]
    body, kind = encode(fields, files)
    sent = tuple((k, v) for k, v in headers if k.lower() != "content-type")
    return UpstreamRequest("POST", url, (("content-type", kind.decode("latin-1")), *sent), body, connect_timeout)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError("upstream answered with invalid JSON") from None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e7:
        return 0.0
    return float(value)


def units(op: str, body: bytes, as_json: bool = True) -> tuple[bytes, Usage]:
    """The answer (checked to be JSON when `as_json`) and the units it is priced by.

    images: the images in `data` (and the tokens of gpt-image-1's `usage`); transcriptions and
    translations: `usage.seconds` (a `duration` usage) or `duration` (verbose_json), or the tokens of
    a `tokens` usage; rerank: Cohere's `meta.billed_units.search_units` (or a Jina-style
    `usage.total_tokens`, priced as input tokens); moderations: nothing (they are free).
    """
    if not as_json:
        return body, Usage()
    data = _json(body)
    if not isinstance(data, dict):
        raise UpstreamError("upstream answered with JSON that is not an object")
    found = data.get("usage")
    usage: dict[str, Any] = found if isinstance(found, dict) else {}
    if op in ("images", "image_edits"):
        images = data.get("data")
        return body, Usage(images=len(images) if isinstance(images, list) else 0,
                           prompt=_count(usage.get("input_tokens")), completion=_count(usage.get("output_tokens")))
    if op in ("transcriptions", "translations"):
        if usage.get("type") == "tokens":
            return body, Usage(prompt=_count(usage.get("input_tokens")), completion=_count(usage.get("output_tokens")))
        seconds = _seconds(usage.get("seconds")) if usage.get("type") == "duration" else _seconds(data.get("duration"))
        return body, Usage(seconds=seconds)
    if op == "rerank":
        meta = data.get("meta")
        billed = meta.get("billed_units") if isinstance(meta, dict) else None
        search = _count(billed.get("search_units")) if isinstance(billed, dict) else 0
        return body, Usage(search_units=search, prompt=_count(usage.get("total_tokens")))
    return body, Usage()


def voyage_rerank_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """A Cohere v2 rerank request in Voyage's shape (https://docs.voyageai.com/reference/reranker-api):
    documents as strings (a `{text}` object's text), `top_n` as `top_k`; `return_documents` and
    Voyage's own `truncation` go as they came, and so do fields neither knows (Voyage refuses them).
    `max_tokens_per_doc` has no Voyage equivalent (it truncates only to the model's context): a 400."""
    if "max_tokens_per_doc" in data:
        raise BadRequest("max_tokens_per_doc is not supported by voyage (it truncates documents only to the "
                         "model's context length: see its `truncation`)", param="max_tokens_per_doc",
                         code="unsupported_parameter")
    docs: list[str] = []
    for doc in data["documents"]:
        text = doc.get("text") if isinstance(doc, dict) and set(doc) == {"text"} else doc
        if not isinstance(text, str):
            raise BadRequest("voyage reranks strings: each document must be a string or {\"text\": string}",
                             param="documents")
        docs.append(text)
    body = {k: v for k, v in data.items() if k not in ("documents", "top_n")}
    body["documents"] = docs
    if "top_n" in data:
        body["top_k"] = data["top_n"]
    return body


def voyage_rerank_answer(body: bytes) -> tuple[bytes, Usage]:
    """Voyage's rerank answer (`data[]` of index, relevance_score and document; `usage.total_tokens`)
    in Cohere's v2 shape (`results[]`, documents as `{text}`, the tokens in `meta.billed_units`),
    and its usage: the tokens, priced as input tokens (Voyage bills rerank by the token)."""
    data = _json(body)
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UpstreamError("voyage answered rerank without a data list")
    results: list[dict[str, Any]] = []
    for row in rows:
        index, score = row.get("index"), row.get("relevance_score")
        if not isinstance(index, int) or isinstance(score, bool) or not isinstance(score, int | float):
            raise UpstreamError("voyage answered rerank with an unreadable result")
        result: dict[str, Any] = {"index": index, "relevance_score": score}
        if isinstance(row.get("document"), str):
            result["document"] = {"text": row["document"]}
        results.append(result)
    found = data.get("usage")
    tokens = _count(found.get("total_tokens")) if isinstance(found, dict) else 0
    answer = {"id": str(uuid.uuid4()), "results": results,
              "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}}}
    return orjson.dumps(answer), Usage(prompt=tokens)


def wav_seconds(data: bytes) -> float | None:
    """The length of a PCM WAV file from its header (RIFF chunks: `fmt `'s byte rate, `data`'s size),
    or None when `data` is not one (a transcript answer without a duration is then priced at 0)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    at, rate = 12, 0
    while at + 8 <= len(data):
        name, size = data[at:at + 4], int.from_bytes(data[at + 4:at + 8], "little")
        if name == b"fmt " and size >= 16 and at + 20 <= len(data):
            rate = int.from_bytes(data[at + 16:at + 20], "little")
        elif name == b"data":
            size = min(size, len(data) - at - 8)
            return size / rate if rate > 0 else None
        at += 8 + size + (size & 1)
    return None


class ByteRelay:
    """A speech answer's bytes (audio, or its SSE events) passed through as they arrive; its usage
    (the characters of input) is known before the first byte."""

    __slots__ = ("done", "usage")

    def __init__(self, usage: Usage) -> None:
        self.usage: Usage | None = usage
        self.done = False
        """True once a byte arrived (an answer that ends without one is a failed attempt)."""

    def feed(self, data: bytes) -> bytes:
        """The bytes, unchanged."""
        if data:
            self.done = True
        return data


class TranscriptRelay:
    """A streamed transcript (gpt-4o-transcribe's `stream: true`): its server-sent events relayed whole
    as they complete; `transcript.text.done` ends it and carries its token usage. Until then the
    usage is `fallback` (the upload's seconds, when sidegate can tell), so a cut stream is charged."""

    __slots__ = ("_buf", "done", "usage")

    def __init__(self, fallback: Usage) -> None:
        self._buf = bytearray()
        self.usage: Usage | None = fallback
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The events completed by this piece of the stream."""
        self._buf += data.replace(b"\r\n", b"\n")
        end = self._buf.rfind(b"\n\n")
        if end < 0:
            return b""
        out = bytes(self._buf[: end + 2])
        del self._buf[: end + 2]
        for event in out.split(b"\n\n"):
            for line in event.split(b"\n"):
                if line.startswith(b"data:") and b"transcript.text.done" in line:
                    self._finish(line[5:])
        return out

    def _finish(self, payload: bytes) -> None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict) or event.get("type") != "transcript.text.done":
            return
        self.done = True
        usage = event.get("usage")
        if isinstance(usage, dict) and usage.get("type", "tokens") == "tokens":
            self.usage = Usage(prompt=_count(usage.get("input_tokens")), completion=_count(usage.get("output_tokens")))
