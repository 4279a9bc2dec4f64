"""Wire pieces every native adapter shares: an SSE event parser, the writer of OpenAI
`chat.completion.chunk` events, the OpenAI `chat.completion` body, and the mapping of an upstream
error (status, message) into the error hierarchy.

Pure: no I/O. The clock used for `created` is passed in by the adapter.
"""

from __future__ import annotations

import base64
import mimetypes
import re
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from sidegate.runtime.errors import BadRequest, GatewayError, Overloaded, RateLimited, UpstreamError, UpstreamTimeout
from sidegate.runtime.retry_after import parse_retry_after
from sidegate.runtime.upstream.openai_wire import Usage, json_bytes
from sidegate.runtime.upstream.transport import UpstreamRequest
from sidegate.runtime.upstream.usage_check import InvalidUsage

__all__ = [
    "ChunkWriter",
    "NativeAdapterBase",
    "NativeStream",
    "RequestAuthorizer",
    "SseEvent",
    "SseParser",
    "completion_body",
    "data_url",
    "embedding_inputs",
    "embeddings_body",
    "guess_media_type",
    "header_value",
    "json_body",
    "loads_upstream",
    "retry_after_seconds",
    "unsupported",
    "upstream_error",
    "usage_object",
    "with_header",
]


class NativeAdapterBase:
    """What every native adapter shares: the `drop_unsupported` rule and a wall clock for the
    `created` field of translated answers (injectable for tests)."""

    stream_content_type = "text/event-stream"

    def __init__(self, *, drop_unsupported: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.drop_unsupported = drop_unsupported
        self._clock = clock


class NativeStream:
    """What every native stream translator keeps: whether the client asked for the usage chunk, the
    usage seen so far, whether the stream completed, and the `created` and `model` of its chunks."""

    __slots__ = ("_created", "_invalid", "_model", "done", "keep_usage", "usage")

    def __init__(self, keep_usage: bool, created: int, model: str) -> None:
        self.keep_usage = keep_usage
        self.usage: Usage | None = None
        self.done = False
        self._created = created
        self._model = model
        self._invalid = False

    def take_usage(self, read: Callable[..., Usage | None], *args: Any) -> None:
        """Record the usage `read(*args)` finds in an event (None: the event has none). An invalid
        count makes the whole stream's usage absent (metered locally), whatever later events say."""
        if self._invalid:
            return
        try:
            usage = read(*args)
        except InvalidUsage:
            self._invalid, self.usage = True, None
            return
        if usage is not None:
            self.usage = usage


class RequestAuthorizer(Protocol):
    """Adds credentials to a finished upstream request (Vertex bearer token, Bedrock SigV4).

    The proxy calls it just before sending; an implementation leaves the event loop only when it
    must do I/O (a token refresh, a credential-chain lookup).
    """

    async def authorize(self, request: UpstreamRequest) -> UpstreamRequest:
        """The same request with its authorization headers added."""
        ...


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: its `event:` name (empty when absent) and its joined `data:` lines."""

    event: str
    data: str


_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class SseParser:
    """Splits an SSE byte stream into whole events; chunk boundaries may fall anywhere."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[SseEvent]:
        """The events completed by `data` (linear in the bytes: only new bytes are searched for an
        event end, and a partial event is never re-copied whole)."""
        buf = self._buf
        resume = max(0, len(buf) - 3)
        buf += data
        if buf.find(b"\n", resume) < 0 and buf.find(b"\r", resume) < 0:
            return []  # no line end at all in the new bytes: nothing can have completed (memchr-fast)
        events: list[SseEvent] = []
        start = 0
        for match in _EVENT_END.finditer(buf, resume):
            block = bytes(buf[start : match.start()])
            start = match.end()
            event = _parse_block(block)
            if event is not None:
                events.append(event)
        if start:
            del buf[:start]
        return events

    def objects(self, data: bytes, provider: str, done: Callable[[], bool]) -> Iterator[tuple[str, Any]]:
        """Each event's data and its JSON value, for the events completed by `data` while `done()`
        is false (a provider's stream, `[DONE]` and empty events skipped); an event that is not JSON
        is the provider's 502."""
        for event in self.feed(data):
            if done():
                return
            text = event.data
            if not text or text.strip() == "[DONE]":
                continue
            try:
                yield text, orjson.loads(text)
            except orjson.JSONDecodeError:
                raise upstream_error(provider, 502, "unreadable stream event") from None

    def chunks(self, data: bytes) -> Iterator[dict[str, Any] | None]:
        """The JSON objects of an OpenAI chat stream's events completed by `data`, and None for its
        `[DONE]` (what the dialects translating OpenAI chunks read; other events are skipped)."""
        for event in self.feed(data):
            text = event.data
            if not text:
                continue
            if text.strip() == "[DONE]":
                yield None
                continue
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                yield obj


def _parse_block(block: bytes) -> SseEvent | None:
    name = ""
    data: list[str] = []
    for raw in block.splitlines():
        line = raw.decode("utf-8", "replace")
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if not data and not name:
        return None
    return SseEvent(name, "\n".join(data))


def usage_object(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage object for `usage`."""
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


def completion_body(
    *,
    id: str,
    model: str,
    created: int,
    text: str,
    reasoning: str,
    tool_calls: list[tuple[str, str, str]],
    finish_reason: str,
    usage: Usage | None,
) -> bytes:
    """An OpenAI `chat.completion` body; `tool_calls` are (id, name, arguments JSON text)."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in tool_calls
        ]
    out: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        out["usage"] = usage_object(usage)
    return orjson.dumps(out)


class ChunkWriter:
    """Writes OpenAI `chat.completion.chunk` SSE events for one streamed answer.

    The role chunk goes out before the first delta; tool calls are numbered 0, 1, ... in the order
    they start; the usage chunk (`choices: []`) only when the client asked for it.
    """

    __slots__ = ("_created", "_id", "_model", "keep_usage", "started")

    def __init__(self, id: str, model: str, created: int, keep_usage: bool) -> None:
        self._id = id
        self._model = model
        self._created = created
        self.keep_usage = keep_usage
        self.started = False

    def _event(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if usage is not None:
            obj["usage"] = usage_object(usage)
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        head = self.role()
        return head + self._event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])

    def role(self) -> bytes:
        """The first chunk (`role: assistant`), once."""
        if self.started:
            return b""
        self.started = True
        return self._event(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
        )

    def text(self, text: str) -> bytes:
        """A content delta."""
        return self._delta({"content": text}) if text else b""

    def reasoning(self, text: str) -> bytes:
        """A reasoning delta (`reasoning_content`, the field most OpenAI-compatible servers use)."""
        return self._delta({"reasoning_content": text}) if text else b""

    def tool_start(self, index: int, call_id: str, name: str, arguments: str = "") -> bytes:
        """The first delta of tool call `index`: its id and name (and any arguments already known)."""
        call = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        return self._delta({"tool_calls": [call]})

    def tool_args(self, index: int, fragment: str) -> bytes:
        """A fragment of tool call `index`'s arguments."""
        if not fragment:
            return b""
        return self._delta({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})

    def finish(self, reason: str) -> bytes:
        """The chunk carrying the finish reason."""
        return self._delta({}, reason)

    def end(self, usage: Usage | None) -> bytes:
        """The usage chunk (when kept) and `[DONE]`."""
        tail = b"data: [DONE]\n\n"
        if self.keep_usage and usage is not None:
            return self._event([], usage) + tail
        return tail


def embeddings_body(vectors: list[list[float]], model: str, prompt_tokens: int, encoding_format: str | None) -> bytes:
    """OpenAI's embeddings list; vectors as base64 little-endian float32 when the client asked so
    (the `openai` SDK does by default)."""
    data: list[dict[str, Any]] = []
    for index, vector in enumerate(vectors):
        value: Any = vector
        if encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})


def embedding_inputs(body: Mapping[str, Any], provider: str) -> list[str]:
    """The texts of an OpenAI embeddings request (token arrays are not translatable)."""
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequest(f"{provider} embeddings take a string or an array of strings", param="input")
    return texts


_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*?;base64,(?P<data>.*)", re.S)


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:...;base64,...` URL, or None for other URLs."""
    match = _DATA_URL.fullmatch(url)
    if match is None:
        return None
    return match.group("mime") or "application/octet-stream", match.group("data")


def guess_media_type(url: str) -> str | None:
    """The media type an image URL's extension suggests."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    guessed, _ = mimetypes.guess_type(path)
    return guessed


def header_value(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    """A header's value (case-insensitive), or None."""
    lowered = name.lower()
    for key, value in headers:
        if key.lower() == lowered:
            return value
    return None


def with_header(headers: tuple[tuple[str, str], ...], name: str, value: str) -> tuple[tuple[str, str], ...]:
    """`headers` with `name` set to `value` unless it is already there (configured headers win)."""
    if header_value(headers, name) is not None:
        return headers
    return (*headers, (name, value))


def json_body(obj: Any) -> bytes:
    """Request bytes (exact-size: see :func:`json_bytes`)."""
    return json_bytes(obj)


def loads_upstream(body: bytes) -> Any:
    """Parse an upstream JSON body; unreadable bodies become UpstreamError."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError("upstream answered with invalid JSON") from None


def retry_after_seconds(headers: httpx.Headers | Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` / `retry-after`: finite, bounded, None when unreadable."""
    return parse_retry_after(headers)


_CONTEXT = re.compile(
    r"prompt is too long|context (length|window)|maximum context|too many (input )?tokens|input is too long"
    r"|exceeds? the maximum number of tokens|input token count|maximum prompt length"
    r"|too long for (the )?requested model",
    re.I,
)
_POLICY = re.compile(
    r"content[ _-]?(filter|policy|moderation|blocked)|blocked by (the )?(safety|content)|guardrail"
    r"|prohibited[ _]content|output blocked|safety (filter|system|setting)",
    re.I,
)


def upstream_error(
    provider: str,
    status: int,
    message: str,
    *,
    retry_after: float | None = None,
    auth: bool = False,
    param: str | None = None,
    code: str | None = None,
) -> GatewayError:
    """The GatewayError for an upstream error answer.

    429 -> RateLimited (Retry-After kept); 408/504 -> UpstreamTimeout; 401/403 (or `auth`) ->
    UpstreamError `upstream_auth_error`; 529 -> Overloaded; other 5xx -> UpstreamError; other 4xx ->
    BadRequest with the provider's message. Context-window overflows get `context_length_exceeded`
    and content-filter refusals `content_policy_violation`, so the router can fall back on them.
    """
    if status == 429:
        return RateLimited(f"{provider} rate limit: {message}", retry_after=retry_after, code=code)
    if status in (408, 504):
        return UpstreamTimeout(f"{provider} timed out (HTTP {status}): {message}")
    if auth or status in (401, 403):
        return UpstreamError(
            f"{provider} rejected sidegate's credentials (HTTP {status}): {message}", code="upstream_auth_error"
        )
    if status == 529:
        return Overloaded(f"{provider} is overloaded (HTTP 529): {message}", retry_after=retry_after)
    if status >= 500 or status < 400:
        return UpstreamError(f"{provider} returned HTTP {status}: {message}")
    if _CONTEXT.search(message):
        code = "context_length_exceeded"
    elif _POLICY.search(message):
        code = "content_policy_violation"
    else:
        code = "upstream_rejected"
    return BadRequest(message, param=param, status=status, code=code)


def unsupported(provider: str, what: str, param: str = "messages") -> BadRequest:
    """A 400 for input the provider cannot take."""
    return BadRequest(f"{what} is not supported by {provider}", param=param, code="unsupported_parameter")
