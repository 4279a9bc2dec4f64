"""Decoding an upstream's chunked body (sans-IO), for the streaming hot path.

h11 parses each chunk as an event through its state machine (~10 us a chunk); a streaming upstream
writes every SSE event as its own chunk, so an answer of 20 events cost ~0.25 ms of parsing alone.
The pool lets h11 parse the response head and hands the body to this decoder: linear in the bytes
(each byte is looked at once; only a partial size line is kept between reads, bounded), as strict
as h11 about the framing that matters (hex sizes, the CRLF after each chunk's data, a bounded
trailer section), and it tells whether bytes came after the answer's end (then the connection is
not reused).
"""

from __future__ import annotations

import re

__all__ = ["ChunkedDecoder", "MalformedChunks"]

_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MAX_LINE = 16384
"""Bytes of one size line or trailer line, at most."""
_MAX_TRAILERS = 65536
"""Bytes of the whole trailer section, at most."""
_SIZE_LINE, _DATA, _CRLF, _TRAILER, _DONE = range(5)


class MalformedChunks(ValueError):
    """The body is not valid chunked transfer coding."""


class ChunkedDecoder:
    """Feed it the body's bytes as they arrive; it returns the data they complete."""

    __slots__ = ("_buf", "_left", "_state", "_trailers", "extra")

    def __init__(self) -> None:
        self._buf = b""
        self._left = 0
        self._state = _SIZE_LINE
        self._trailers = 0
        self.extra = b""
        """Bytes received after the terminating chunk and trailers (there should be none)."""

    @property
    def done(self) -> bool:
        """Whether the last chunk and the trailers have been read."""
        return self._state == _DONE

    def feed(self, data: bytes) -> bytes:
        """The data `data` completes (possibly b""); raises MalformedChunks on bad framing."""
        if self._state == _DONE:
            self.extra += data
            return b""
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos, n = 0, len(buf)
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._left, n - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _CRLF
            elif state == _CRLF:
                if n - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise MalformedChunks("a chunk's data is not followed by CRLF")
                pos += 2
                self._state = _SIZE_LINE
            elif state == _DONE:
                self.extra += buf[pos:]
                pos = n
            else:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if n - pos > _MAX_LINE:
                        raise MalformedChunks("a chunk size or trailer line is too long")
                    break
                line = buf[pos:end]
                pos = end + 2
                if state == _SIZE_LINE:
                    self._size(line)
                else:
                    self._trailer(line)
        self._buf = buf[pos:]
        return out[0] if len(out) == 1 else b"".join(out)

    def _size(self, line: bytes) -> None:
        text = line.split(b";", 1)[0].strip(b" \t")
        if _SIZE.fullmatch(text) is None:
            raise MalformedChunks(f"bad chunk size line {line[:40]!r}")
        size = int(text, 16)
        if size:
            self._left, self._state = size, _DATA
        else:
            self._state = _TRAILER

    def _trailer(self, line: bytes) -> None:
        if not line:
            self._state = _DONE
            return
        self._trailers += len(line) + 2
        if self._trailers > _MAX_TRAILERS:
            raise MalformedChunks("the chunked body's trailers are too long")
