"""OpenAI wire format, both ways: upstream URLs, headers and bodies for the `openai` and `azure`
families (and every OpenAI-compatible catalog type), usage extraction, the SSE relay, and the
mapping of upstream error responses into the error hierarchy."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from sidegate.runtime.errors import BadRequest, GatewayError, RateLimited, UpstreamError, UpstreamTimeout
from sidegate.runtime.plan import Family, JSONValue, Provider
from sidegate.runtime.retry_after import parse_retry_after
from sidegate.runtime.upstream.urlpath import path_segment
from sidegate.runtime.upstream.usage_check import InvalidUsage, token_count

__all__ = ["OPS", "SseRelay", "Usage", "error_from_upstream", "json_bytes", "request_body", "responses_url",
           "upstream_url", "usage_from", "valid_usage"]

OPS = {"chat": "chat/completions", "completions": "completions", "embeddings": "embeddings"}
"""Operation -> path under the provider's base URL."""


def upstream_url(provider: Provider, model: str, op: str) -> str:
    """The URL for `op` on `provider` (Azure puts the deployment and api-version in the URL)."""
    if provider.family is Family.AZURE:
        return (
            f"{provider.base_url}/openai/deployments/{path_segment(model)}/{OPS[op]}?api-version={provider.api_version}"
        )
    return f"{provider.base_url}/{OPS[op]}"


def responses_url(provider: Provider) -> str:
    """The Responses API URL of an OpenAI or Azure provider (Azure serves it on its v1 surface, the
    deployment named by `model` in the body)."""
    if provider.family is Family.AZURE:
        return f"{provider.base_url}/openai/v1/responses"
    return f"{provider.base_url}/responses"


def thaw(value: JSONValue) -> Any:
    """A frozen plan JSON value as plain, mutable JSON data."""
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    return value


def request_body(
    body: dict[str, Any], model: str, extra: Mapping[str, JSONValue], stream_usage: bool
) -> bytes:
    """The upstream body: the client's fields (unknown ones pass through) over the target's
    `extra_body`, `model` rewritten, and usage requested on streams when the upstream supports it."""
    out = {k: thaw(v) for k, v in extra.items()} if extra else {}
    out.update(body)
    out["model"] = model
    if stream_usage and body.get("stream") is True:
        options = body.get("stream_options")
        out["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json_bytes(out)


def json_bytes(obj: Any) -> bytes:
    """`orjson.dumps(obj)` copied to its exact size, for bytes that live as long as a call (a request
    body is held until its answer ends). orjson's result keeps the buffer it grew: 4 KiB for any
    small object, about 7x the length of a long string; 1,000 paced streams held 4 MB of it. The
    copy costs ~0.2 us for a chat body."""
    return memoryview(orjson.dumps(obj)).tobytes()


@dataclass(slots=True)
class Usage:
    """Token counts reported by the upstream (and the units a media answer is priced by)."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0
    reasoning: int = 0
    images: int = 0
    seconds: float = 0.0
    """Seconds of audio transcribed or translated."""
    characters: int = 0
    """Characters of speech input."""
    search_units: int = 0
    image_kind: str = field(default="", kw_only=True)
    """The images' `quality/size` (what a per-kind image price is looked up by)."""


def usage_from(obj: Any) -> Usage | None:
    """Usage from a response or chunk object, when it carries one; raises InvalidUsage when a count
    in it is not a valid token count (see :mod:`runtime.upstream.usage_check`)."""
    if not isinstance(obj, dict):
        return None
    u = obj.get("usage")
    if not isinstance(u, dict):
        return None
    prompt_details = u.get("prompt_tokens_details")
    completion_details = u.get("completion_tokens_details")
    return Usage(
        prompt=token_count(u.get("prompt_tokens")),
        completion=token_count(u.get("completion_tokens")),
        cached=token_count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0,
        reasoning=token_count(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else 0,
    )


def valid_usage(obj: Any) -> Usage | None:
    """:func:`usage_from`, with an invalid usage treated as absent (the call is then metered locally)."""
    try:
        return usage_from(obj)
    except InvalidUsage:
        return None


_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_USAGE_NULL = re.compile(rb',\s*"usage"\s*:\s*null')


class SseRelay:
    """Re-frames an upstream SSE byte stream into whole events for the client.

    Bytes pass through untouched except the events that carry a usage object: those are parsed to
    record usage, and the usage-only final chunk is dropped when the client did not ask for it
    (sidegate always asks upstream). Complete events from one read are returned together so they
    go out in one write.
    """

    __slots__ = ("_buf", "_invalid", "done", "keep_usage", "usage")

    def __init__(self, keep_usage: bool) -> None:
        self._buf = bytearray()
        self.keep_usage = keep_usage
        self.usage: Usage | None = None
        self.done = False
        self._invalid = False

    def feed(self, data: bytes) -> bytes:
        """Bytes to send now: every complete event received so far.

        Linear in the bytes received: only the new bytes (and the 3 before them, where a terminator
        may have begun) are searched for an event end, and a partial event is never re-copied whole.
        Per event it costs a few memchr-fast searches (~10k instructions; a regex scan of every byte
        and `in` tests, which first try the needle as an int and raise, cost 3x that).
        """
        buf = self._buf
        if buf:  # a partial event is waiting: search the new bytes and the 3 before them
            resume = max(0, len(buf) - 3)
            buf += data
            src: bytes | bytearray = buf
        else:  # the common case, whole events per read: search `data` itself, no copy
            resume, src = 0, data
        if src.find(13, resume) < 0:  # (an int: bytearray.find(b"...") first tries it as one)
            # LF line ends (every OpenAI-wire server's): one backwards memchr-fast search for the
            # last blank line instead of a regex over every byte.
            end = src.rfind(b"\n\n", resume)
            if end < 0:
                if src is data:
                    buf += data
                return b""
            end += 2
        else:
            last = None
            for match in _EVENT_END.finditer(src, resume):
                last = match
            if last is None:
                if src is data:
                    buf += data
                return b""
            end = last.end()
        if src is data:
            complete = data if end == len(data) else data[:end]
            if end < len(data):
                buf += data[end:]
        else:
            complete = bytes(buf[:end])
            del buf[:end]
        if complete.find(b"[DONE]") >= 0:
            self.done = True
        if not self.keep_usage and complete.find(b',"usage":null') >= 0:
            # Usage was asked upstream on the client's behalf; chunks go back as it would see them
            # (the compact form with a plain replace: the regex below is for spaced JSON).
            complete = complete.replace(b',"usage":null', b"")
        if complete.find(b'"usage"') < 0:  # (`find`, not `in`: `in` first tries the needle as an int)
            return complete
        if not self.keep_usage:
            complete = _USAGE_NULL.sub(b"", complete)
        if _USAGE_OBJECT.search(complete) is None:
            return complete
        return b"".join(self._inspect(e) for e in _split(complete))

    def _inspect(self, event: bytes) -> bytes:
        if _USAGE_OBJECT.search(event) is None:
            return event
        data = b"".join(
            line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")
        )
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        try:
            usage = usage_from(obj)
        except InvalidUsage:
            # Treated as absent for the whole stream (metered locally), however later chunks look.
            self._invalid, self.usage, usage = True, None, None
            if not self.keep_usage and obj.get("choices") == []:
                return b""
        if usage is not None and not self._invalid:
            self.usage = usage
            if not self.keep_usage and obj.get("choices") == []:
                return b""
        return event


def _split(block: bytes) -> list[bytes]:
    events, start = [], 0
    for m in _EVENT_END.finditer(block):
        events.append(block[start : m.end()])
        start = m.end()
    return events


_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}
_CONTENT_CODES = {"content_filter", "content_policy_violation"}


def _message(body: bytes) -> tuple[str, str | None, str | None]:
    """The upstream's error message, param and code (OpenAI's envelope, or close to it)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:300].decode("utf-8", "replace").strip()
        return (text or "no body"), None, None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict):
        param, code = err.get("param"), err.get("code")
        return (
            str(err.get("message") or "no message"),
            param if isinstance(param, str) else None,
            code if isinstance(code, str) else None,
        )
    if isinstance(err, str):
        return err, None, None
    if isinstance(obj, dict) and isinstance(obj.get("message"), str):
        return obj["message"], None, None
    return body[:300].decode("utf-8", "replace"), None, None


def error_from_upstream(status: int, headers: httpx.Headers, body: bytes) -> GatewayError:
    """Map an upstream error response to the error the client gets (context-window overflows and
    content-filter refusals keep recognisable codes: the router falls back on them)."""
    message, param, code = _message(body)
    if status == 400 and code in _CONTEXT_CODES:
        return BadRequest(message, param=param, code="context_length_exceeded")
    if status == 400 and code in _CONTENT_CODES:
        return BadRequest(message, param=param, code="content_policy_violation")
    if status == 429:
        return RateLimited(f"upstream rate limit: {message}", retry_after=parse_retry_after(headers), code=code)
    if status in (408, 504):
        return UpstreamTimeout(f"upstream timed out (HTTP {status}): {message}")
    if status in (401, 403):
        return UpstreamError(
            f"upstream rejected sidegate's credentials (HTTP {status}): {message}", code="upstream_auth_error"
        )
    if status >= 500 or status < 400:
        return UpstreamError(f"upstream returned HTTP {status}: {message}")
    return BadRequest(message, param=param, status=status, code="upstream_rejected")
