"""A streamed answer kept for local metering (`Call.keep`): past `KEEP_EVENTS` bytes its events are
reduced to their generated text, and the count is the one the whole answer gives."""

from __future__ import annotations

import json

import pytest

from sidegate.runtime.routing.call import KEEP_EVENTS, Call
from sidegate.runtime.upstream import tokens


def _event(i: int) -> bytes:
    delta = {"content": f"word{i} "} if i % 7 else {"tool_calls": [{"index": 0, "function": {"arguments": f'{{"n":{i}}}'}}]}
    chunk = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _kept(pieces: list[bytes]) -> Call:
    call = Call("r", "chat", 0.0)
    for piece in pieces:
        call.keep(piece)
    return call


def test_a_long_stream_is_kept_as_text_and_counted_as_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "start_loading", lambda: None)  # (counted roughly: no encoding loaded here)
    events = [_event(i) for i in range(2000)]
    whole = b"".join(events)
    # events one by one, and in reads that end mid-line (as a relay never sends, but a line is a line)
    for pieces in (events, [whole[i:i + 1000] for i in range(0, len(whole), 1000)]):
        call = _kept(pieces)
        answer, text = call.answer_events()
        assert text is not None and len(answer) < KEEP_EVENTS + 1000
        assert text + tokens.text_of_events(answer) == tokens.text_of_answer(whole)
        assert tokens.estimate_usage(None, answer, "chat", text) == tokens.estimate_usage(None, whole, "chat")
    assert sum(len(t) for t in _kept(events).answer_text or ()) < len(whole) // 10


def test_a_short_stream_and_a_json_answer_are_kept_as_they_are() -> None:
    short = _kept([_event(1), _event(2)])
    assert short.answer_events() == (_event(1) + _event(2), None)
    body = json.dumps({"choices": [{"message": {"content": "x" * KEEP_EVENTS}}]}).encode() + b"\n"
    whole = _kept([body])
    assert whole.answer_events() == (body, None)
