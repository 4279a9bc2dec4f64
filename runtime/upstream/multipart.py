"""Outgoing `multipart/form-data` bodies: an upload relayed to a provider (audio, images, files).

Names and filenames are escaped as RFC 7578 section 4.2 and browsers do (`"`, CR and LF
percent-encoded), so a client's filename cannot inject a header or a part of its own; the boundary
is random and checked absent from the data.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Upload", "encode"]


@dataclass(frozen=True, slots=True)
class Upload:
    """A file part to send."""

    name: str
    filename: str
    data: bytes
    content_type: str = "application/octet-stream"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def encode(fields: Iterable[tuple[str, str]], files: Iterable[Upload]) -> tuple[bytes, bytes]:
    """The body and its `content-type` header value."""
    fields, files = list(fields), list(files)
    while True:
        boundary = "sidegate-" + secrets.token_hex(16)
        marker = boundary.encode()
        if not any(marker in f.data for f in files) and not any(boundary in v for _, v in fields):
            break
    out: list[bytes] = []
    for name, value in fields:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'.encode())
        out.append(value.encode())
        out.append(b"\r\n")
    for f in files:
        kind = f.content_type.replace("\r", "").replace("\n", "") or "application/octet-stream"
        out.append((f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(f.name)}"; '
                    f'filename="{_quote(f.filename)}"\r\nContent-Type: {kind}\r\n\r\n').encode())
        out.append(f.data)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}".encode()
