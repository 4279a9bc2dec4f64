"""OpenAI's Files and Batch APIs on the wire, for the `openai` and `azure` families: their URLs
(Azure's under `/openai/` with `api-version`), a batch input file checked and its lines pointed at
the deployment's model, and the usage counted out of a batch's output file as it streams by."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidegate.runtime.errors import BadRequest
from sidegate.runtime.plan import Family, Provider
from sidegate.runtime.upstream.urlpath import path_segment
from sidegate.runtime.upstream.usage_check import InvalidUsage, token_count

__all__ = ["BATCH_ENDPOINTS", "OutputMeter", "api_url", "batch_endpoint", "point_batch_lines"]

BATCH_ENDPOINTS = frozenset({"/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions",
                             "/v1/moderations"})
"""The endpoints a batch line may call (OpenAI's Batch API)."""
MAX_LINES = 50_000
"""Requests one batch input file may hold (OpenAI's limit)."""


def api_url(provider: Provider, *parts: str) -> str:
    """The URL of `files/...` or `batches/...` on `provider` (each part one path segment)."""
    path = "/".join(path_segment(p) for p in parts)
    if provider.family is Family.AZURE:
        return f"{provider.base_url}/openai/{path}?api-version={provider.api_version}"
    return f"{provider.base_url}/{path}"


def batch_endpoint(endpoint: str, azure: bool) -> str:
    """A batch endpoint as the upstream names it: OpenAI's `/v1/...`, Azure's without the `/v1`."""
    full = endpoint if endpoint.startswith("/v1/") else "/v1" + endpoint
    return full[3:] if azure else full


def point_batch_lines(data: bytes, names: Iterable[str], model: str, *, azure: bool = False) -> bytes:
    """A batch input file with every line's `body.model` set to the deployment's `model` (and its
    `url` in the upstream's form); a line that is not a batch request, or that names a model other
    than `names` (the group, its aliases, the deployment's own model), is a 400 naming the line: a
    batch is metered at one deployment's price."""
    allowed = set(names) | {model}
    out: list[bytes] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        if len(out) >= MAX_LINES:
            raise BadRequest(f"a batch input file holds at most {MAX_LINES:,} requests", param="file")
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest(f"line {number} of the batch input file is not JSON", param="file") from None
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str) or \
                line.get("method") != "POST" or not isinstance(line.get("body"), dict):
            raise BadRequest(f"line {number} of the batch input file needs custom_id, method POST, url and a body",
                             param="file")
        url = line.get("url")
        if not isinstance(url, str) or batch_endpoint(url, False) not in BATCH_ENDPOINTS:
            raise BadRequest(f"line {number} of the batch input file calls {str(line.get('url'))[:80]!r}; a batch "
                             f"may call {', '.join(sorted(BATCH_ENDPOINTS))}", param="file")
        if line["custom_id"] in seen:
            raise BadRequest(f"line {number} of the batch input file repeats custom_id {line['custom_id'][:80]!r}",
                             param="file")
        seen.add(line["custom_id"])
        named = line["body"].get("model")
        if named not in allowed:
            raise BadRequest(f"line {number} of the batch input file names model {str(named)[:80]!r}, not this "
                             f"file's model group ({', '.join(sorted(names))})", param="file")
        line["body"]["model"] = model
        line["url"] = batch_endpoint(url, azure)
        out.append(orjson.dumps(line))
    if not out:
        raise BadRequest("the batch input file holds no requests", param="file")
    return b"\n".join(out) + b"\n"


@dataclass(slots=True)
class OutputMeter:
    """Sums the usage of a batch output file's lines (`response.body.usage` of each answered request)
    as its bytes go by; a line that is not JSON or carries no valid usage counts nothing."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0
    requests: int = 0
    _partial: bytearray = field(default_factory=bytearray)

    def feed(self, chunk: bytes) -> None:
        """Count every line `chunk` completes."""
        self._partial += chunk
        end = self._partial.rfind(b"\n")
        if end < 0:
            return
        lines = bytes(self._partial[:end])
        del self._partial[:end + 1]
        for line in lines.split(b"\n"):
            self._count(line)

    def finish(self) -> None:
        """Count the last line (a file need not end with a newline)."""
        self._count(bytes(self._partial))
        self._partial.clear()

    def _count(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        response = line.get("response") if isinstance(line, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return
        try:
            prompt, completion, cached = _counts(usage)
        except InvalidUsage:
            return
        self.prompt += prompt
        self.completion += completion
        self.cached += cached
        self.requests += 1


def _counts(usage: dict[str, Any]) -> tuple[int, int, int]:
    """Prompt, completion and cached tokens of a chat/embeddings (`prompt_tokens`) or Responses
    (`input_tokens`) usage object."""
    if "input_tokens" in usage:
        details = usage.get("input_tokens_details")
        cached = token_count(details.get("cached_tokens")) if isinstance(details, dict) else 0
        return token_count(usage.get("input_tokens")), token_count(usage.get("output_tokens")), cached
    details = usage.get("prompt_tokens_details")
    cached = token_count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens")), cached
