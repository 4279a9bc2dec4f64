"""The response cache's parts alone: keys (what counts, what does not, scopes), the client's
opt-outs, the memory LRU (bounded by bytes, a clock the test controls), entries, and streams
assembled into whole answers and replayed back, in both dialects."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sidegate.runtime.cache.assemble import assemble
from sidegate.runtime.cache.entry import Entry, decode, encode
from sidegate.runtime.cache.keys import cacheable, context_digest, options, request_digest, scope_of
from sidegate.runtime.cache.memory import OVERHEAD, MemoryBackend
from sidegate.runtime.cache.replay import replay_stream
from sidegate.runtime.errors import BadRequest
from sidegate.runtime.plan.cache import CacheMode, CachePolicy, CacheScope
from sidegate.runtime.upstream.openai_wire import Usage

POLICY = CachePolicy(mode=CacheMode.EXACT, ttl=60.0, max_entry=1 << 20, operations=("chat",),
                     scope=CacheScope.TEAM, sampled=False, threshold=0.9)
BASE: dict[str, Any] = {"model": "fast", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}


def test_the_key_ignores_delivery_and_identity_but_not_what_changes_the_answer() -> None:
    key = request_digest("chat", "fast", "team:a", BASE)
    same = {**BASE, "model": "fast-alias", "user": "u", "stream": True, "stream_options": {"include_usage": True},
            "metadata": {"k": "v"}, "store": True}
    assert request_digest("chat", "fast", "team:a", dict(reversed(list(same.items())))) == key
    for changed in ({"temperature": 0.5}, {"max_tokens": 9}, {"tools": [{"type": "function"}]}, {"seed": 1},
                    {"messages": [{"role": "user", "content": "hi!"}]}):
        assert request_digest("chat", "fast", "team:a", {**BASE, **changed}) != key, changed
    assert request_digest("chat", "fast", "team:b", BASE) != key
    assert request_digest("chat", "other", "team:a", BASE) != key
    assert request_digest("completions", "fast", "team:a", BASE) != key
    assert key.split(":")[0] != request_digest("chat", "other", "team:a", BASE).split(":")[0], "group tags differ"
    assert context_digest("chat", "fast", "t", BASE) == context_digest(
        "chat", "fast", "t", {**BASE, "messages": [{"role": "user", "content": "other words"}]})


def test_scopes_and_sampling() -> None:
    assert scope_of(POLICY, "alpha", "h1") == "team:alpha"
    assert scope_of(POLICY, None, "h1") == "key:h1" and scope_of(POLICY, None, None) == "anonymous"
    assert scope_of(CachePolicy(**{**_fields(POLICY), "scope": CacheScope.GLOBAL}), "alpha", "h1") == "*"
    assert cacheable(POLICY, "chat", BASE) and cacheable(POLICY, "chat", {**BASE, "temperature": 0.0})
    assert not cacheable(POLICY, "chat", {**BASE, "temperature": 0.2})
    assert not cacheable(POLICY, "chat", {k: v for k, v in BASE.items() if k != "temperature"})
    assert not cacheable(POLICY, "chat", {**BASE, "temperature": False})
    assert cacheable(POLICY, "embeddings", {"model": "e", "input": "x"})
    assert cacheable(CachePolicy(**{**_fields(POLICY), "sampled": True}), "chat", {**BASE, "temperature": 1})


def _fields(p: CachePolicy) -> dict[str, Any]:
    return {f: getattr(p, f) for f in p.__dataclass_fields__}


def test_options_from_headers_and_the_body_field_which_is_taken_out() -> None:
    data = {**BASE, "cache": {"no_store": True}}
    got = options([(b"cache-control", b"max-age=0, No-Cache")], data)
    assert got.no_cache and got.no_store and "cache" not in data
    assert not options([(b"cache-control", b"max-age=5")], dict(BASE)).no_cache
    for bad in ("yes", {"no_cache": 1}, {"ttl": 5}):
        with pytest.raises(BadRequest, match="'cache' must be"):
            options([], {**BASE, "cache": bad})


async def test_the_memory_lru_is_bounded_by_bytes_and_expires_by_the_clock() -> None:
    now = [1000.0]
    evicted: list[str] = []
    value = b"x" * 100
    entry_size = len("t:k1") + len(value) + OVERHEAD
    lru = MemoryBackend(3 * entry_size, clock=lambda: now[0], on_evict=lambda reason, n: evicted.append(reason))
    for i in range(3):
        assert await lru.put(f"t:k{i}", value, 10.0)
    assert await lru.get("t:k0") == value  # k0 is now the most recently used
    assert await lru.put("t:k3", value, 10.0)
    assert await lru.get("t:k1") is None and await lru.get("t:k0") == value, "the least recently used goes first"
    assert lru.size == 3 * entry_size and evicted == ["size"]
    assert not await lru.put("t:big", b"x" * (4 * entry_size), 10.0), "larger than the whole bound"
    now[0] += 10.0
    assert await lru.get("t:k0") is None and evicted[-1] == "expired"
    assert await lru.sweep() == 2 and lru.size == 0 and len(lru) == 0
    await lru.put("a:1", value, 10.0)
    await lru.put("b:1", value, 10.0)
    assert await lru.purge("a") == 1 and await lru.get("b:1") == value


def test_entries_round_trip_and_damaged_ones_are_refused() -> None:
    entry = Entry(b'{"x": 1}\n', Usage(10, 5, 2, 1), 0.25)
    assert decode(encode(entry)) == entry
    assert decode(encode(Entry(b"{}", None, 0.0))) == Entry(b"{}", None, 0.0)
    for damaged in (b"", b"not json\n{}", b'{"v": 2}\n{}', b'{"v": 1}'):
        assert decode(damaged) is None


CHAT = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "Paris, of course.", "refusal": None},
     "logprobs": None, "finish_reason": "stop"},
    {"index": 1, "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
     "logprobs": None, "finish_reason": "tool_calls"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [
    {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
    {"type": "text", "text": "Paris."},
    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}],
    "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 4}}
COMPLETION = {"id": "t1", "object": "text_completion", "created": 1, "model": "m", "choices": [
    {"index": 0, "text": "Paris.", "logprobs": None, "finish_reason": "length"}], "usage": {"prompt_tokens": 1}}


@pytest.mark.parametrize(("op", "answer"), [("chat", CHAT), ("messages", MESSAGE), ("completions", COMPLETION)])
def test_a_replayed_stream_assembles_back_into_the_same_answer(op: str, answer: dict[str, Any]) -> None:
    stream = replay_stream(op, orjson.dumps(answer), {"stream_options": {"include_usage": True}})
    assert stream.endswith(b"data: [DONE]\n\n" if op != "messages" else b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    whole = assemble(op, stream)
    assert whole is not None
    assert orjson.loads(whole) == answer
    for cut in (len(stream) // 2, len(stream) - 5):
        assert assemble(op, stream[:cut]) is None, "a stream cut midway assembles to nothing"


def test_streams_with_errors_or_without_usage_asked() -> None:
    stream = replay_stream("chat", orjson.dumps(CHAT), {})
    assert b'"usage"' not in stream, "no usage chunk unless include_usage asks for it"
    error = stream.replace(b"data: [DONE]", b'data: {"error": {"message": "boom"}}\n\ndata: [DONE]')
    assert assemble("chat", error) is None
    anthropic_error = replay_stream("messages", orjson.dumps(MESSAGE), {}).replace(
        b"event: message_stop", b'event: error\ndata: {"type": "error"}\n\nevent: message_stop')
    assert assemble("messages", anthropic_error) is None
