"""Logging: one JSON (or text) line per event, written by a background task in a worker thread so
the event loop never blocks on stderr. Lines never carry secrets (every line goes through the plan's
:class:`runtime.observe.scrub.Scrubber`); bodies only when the spec asks."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

import orjson
import trio

from sidegate.runtime.observe.context import CURRENT
from sidegate.runtime.observe.scrub import Scrubber
from sidegate.runtime.plan import LogFormat, LogLevel, Logs

__all__ = ["Logger"]

_RANK = {LogLevel.DEBUG: 10, LogLevel.INFO: 20, LogLevel.WARNING: 30, LogLevel.ERROR: 40}


class Logger:
    """Queues log lines; `run` writes them. Lines queued before `run` starts are kept."""

    def __init__(self, config: Logs, stream: TextIO | None = None) -> None:
        self.config = config
        self._stream = stream or sys.stderr
        self._send, self._recv = trio.open_memory_channel[str](10_000)
        self.dropped = 0
        self.scrubber = Scrubber()
        """Masks secrets in every line (the serving plan's, set by the app on start and reload)."""
        self.export: Callable[[LogLevel, str, str], None] | None = None
        """Also hands every line to OTLP (`observability.tracing.logs`; set by the server)."""

    def log(self, level: LogLevel, event: str, fields: Mapping[str, object]) -> None:
        """Queue one line (never blocks; when the queue is full the line is counted as dropped)."""
        if _RANK[level] < _RANK[self.config.level]:
            return
        record = {"ts": round(time.time(), 3), "level": level.value, "event": event, **fields}
        traced = CURRENT.get()
        if traced is not None and traced.trace_id:
            record["trace_id"] = traced.trace_id
            fields = {**fields, "trace_id": traced.trace_id}
        if self.config.format is LogFormat.JSON:
            line = orjson.dumps(record, default=str).decode()
        else:
            rest = " ".join(f"{k}={v}" for k, v in fields.items())
            line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {level.value.upper()} {event} {rest}"
        line = self.scrubber.text(line)
        if self.export is not None:
            self.export(level, event, line)
        try:
            self._send.send_nowait(line)
        except trio.WouldBlock:
            self.dropped += 1

    def info(self, event: str, **fields: object) -> None:
        """Queue an info line."""
        self.log(LogLevel.INFO, event, fields)

    def warning(self, event: str, **fields: object) -> None:
        """Queue a warning line."""
        self.log(LogLevel.WARNING, event, fields)

    def error(self, event: str, **fields: object) -> None:
        """Queue an error line."""
        self.log(LogLevel.ERROR, event, fields)

    def _write(self, lines: list[str]) -> None:
        self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()

    async def run(self) -> None:
        """Write queued lines in batches until cancelled, then flush what is left."""
        try:
            while True:
                lines = [await self._recv.receive()]
                while len(lines) < 512:
                    try:
                        lines.append(self._recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                await trio.to_thread.run_sync(self._write, lines)
        finally:
            self.flush_nowait()

    def flush_nowait(self) -> None:
        """Write whatever is queued, synchronously (only at shutdown, after serving has stopped)."""
        lines = []
        while True:
            try:
                lines.append(self._recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        if lines:
            self._write(lines)
