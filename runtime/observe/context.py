"""The request's trace, where code beside the routing loop can find it (no OpenTelemetry import:
this module is on the hot path with tracing off, and then costs a context-variable read).

The HTTP boundary puts the request's trace handle in :data:`CURRENT` (a context variable: Trio tasks
started under the request inherit it). Log lines take its trace id; MCP tool calls and A2A relays
open their span under it with :func:`traced` and send :func:`outbound_headers` (the W3C
`traceparent`/`tracestate` of the innermost span) to their upstream. With tracing off everything
here is a no-op.
"""

from __future__ import annotations

from contextvars import ContextVar
from types import TracebackType
from typing import Protocol

__all__ = ["CURRENT", "Scope", "SpanHandle", "outbound_headers", "trace_id", "traced"]


class SpanHandle(Protocol):
    """A span's handle as code outside observe sees it."""

    def note(self, **attributes: str | int | float | bool) -> None:
        """Set attributes on the span (sidegate's names, or the semantic conventions')."""
        ...

    def fail(self, error_type: str) -> None:
        """Mark the span as failed (`error.type`)."""
        ...


class Scope(Protocol):
    """What :data:`CURRENT` holds: the trace id for logs, the headers to propagate, and children."""

    trace_id: str

    def headers(self) -> list[tuple[str, str]]:
        """`traceparent` (and `tracestate`) naming this scope's span as the parent."""
        ...

    def child(self, kind: str, name: str, attributes: dict[str, str | int | float | bool]) -> _Span:
        """A child span (`kind`: `tool` for an MCP tool call, `relay` for an A2A relay)."""
        ...


class _Span(SpanHandle, Protocol):
    def __enter__(self) -> SpanHandle: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


CURRENT: ContextVar[Scope | None] = ContextVar("sidegate_trace", default=None)


def trace_id() -> str | None:
    """The current request's trace id (hex), if it is traced."""
    scope = CURRENT.get()
    return None if scope is None else scope.trace_id


def outbound_headers() -> list[tuple[str, str]]:
    """W3C trace-context headers for an upstream call made now (none with tracing off)."""
    scope = CURRENT.get()
    return [] if scope is None else scope.headers()


class _Null:
    """The span of untraced code: every method does nothing."""

    __slots__ = ()

    def __enter__(self) -> _Null:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def note(self, **attributes: str | int | float | bool) -> None:
        return None

    def fail(self, error_type: str) -> None:
        return None


_NULL = _Null()


def traced(kind: str, name: str, **attributes: str | int | float | bool) -> _Span:
    """A span for a call made now under the current request (a no-op without one): use as
    `with traced("tool", ...) as span:`; while it is open, :func:`outbound_headers` names it."""
    scope = CURRENT.get()
    if scope is None:
        return _NULL
    return scope.child(kind, name, attributes)
