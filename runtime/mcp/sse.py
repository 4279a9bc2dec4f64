"""A minimal Server-Sent Events reader: yields each event's data (the `data:` lines joined)."""

from __future__ import annotations

from collections.abc import AsyncIterator

__all__ = ["sse_events"]

_LIMIT = 16 * 1024 * 1024


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) for every complete event of a `text/event-stream` body."""
    buffer = b""
    event, data = "message", list[str]()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) > _LIMIT:
            raise ValueError("SSE event too large")
        while True:
            cut = buffer.find(b"\n")
            if cut < 0:
                break
            line = buffer[:cut].rstrip(b"\r").decode("utf-8", "replace")
            buffer = buffer[cut + 1 :]
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data = "message", []
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
    if data:
        yield event, "\n".join(data)
