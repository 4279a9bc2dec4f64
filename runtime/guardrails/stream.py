"""during_call: guardrails on a streamed answer as it passes, in the client's dialect.

The answer's server-sent events are split whole (never forwarded half-written) and the text each
one adds is read per channel (a chat choice, a Messages content block, a Responses output part).
Each channel's text is checked on a sliding window: the last `width` characters already seen plus
the new ones, where `width` is the longest finding the stream's guardrails can have (at most
`detect.WINDOW`). Events are held back until their text is more than `width` characters behind the
channel's end, so a phrase split across events is caught before any of it reaches the client, and
a finding that touches the window's end (it may still grow, or stop matching) is decided with the
next text. Each event costs a scan of at most `width` plus its own characters: linear in the stream.

A block drops what is held, ends the stream with one error event in the client's dialect and
raises `GuardrailBlocked`, which stops the upstream read.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidegate.runtime.asgi import Send
from sidegate.runtime.errors import GuardrailBlocked, openai_body
from sidegate.runtime.guardrails.detect import Detector
from sidegate.runtime.plan.guardrails import GuardAction, GuardKind

__all__ = ["StreamGuard", "error_event"]

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_TERMINAL = frozenset({"response.completed", "response.incomplete"})
Channel = tuple[Any, ...]
Decision = tuple[str, str, str, dict[str, object]]
"""(guardrail, mode, outcome, fields to log), as `service` records them."""


def error_event(op: str, err: GuardrailBlocked, sequence: int) -> bytes:
    """The event that ends a blocked stream: OpenAI's `data: {"error": ...}` for chat and
    completions, the Responses API's `error` event (numbered after the last one sent)."""
    if op == "responses":
        payload = {"type": "error", "code": err.code, "message": err.message, "param": None,
                   "guardrail": err.guardrail, "sequence_number": sequence}
        return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"
    return b"data: " + openai_body(err) + b"\n\n"


def _texts(op: str, obj: Any) -> tuple[list[tuple[Channel, str]], list[Channel], int | None]:
    """The text an event adds per channel, the channels it ends, and its Responses sequence number."""
    added: list[tuple[Channel, str]] = []
    ended: list[Channel] = []
    if not isinstance(obj, dict):
        return added, ended, None
    if op == "messages":
        kind = obj.get("type")
        delta = obj.get("delta")
        if kind == "content_block_delta" and isinstance(delta, dict) and isinstance(delta.get("text"), str):
            added.append((("b", obj.get("index")), delta["text"]))
        elif kind == "content_block_stop":
            ended.append(("b", obj.get("index")))
        return added, ended, None
    if op == "responses":
        kind = obj.get("type")
        part: Channel = ("o", obj.get("output_index"), obj.get("content_index"))
        if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str):
            added.append((part, obj["delta"]))
        elif kind == "response.output_text.done":
            ended.append(part)
        sequence = obj.get("sequence_number")
        return added, ended, sequence if isinstance(sequence, int) else None
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        channel = ("c", choice.get("index"))
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if isinstance(text, str) and text:
            added.append((channel, text))
        if choice.get("finish_reason") is not None:
            ended.append(channel)
    return added, ended, None


def _payload(event: bytes) -> Any:
    lines = [line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    if not lines or lines == [b"[DONE]"]:
        return None
    try:
        return orjson.loads(b"\n".join(lines))
    except orjson.JSONDecodeError:
        return None


@dataclass(slots=True)
class _Text:
    """One channel's window: its text from absolute offset `start` to `start + len(text)`."""

    start: int = 0
    text: str = ""
    keep_from: int = 0
    """Text before this offset has been checked for good: events ending there may go out."""
    new: int = 0
    """Characters added since the last scan."""
    done: bool = False

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(slots=True)
class _Held:
    raw: bytes
    ends: list[tuple[Channel, int]]
    terminal: bool = False
    sequence: int | None = None


@dataclass
class StreamGuard:
    """`send` with during_call guardrails applied to a streamed (server-sent events) 200 answer."""

    op: str
    detectors: list[Detector]
    send: Send
    record: Callable[[list[Decision]], None]
    """Counts and logs the decisions (once, at the end or at a block)."""
    anthropic_event: Callable[[GuardrailBlocked], bytes] | None = None
    """The Messages dialect's `event: error` (built where the Anthropic surface lives)."""
    before_terminal: Callable[[], Awaitable[None]] | None = None
    """Called before the event that completes a Responses stream goes out (the store keeps the
    response then, so a blocked answer is never kept)."""
    active: list[Detector] = field(init=False)
    width: int = field(init=False)
    outcomes: dict[str, str] = field(init=False)
    details: dict[str, str] = field(default_factory=dict)
    channels: dict[Channel, _Text] = field(default_factory=dict)
    held: deque[_Held] = field(default_factory=deque)
    buffer: bytes = b""
    total: int = 0
    sequence: int = -1
    streaming: bool = False
    ended: bool = False

    def __post_init__(self) -> None:
        self.active = [d for d in self.detectors if d.rule.kind is not GuardKind.MAX_PROMPT]
        self.width = max((d.width for d in self.active), default=0)
        self.outcomes = {d.rule.name: "passed" for d in self.detectors}

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if self.ended:
            return  # blocked: whatever the relay still sends (its own error event) is dropped
        if message["type"] == "http.response.start":
            types = [v for k, v in message.get("headers", ()) if k.lower() == b"content-type"]
            self.streaming = message["status"] == 200 and bool(types) and types[0].startswith(b"text/event-stream")
            await self.send(message)
            return
        if not self.streaming or message["type"] != "http.response.body":
            await self.send(message)
            return
        last = not message.get("more_body", False)
        seen = max(0, len(self.buffer) - 3)  # an event boundary may straddle the previous read
        buffer = self.buffer + message.get("body", b"")
        events: list[bytes] = []
        pos = 0
        while (m := _BOUNDARY.search(buffer, max(pos, seen))) is not None:  # linear: each byte searched once
            events.append(buffer[pos:m.end()])
            pos = m.end()
        self.buffer = buffer[pos:]
        if last and self.buffer:
            events.append(self.buffer)
            self.buffer = b""
        try:
            for event in events:
                self._feed(event)
            self._scan_new()
            if last:
                for channel in list(self.channels):
                    self._end(channel)
        except GuardrailBlocked as blocked:
            await self._block(blocked)
            raise
        await self._release(last)

    def _feed(self, event: bytes) -> None:
        obj = _payload(event)
        added, ended, sequence = _texts(self.op, obj)
        terminal = self.op == "responses" and isinstance(obj, dict) and obj.get("type") in _TERMINAL
        held = _Held(event, [], terminal=terminal, sequence=sequence)
        self.held.append(held)
        for channel, text in added:
            ch = self.channels.setdefault(channel, _Text())
            ch.text += text
            ch.new += len(text)
            self.total += len(text)
            held.ends.append((channel, ch.end))
            self._limit()
        for channel in ended:
            self._end(channel)

    def _scan_new(self) -> None:
        """Each channel's new text of this read, scanned once (not once per event)."""
        for ch in self.channels.values():
            if ch.new and not ch.done:
                self._scan(ch, final=False)

    def _end(self, channel: Channel) -> None:
        ch = self.channels.get(channel)
        if ch is not None and not ch.done:
            self._scan(ch, final=True)
            ch.done = True

    def _limit(self) -> None:
        for d in self.detectors:
            limit = d.rule.max_chars
            over = d.rule.kind is GuardKind.MAX_PROMPT and limit is not None and self.total > limit
            if over and self._found(d, "max_chars"):
                raise GuardrailBlocked(d.rule.name, "during_call")

    def _found(self, d: Detector, detail: str) -> bool:
        """Note a finding; True when it blocks (a `log` one is logged once, then no longer checked)."""
        name = d.rule.name
        if self.outcomes[name] != "passed":
            return False
        self.details[name] = detail
        if d.rule.action is GuardAction.LOG:
            self.outcomes[name] = "logged"
            return False
        self.outcomes[name] = "blocked"
        return True

    def _scan(self, ch: _Text, final: bool) -> None:
        keep = ch.end if final else ch.end - self.width
        fresh, ch.new = ch.new, 0
        blocking: Detector | None = None
        for d in list(self.active):
            detail, at = d.stream_violation(ch.text, final, max(0, len(ch.text) - fresh - d.width))
            if detail is not None and blocking is None and self._found(d, detail):
                blocking = d
            elif detail is not None and d.rule.action is GuardAction.LOG:
                self.active.remove(d)
                continue
            if at is not None:
                keep = min(keep, ch.start + at)
        keep = max(keep, ch.start)
        if blocking is not None:  # what precedes every finding may still go out, then the error
            ch.keep_from = max(ch.keep_from, keep)
            raise GuardrailBlocked(blocking.rule.name, "during_call")
        ch.keep_from = keep
        ch.text = ch.text[keep - ch.start:]
        ch.start = keep

    async def _ready(self, last: bool, blocked: bool = False) -> list[bytes]:
        """The held events whose text is checked for good (all of them at the end), in order."""
        out: list[bytes] = []
        while self.held:
            head = self.held[0]
            if not last and any(end > self.channels[c].keep_from for c, end in head.ends):
                break
            if head.terminal:
                if blocked:
                    break
                if self.before_terminal is not None:
                    hook, self.before_terminal = self.before_terminal, None
                    await hook()
            self.held.popleft()
            if head.sequence is not None:
                self.sequence = head.sequence
            out.append(head.raw)
        return out

    async def _release(self, last: bool) -> None:
        out = await self._ready(last)
        if last:
            self.record(self.decisions())
        if out or last:
            await self.send({"type": "http.response.body", "body": b"".join(out), "more_body": not last})

    async def _block(self, blocked: GuardrailBlocked) -> None:
        self.ended = True
        checked = await self._ready(False, blocked=True)  # events of the same read before the finding
        self.held.clear()
        self.record(self.decisions())
        if self.op == "messages" and self.anthropic_event is not None:
            body = self.anthropic_event(blocked)
        else:
            body = error_event(self.op, blocked, self.sequence + 1)
        await self.send({"type": "http.response.body", "body": b"".join([*checked, body]), "more_body": False})

    def decisions(self) -> list[Decision]:
        out: list[Decision] = []
        for d in self.detectors:
            name = d.rule.name
            outcome = self.outcomes[name]
            out.append((name, "during_call", outcome, {"detail": self.details[name]} if name in self.details else {}))
            if outcome == "blocked":
                break
        return out
