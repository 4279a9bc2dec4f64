"""Incoming `multipart/form-data` bodies (uploads: audio, images, files), parsed by python-multipart.

The body is read whole under its own bound (the caller's `server.max_upload`-style limit, checked
against `content-length` first and then as bytes arrive), then parsed in one pass: linear in its
size, a bounded number of parts and of header bytes per part. A body over 1 MiB is parsed in a
worker thread so the event loop keeps serving. Anything that is not well-formed multipart is a 400;
a body that is not multipart at all is a 415.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from sidegate.runtime.asgi import Receive, Scope, header, read_body
from sidegate.runtime.errors import BadRequest

__all__ = ["Form", "Part", "parse_form", "read_form"]

MAX_PARTS = 256
"""More parts than any upload API takes (OpenAI's largest, image edits, takes 16 images and a mask)."""
_THREAD_AT = 1 << 20


@dataclass(frozen=True, slots=True)
class Part:
    """One part of the form: a field (no filename) or a file."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str = ""

    def text(self) -> str:
        """The part as text (a field's value); a part that is not UTF-8 is a 400."""
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"form field '{self.name}' is not UTF-8 text", param=self.name) from None


@dataclass(slots=True)
class Form:
    """The parts of a form, in the order they came."""

    parts: list[Part] = field(default_factory=list)

    def get(self, name: str) -> Part | None:
        """The first part named `name`."""
        return next((p for p in self.parts if p.name == name), None)

    def all(self, name: str) -> list[Part]:
        """Every part named `name` (`image[]` style repeats)."""
        return [p for p in self.parts if p.name == name]

    def value(self, name: str) -> str | None:
        """A text field's value, or None when absent."""
        part = self.get(name)
        return None if part is None else part.text()


async def read_form(scope: Scope, receive: Receive, limit: int, body_timeout: float) -> Form:
    """Read and parse the request's multipart body (415 when it is not multipart, 413 over `limit`)."""
    boundary = _boundary(header(scope, b"content-type"))
    body = await read_body(scope, receive, limit, body_timeout)
    if len(body) >= _THREAD_AT:
        return await trio.to_thread.run_sync(_parse, boundary, body)
    return _parse(boundary, body)


def parse_form(content_type: bytes | None, body: bytes) -> Form:
    """Parse a whole multipart body given its `content-type` header."""
    return _parse(_boundary(content_type), body)


def _boundary(content_type: bytes | None) -> bytes:
    kind, options = parse_options_header(content_type or b"")
    if kind != b"multipart/form-data":
        shown = (content_type or b"").decode("latin-1")[:100] or "none"
        raise BadRequest(f"this route takes multipart/form-data, not {shown!r}", status=415,
                         code="unsupported_media_type")
    boundary = options.get(b"boundary", b"")
    if not boundary or len(boundary) > 70:
        raise BadRequest("the multipart content-type has no valid boundary (1 to 70 characters)")
    return boundary


class _Collector:
    """python-multipart's callbacks, gathering parts into a `Form`."""

    def __init__(self) -> None:
        self.form = Form()
        self.data: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}
        self.field = b""
        self.value = b""

    def part_begin(self) -> None:
        if len(self.form.parts) >= MAX_PARTS:
            raise BadRequest(f"the form has more than {MAX_PARTS} parts")
        self.data, self.headers = [], {}

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.field.strip().lower()] = self.value.strip()
        self.field = self.value = b""

    def part_data(self, data: bytes, start: int, end: int) -> None:
        self.data.append(data[start:end])

    def part_end(self) -> None:
        disposition, options = parse_options_header(self.headers.get(b"content-disposition"))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise BadRequest("a multipart part has no content-disposition: form-data with a name")
        filename = options.get(b"filename")
        self.form.parts.append(Part(
            name=name.decode("utf-8", "replace"),
            data=b"".join(self.data),
            filename=None if filename is None else filename.decode("utf-8", "replace"),
            content_type=self.headers.get(b"content-type", b"").decode("latin-1"),
        ))


def _parse(boundary: bytes, body: bytes) -> Form:
    sink = _Collector()
    parser = MultipartParser(boundary, {
        "on_part_begin": sink.part_begin, "on_part_data": sink.part_data, "on_part_end": sink.part_end,
        "on_header_field": sink.header_field, "on_header_value": sink.header_value,
        "on_header_end": sink.header_end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest(f"the multipart body is malformed: {exc}") from None
    if parser.state.name != "END":
        raise BadRequest("the multipart body ends before its closing boundary")
    return sink.form
