"""A minimal Server-Sent Events reader: yields each event's data (the `data:` lines joined)."""

from __future__ import annotations

from collections.abc import AsyncIterator

__all__ = ["Lines", "sse_events"]

_LIMIT = 16 * 1024 * 1024


class Lines:
    """Complete lines out of a byte stream, each byte copied a bounded number of times (linear in
    the stream's length however it is split); a line longer than `limit` is an error."""

    def __init__(self, limit: int = _LIMIT) -> None:
        self.limit = limit
        self._rest = bytearray()

    def feed(self, chunk: bytes | bytearray) -> list[bytes]:
        seen = len(self._rest)
        self._rest += chunk
        end = self._rest.rfind(b"\n", seen)
        if end < 0:
            if len(self._rest) > self.limit:
                raise ValueError("line too long")
            return []
        complete = bytes(self._rest[:end])
        del self._rest[:end + 1]
        if len(self._rest) > self.limit:
            raise ValueError("line too long")
        lines = complete.split(b"\n")
        if max(map(len, lines)) > self.limit:
            raise ValueError("line too long")
        return lines


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) for every complete event of a `text/event-stream` body."""
    lines = Lines()
    event, data, size = "message", list[str](), 0
    async for chunk in chunks:
        try:
            complete = lines.feed(chunk)
        except ValueError:
            raise ValueError("SSE event too large") from None
        for raw in complete:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data, size = "message", [], 0
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    size += len(value)
                    if size > _LIMIT:
                        raise ValueError("SSE event too large")
                    data.append(value)
                elif name == "event":
                    event = value
    if data:
        yield event, "\n".join(data)
