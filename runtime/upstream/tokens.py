"""Local token counts under tiktoken's `o200k_base` encoding, shipped with sidegate (nothing downloads).

The BPE ranks are package data (`runtime/data/o200k_base.tiktoken.gz`, the file OpenAI publishes for
tiktoken, checked against tiktoken's own SHA-256 when it loads), counted by the lean counter of
:mod:`runtime.upstream.bpe` (tiktoken's counts in ~5 MB instead of its ~50-70 MB). Used for prompt
estimates (context windows, tpm), `/v1/messages/count_tokens`, and to meter answers whose provider
reported no usage. `o200k_base` is the encoding of OpenAI's current models; for other families the
count is an approximation of their own tokenizer's.

The ranks take ~0.3-0.7 s to load, so they are loaded only once something needs them, off the event
loop: `/v1/messages/count_tokens` waits for them in a worker thread; an answer without usage that
arrives before they are ready starts the load and is metered at ~4 characters a token (its spend
row is flagged estimated either way). A direct `count()` loads them in the calling thread.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson
import trio

from sidegate.runtime.upstream.bpe import Counter
from sidegate.runtime.upstream.openai_wire import Usage

__all__ = [
    "ENCODING", "count", "estimate_usage", "is_loaded", "load", "prompt_tokens", "rough", "start_loading",
    "text_of_answer", "text_of_events",
]

ENCODING = "o200k_base"
_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
"""tiktoken's expected hash of o200k_base.tiktoken (tiktoken_ext.openai_public)."""
_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

MESSAGE_OVERHEAD = 3
"""Tokens of framing per chat message (role and separators), as OpenAI documents for its chat models."""
REPLY_OVERHEAD = 3
"""Tokens that prime the assistant's reply."""
IMAGE_TOKENS = 1600
"""A flat charge for an image part (Anthropic's figure for a ~1.15-megapixel image)."""

_lock = threading.Lock()
_encoding: Counter | None = None


def _counter() -> Counter:
    raw = gzip.decompress(resources.files("sidegate.runtime").joinpath("data/o200k_base.tiktoken.gz").read_bytes())
    if hashlib.sha256(raw).hexdigest() != _SHA256:
        raise RuntimeError("the shipped o200k_base encoding is damaged (SHA-256 mismatch)")
    return Counter(io.BytesIO(raw), _PATTERN)  # line by line: no second copy of the file as a list


def load() -> Counter:
    """The counter, loaded once (thread-safe; blocking: call it from a worker thread at start)."""
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                _encoding = _counter()
    return _encoding


_loading = False


def start_loading() -> None:
    """Load the encoding in a worker thread, once, without waiting (call from the Trio loop)."""
    global _loading
    if _encoding is None and not _loading:
        _loading = True
        trio.lowlevel.spawn_system_task(trio.to_thread.run_sync, load)


def is_loaded() -> bool:
    """Whether the encoding is in memory (counting will not block to load it)."""
    return _encoding is not None


def count(text: str) -> int:
    """Tokens in `text` (special-token markers in it count as ordinary text)."""
    return load().count(text) if text else 0


def rough(text: str) -> int:
    """A cheap stand-in for `count`: ~4 characters a token."""
    return (len(text) + 3) // 4


_TEXT_KEYS = frozenset({"choices", "message", "delta", "content", "content_block", "text", "thinking", "refusal",
                        "reasoning_content", "tool_calls", "function", "name", "arguments", "partial_json"})
"""Members that hold generated or prompt text, in OpenAI's and Anthropic's shapes (role, ids, model names
and other bookkeeping are left out)."""
_JSON_KEYS = frozenset({"input", "parameters"})
"""Members whose object is sent to the model as JSON text (tool-use input, function parameters)."""
_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})


def _collect(value: Any, out: list[str], extra: list[int]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, int) and not isinstance(item, bool):
                extra.append(1)  # a pre-tokenised prompt: one token an entry
            else:
                _collect(item, out, extra)
    elif isinstance(value, dict):
        if value.get("type") in _IMAGE_TYPES:
            extra.append(IMAGE_TOKENS)
            return
        for key, item in value.items():
            if key in _JSON_KEYS and isinstance(item, dict):
                out.append(orjson.dumps(item).decode())
            elif key in _TEXT_KEYS:
                _collect(item, out, extra)


def prompt_tokens(data: dict[str, Any], counter: Callable[[str], int] = count) -> int:
    """Tokens of a request's prompt: chat messages (OpenAI or Anthropic shape) with their framing, the
    system prompt and tool definitions; or a completion prompt; or an embeddings input."""
    texts: list[str] = []
    extra: list[int] = []
    messages = data.get("messages")
    overhead = 0
    if isinstance(messages, list):
        overhead = MESSAGE_OVERHEAD * len(messages) + REPLY_OVERHEAD
        _collect(messages, texts, extra)
        _collect(data.get("system"), texts, extra)
        tools = data.get("tools")
        if isinstance(tools, list) and tools:
            texts.append(orjson.dumps(tools).decode())
    else:
        _collect(data.get("prompt", data.get("input")), texts, extra)
    return counter("\n".join(texts)) + overhead + sum(extra)


def _objects(body: bytes) -> list[Any]:
    stripped = body.lstrip()
    if stripped.startswith(b"{"):
        try:
            return [orjson.loads(stripped)]
        except orjson.JSONDecodeError:
            return []
    return _event_objects(body)


def _event_objects(body: bytes) -> list[Any]:
    objects = []
    for line in body.splitlines():
        payload = line[5:].strip() if line.startswith(b"data:") else b""
        if payload.startswith(b"{"):
            try:
                objects.append(orjson.loads(payload))
            except orjson.JSONDecodeError:
                continue
    return objects


def text_of_answer(body: bytes) -> str:
    """The generated text of an answer as the client got it: a JSON body or server-sent events, in
    OpenAI's or Anthropic's shape (text, reasoning, tool names and arguments)."""
    texts: list[str] = []
    _collect(_objects(body), texts, [])
    return "".join(texts)


def text_of_events(body: bytes) -> str:
    """:func:`text_of_answer` of server-sent events, line by line: for lines `a` and `b`,
    `text_of_events(a + b) == text_of_events(a) + text_of_events(b)` (a long stream's answer is
    reduced to its text as it goes: `runtime.routing.call.Call.keep`)."""
    texts: list[str] = []
    _collect(_event_objects(body), texts, [])
    return "".join(texts)


def estimate_usage(request: dict[str, Any] | None, answer: bytes, op: str, text: str | None = None) -> Usage:
    """Usage counted locally: the request's prompt and the answer's generated text (exactly once the
    encoding is loaded; until then roughly, with the load started: this runs on the event loop).
    `text`: the text of the answer's first events, already reduced; `answer` is then the events after
    them."""
    counter = count if is_loaded() else rough
    if counter is rough:
        start_loading()
    prompt = prompt_tokens(request, counter) if request is not None else 0
    generated = text_of_answer(answer) if text is None else text + text_of_events(answer)
    completion = 0 if op == "embeddings" else counter(generated)
    return Usage(prompt=prompt, completion=completion)
