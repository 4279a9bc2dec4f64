"""HTTP/1.1 on the upstream side, sans-IO: a request head written as bytes, and one answer parsed
with httptools (llhttp, in C) for the pool in `h11pool`.

h11 parsed each answer through its event machinery (a Python state machine, ~12% of the gateway's
CPU on a non-stream chat). llhttp parses the head and frames the body (content-length, chunked with
its trailers, or to the connection's end) in C; the callbacks here keep only what the pool needs.
As strict as h11 was where it matters: header names and values are validated before anything is
sent; the answer's head, a chunk's size line and the trailers are bounded; a transfer coding other
than `chunked` is refused; and bytes after the answer's end are noticed, never taken for the next
answer (the connection is then not reused). llhttp is stricter than h11 in a few places (bare LF
line ends, obs-fold continuation lines, a repeated Content-Length, Transfer-Encoding beside
Content-Length): such an answer is refused as malformed, which RFC 9112 allows a gateway.
"""

from __future__ import annotations

import re

import h11
import httptools

__all__ = ["Answer", "MalformedAnswer", "request_head"]

MAX_HEAD = 16384
"""Bytes of answer head (with any 1xx heads before it) not yet complete, at most (h11's default)."""
MAX_LINE = 16384
"""Bytes of framing (a chunk's size line and extensions) a chunk may add, at most."""
MAX_TRAILERS = 65536
"""Bytes of a chunked body's trailer section, at most."""

_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_HEADERS = re.compile(rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+: (?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?\r\n)*\r\n")
"""A valid header section as :func:`request_head` writes it, by h11's rules: token names; values of
bytes other than NUL and whitespace, with inner spaces or tabs (so no CR or LF, no edge whitespace)."""
_TARGET = re.compile(r"[^\x00-\x20\x7f]+")


class MalformedAnswer(ValueError):
    """The upstream's answer is not valid HTTP/1.1 (or is over a bound)."""


def check_target(target: str) -> None:
    """Refuse a request target with whitespace or control characters (h11's error type)."""
    if _TARGET.fullmatch(target) is None:
        raise h11.LocalProtocolError(f"Illegal target characters in {target!r}")


def request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """The request's head (`target` checked by :func:`check_target`). A header h11 would refuse,
    among them any name or value that could split the head (CR, LF, NUL), raises what h11 raised:
    h11.LocalProtocolError, or UnicodeEncodeError for a non-ASCII one."""
    try:
        block = "".join([f"{name}: {value}\r\n" for name, value in headers]).encode("ascii") + b"\r\n"
    except UnicodeEncodeError:
        block = b""
    if block.count(b"\n") != len(headers) + 1 or _HEADERS.fullmatch(block) is None:  # an LF in one: more lines
        _refuse_header(headers)
    return f"{method} {target} HTTP/1.1\r\n".encode("ascii") + block


def _refuse_header(headers: list[tuple[str, str]]) -> None:
    """Raise h11's error for the first header it would refuse, checked in h11's order."""
    for name, value in headers:
        raw_name, raw_value = name.encode("ascii"), value.encode("ascii")
        if _NAME.fullmatch(raw_name) is None:
            raise h11.LocalProtocolError(f"Illegal header name {raw_name!r}")
        if _VALUE.fullmatch(raw_value) is None:
            raise h11.LocalProtocolError(f"Illegal header value {raw_value!r}")
    raise AssertionError("a header section refused with every header valid")


class _Stop(Exception):
    """Raised from a callback to stop the parser: what follows the answer's end is not ours."""


class Answer:
    """One answer being parsed: `feed` it what each read brings; after the head, `status`,
    `headers` (lower-cased names), `chunked`, `keep_alive`; `take()` the body bytes parsed so far;
    `done` once the answer ended; `extra` when bytes came after its end; `fed`, the bytes fed."""

    __slots__ = ("_body", "_chunks", "_head_fed", "_head_only", "_parser", "_raw_te", "_refusal", "_trailers",
                 "body_bytes",
                 "chunked", "done", "eof_body", "extra", "fed", "head", "headers", "keep_alive", "status")

    def __init__(self, head_only: bool = False) -> None:
        self._head_only = head_only
        """A HEAD request's answer: it ends with its head, whatever its framing headers say."""
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._parser.set_dangerous_leniencies(lenient_spaces_after_chunk_size=True)  # `5 ;ext`: BWS, RFC 9112 7.1.1
        self._body: list[bytes] = []
        self.fed = self._head_fed = self._chunks = self._trailers = self.body_bytes = 0
        self._refusal: str | None = None
        self._raw_te = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head = self.done = self.extra = False
        self.chunked = self.keep_alive = self.eof_body = False

    def feed(self, data: bytes | bytearray) -> None:
        """Parse `data`; raises MalformedAnswer on bad framing or a passed bound.

        Once the answer is done, the parser is let go: it holds this answer's bound callbacks, a
        reference cycle that only a full collection would free (1,000 streams left 1,000 such cycles,
        ~9k objects, for the next one to walk). A byte fed after the end is `extra`."""
        self.fed += len(data)
        parser = self._parser
        if parser is None:
            self.extra = self.extra or bool(data)
            return
        try:
            parser.feed_data(data)
            if self.done:
                self._parser = None
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.done:  # after the answer's end: not ours, and the connection is not reused
                self.extra, self._parser = True, None
                return
            raise MalformedAnswer(self._refusal or str(exc) or type(exc).__name__) from None
        if not self.head:
            if self.fed > MAX_HEAD:
                raise MalformedAnswer("the answer's head is too long")
        elif self.chunked and not self.done:
            framing = self.fed - self._head_fed - self.body_bytes
            if framing > self._chunks * MAX_LINE + MAX_TRAILERS:
                raise MalformedAnswer("a chunk size or trailer line is too long")

    def release(self) -> None:
        """Let the parser go (the answer is abandoned, or read): see `feed`."""
        self._parser = None

    def end_of_data(self) -> bool:
        """The connection closed: whether that ends the answer (a body read to the connection's end)."""
        if self.head and self.eof_body and not self.done:
            self.done = True
        return self.done

    def take(self) -> bytes:
        """The body bytes parsed since the last call, as one piece (b"" when none)."""
        body = self._body
        if not body:
            return b""
        self._body = []
        return body[0] if len(body) == 1 else b"".join(body)

    def _refuse(self, reason: str) -> None:
        self._refusal = reason
        raise _Stop

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.done:
            self.extra = True
            raise _Stop
        self.headers = []  # after a 1xx answer, the next head's

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head:
            stripped = value.rstrip(b" \t")  # llhttp strips only the leading OWS
            if len(stripped) != len(value) and name.lower() == b"transfer-encoding":
                self._raw_te = True  # `chunked ` is not chunked to llhttp
            self.headers.append((name.lower(), stripped))
            return
        self._trailers += len(name) + len(value) + 4
        if self._trailers > MAX_TRAILERS:
            self._refuse("the chunked body's trailers are too long")

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # (a callback of its own)
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                self._refuse("the upstream switched protocols (101) unasked")
            return  # an informational answer: llhttp goes on to the next head
        self.status, self.head, self._head_fed = status, True, self.fed
        close = length = False
        codings: list[bytes] = []
        for name, value in self.headers:
            if name == b"transfer-encoding":
                codings.append(value.lower())
            elif name == b"content-length":
                length = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        self.keep_alive = not close and parser.get_http_version() == "1.1"
        if self._head_only:
            self.done = True  # a HEAD request's answer has no body, whatever its headers say
        elif status in (204, 304):
            pass  # no body either: llhttp ends the answer with its head
        elif codings:
            # Exactly `chunked`, in one header (h11 also took `chunked,` and the like, which llhttp
            # frames differently): never a body framed one way here and another in the parser.
            if codings != [b"chunked"] or self._raw_te:
                self._refuse("only the chunked transfer coding is supported")
            self.chunked = True
        elif not length:
            self.eof_body = True  # read to the connection's end, which then is not reused
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if self.done:
            self.extra = True
            raise _Stop
        if not self.head:
            self._refuse("an informational answer has a body")
        if self.chunked and not self._chunks:
            self._refuse("the body is not framed as its headers say")
        self._body.append(body)
        self.body_bytes += len(body)

    def on_chunk_header(self) -> None:
        if self.done:
            self.extra = True
            raise _Stop
        self._chunks += 1

    def on_message_complete(self) -> None:
        if self.head:
            self.done = True
