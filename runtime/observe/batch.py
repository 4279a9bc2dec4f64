"""The span queue: finished spans wait in a bounded deque for the export thread, which hands them to
the exporter in batches.

In place of the SDK's `BatchSpanProcessor` for sidegate's own span records: its `on_end` takes a
context token and checks the process id (a system call) for every span, and needs the SDK's
`ReadableSpan`; here the event loop only appends the record (and drops, counting, the oldest when
the queue is full), and the records are read as spans only in the export thread, by the encoder.
It is registered with the SDK's `TracerProvider` as a span processor, so the provider's shutdown
drains it. Batches go every `delay` seconds, or as soon as one is full.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["SpanQueue"]


class SpanQueue(SpanProcessor):
    """A bounded queue of finished spans and the thread that exports them."""

    def __init__(self, exporter: SpanExporter, max_queue: int, max_batch: int, delay: float,
                 full: Any, closed: Any) -> None:
        self._exporter, self._max_queue, self._max_batch, self._delay = exporter, max_queue, max_batch, delay
        self._full, self._closed_drops = full, closed
        """Counters (`inc(n)`): spans dropped from a full queue, and offered after shutdown."""
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="sidegate-otlp-spans", daemon=True)
        self._thread.start()

    def put(self, span: Any) -> None:
        """Queue one finished span (from the event loop: an append, no lock, no system call)."""
        if self._closed:
            self._closed_drops.inc()
            return
        queue = self._queue
        if len(queue) >= self._max_queue:
            try:
                queue.popleft()  # the oldest goes (the export thread may have taken it meanwhile)
                self._full.inc()
            except IndexError:
                pass
        queue.append(span)
        if len(queue) >= self._max_batch and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay)
            self._wake.clear()
            closing = self._closed
            self._drain()
            if closing:
                return

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            batch: list[Any] = []
            try:
                while len(batch) < self._max_batch:
                    batch.append(queue.popleft())
            except IndexError:
                pass
            if batch:
                self._exporter.export(batch)

    # --- the SDK's span processor interface (the provider calls these)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        self.put(span)

    def shutdown(self) -> None:
        """Export what is queued and stop (blocking: the caller bounds it by closing the exporter)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join()
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._wake.set()
        return True
