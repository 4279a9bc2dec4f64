"""A cache entry's bytes, and the sink that relays a live answer while keeping a copy of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sidegate.runtime.upstream.openai_wire import Usage

__all__ = ["Capture", "Entry", "decode", "encode"]


@dataclass(frozen=True, slots=True)
class Entry:
    """The whole answer in the client's dialect, with what it cost when it was paid for."""

    body: bytes
    usage: Usage | None
    cost: float


def encode(entry: Entry) -> bytes:
    """One JSON line of facts, then the answer's bytes as they are."""
    u = entry.usage
    meta = {"v": 1, "cost": entry.cost, "usage": None if u is None else [u.prompt, u.completion, u.cached, u.reasoning]}
    return orjson.dumps(meta) + b"\n" + entry.body


def decode(raw: bytes) -> Entry | None:
    """The entry in `raw`, or None when it is not one (written by another version, damaged)."""
    head, sep, body = raw.partition(b"\n")
    try:
        meta = orjson.loads(head)
        if not sep or not isinstance(meta, dict) or meta.get("v") != 1:
            return None
        u = meta.get("usage")
        usage = Usage(*(int(n) for n in u)) if isinstance(u, list) and len(u) == 4 else None
        return Entry(body, usage, float(meta.get("cost") or 0.0))
    except (ValueError, TypeError):
        return None


class Capture:
    """The answer's way to the client on a cached group: adds `x-sidegate-cache` to its headers and,
    while `limit` allows, keeps what is sent (an answer over it is relayed all the same, not kept)."""

    __slots__ = ("_send", "header", "limit", "parts", "size", "status", "too_large")

    def __init__(self, send: Any, header: bytes, limit: int | None) -> None:
        self._send = send
        self.header = header
        self.limit = limit
        self.parts: list[bytes] | None = [] if limit is not None else None
        self.size = 0
        self.status = 0
        self.too_large = False

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            message = {**message, "headers": [*message.get("headers", ()), (b"x-sidegate-cache", self.header)]}
        elif kind == "http.response.body" and self.parts is not None:
            body = message.get("body", b"")
            self.size += len(body)
            if self.limit is not None and self.size > self.limit:
                self.parts, self.too_large = None, True
            elif body:
                self.parts.append(body)
        await self._send(message)

    def body(self) -> bytes | None:
        """What was sent, when it was all kept."""
        return None if self.parts is None else b"".join(self.parts)
