"""Decoding the app's answers: JSON bodies into `Result`s, server-sent events into chunks, error
answers and error events into the typed exceptions."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from sidegate.errors import SidegateError, error_from

__all__ = ["EventDecoder", "Result", "decode", "failure"]


class Result(dict[str, Any]):
    """An answer or chunk exactly as the HTTP surface sends it (a dict of its JSON), with attribute
    access too: `result.choices[0].message.content` is `result["choices"][0]["message"]["content"]`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return _wrap(self[name])
        except KeyError:
            raise AttributeError(name) from None


def _wrap(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, Result):
        return Result(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    for name, value in headers:
        if name == b"retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def failure(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> SidegateError:
    """The exception for an error answer (status >= 400)."""
    try:
        data: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    return error_from(status, data, _retry_after(headers))


def decode(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Result:
    """A whole answer: its JSON, or the exception it stands for."""
    if status >= 400 or status == 0:
        raise failure(status or 500, headers, body)
    data = orjson.loads(body)
    if not isinstance(data, dict):
        raise error_from(502, None)
    return Result(data)


def _stream_error(data: Mapping[str, Any]) -> SidegateError | None:
    """The error a stream ended with: OpenAI's `{"error": {...}}`, Anthropic's `{"type": "error",
    "error": {...}}`, or the Responses API's `{"type": "error", "code", "message"}`."""
    kind = data.get("type")
    if isinstance(data.get("error"), Mapping) and kind in (None, "error"):
        return error_from(502, data)
    if kind == "error":
        return error_from(502, {"error": data})
    return None


class EventDecoder:
    """Server-sent events, fed as they arrive, out as parsed chunks; `done` after `data: [DONE]`."""

    def __init__(self) -> None:
        self._buffer = b""
        self.done = False

    def feed(self, piece: bytes) -> Iterator[Result]:
        """The chunks `piece` completes; raises the typed error on an error event."""
        self._buffer += piece.replace(b"\r\n", b"\n")
        while not self.done and b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
            if not lines:
                continue  # a comment or a bare `event:` line
            data = b"\n".join(lines)
            if data == b"[DONE]":
                self.done = True
                return
            parsed = orjson.loads(data)
            if not isinstance(parsed, dict):
                continue
            err = _stream_error(parsed)
            if err is not None:
                raise err
            yield Result(parsed)
